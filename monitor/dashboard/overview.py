"""What the operators' dashboard shows of Kafka: offsets, lag, dead letters, watchers.

Kafka state comes from :data:`kafka_state`, one reader per process that many
polling dashboards share: it reads at most once per ``max_age`` seconds, and
requests that arrive during a read wait for that read. The consumer groups
it reports are named in :mod:`monitor.workers.groups` (names only: nothing
here runs a worker). Event rates are in :mod:`monitor.dashboard.rates`.

A group's lag is never made up: where the broker reports a partition's end
below the group's committed offset (the embedded broker does, after some
batched writes), the lag is ``None`` with ``lag_unknown`` saying why, and so
is the group's total. The state also carries ``live_reader``: the live
reader of the web process that answers (see :mod:`monitor.live.reader_keeper`).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from django.conf import settings
from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone

from monitor.events.schema import format_time
from monitor.kafka import clients as kafka
from monitor.live import hub as fanout
from monitor.live import presence
from monitor.models import DeadLetter
from monitor.runtime.background_loop import BackgroundLoop
from monitor.workers import groups

logger = logging.getLogger(__name__)

# The consumer groups whose lag the dashboard shows; each read looks it up afresh.
CONSUMER_GROUPS: tuple[str, ...] = groups.ALL
# How long closing the clients may take: a frozen broker must not hold up a request.
CLIENTS_STOP_SECONDS = 2.0


def dashboard_state() -> dict[str, Any]:
    """Everything /dashboard/state.json answers; broker trouble is reported, never raised."""
    kafka_report = kafka_state.read()
    return {
        "generated_at": format_time(timezone.now()),
        "topics": kafka_report.topics,
        "groups": kafka_report.groups,
        "dead_letters": dead_letter_summary(),
        "watching": presence.watching_count(),
        "broker": kafka_report.broker,
        "live_reader": fanout.hub.reader_health(),
    }


def dead_letter_summary() -> dict[str, Any]:
    """How many dead letters there are, how many were not re-driven, and where to see them."""
    counts = DeadLetter.objects.aggregate(
        count=Count("id"), unredriven=Count("id", filter=Q(redriven_at__isnull=True))
    )
    return {**counts, "url": reverse("admin:monitor_deadletter_changelist")}


# --- Kafka ------------------------------------------------------------------


@dataclass(frozen=True)
class KafkaReport:
    topics: list[dict[str, Any]]
    groups: list[dict[str, Any]]
    broker: dict[str, Any]


@dataclass(frozen=True)
class _Target:
    """What a read looks at; clients made for one target are not used for another."""

    servers: str
    topic: str
    dlq: str
    groups: tuple[str, ...]


@dataclass
class _Clients:
    offsets: AIOKafkaConsumer
    by_group: dict[str, AIOKafkaConsumer] = field(default_factory=dict)

    def all(self) -> list[AIOKafkaConsumer]:
        return [self.offsets, *self.by_group.values()]


class KafkaStateReader:
    """Topic offsets and consumer-group lag, read once for every request of the process.

    A read made less than ``max_age`` seconds ago is answered again; requests
    arriving while a read is under way wait for it (a lock around the read).
    The Kafka clients live on one background event loop and are kept between
    reads; a failed read closes them, so the next one connects afresh. A
    read is bounded by ``timeout``, and its failure is answered for
    ``retry_after`` seconds, so a broker that is down costs one timeout per
    that period, not one per request.
    """

    def __init__(
        self, *, max_age: float = 1.5, timeout: float = 2.0, retry_after: float = 5.0
    ) -> None:
        self.max_age = max_age
        self.timeout = timeout
        self.retry_after = retry_after
        self._lock = threading.Lock()
        self._background = BackgroundLoop("kafka-state")
        self._closed_at_exit = False
        self._clients: _Clients | None = None
        self._target: _Target | None = None
        self._report: KafkaReport | None = None
        self._expires = 0.0

    def read(self) -> KafkaReport:
        target = _Target(
            servers=settings.KAFKA_BOOTSTRAP_SERVERS,
            topic=settings.KAFKA_EVENTS_TOPIC,
            dlq=settings.KAFKA_DLQ_TOPIC,
            groups=CONSUMER_GROUPS,
        )
        with self._lock:
            if (
                self._report is not None
                and target == self._target
                and time.monotonic() < self._expires
            ):
                return self._report
            if target != self._target:
                self._close_clients()
                self._target = target
            try:
                self._report = self._read_from_broker(target)
                self._expires = time.monotonic() + self.max_age
            except Exception as exc:  # noqa: BLE001 - any failure is the answer
                self._close_clients()
                self._report = KafkaReport([], [], {"ok": False, "error": self._describe(exc)})
                self._expires = time.monotonic() + self.retry_after
            return self._report

    def forget(self) -> None:
        """Drop the last answer, so that the next read asks the broker."""
        with self._lock:
            self._report = None

    def close(self) -> None:
        """Close the clients and stop the background loop."""
        with self._lock:
            self._close_clients(wait=True)
            self._target = self._report = None
        self._background.stop()

    def _describe(self, exc: Exception) -> str:
        if isinstance(exc, TimeoutError):
            return f"no answer from the broker within {self.timeout:g}s"
        text, name = str(exc), type(exc).__name__
        # aiokafka's errors already start with their class name.
        return text if text.startswith(name) else f"{name}: {text}".strip()

    def _read_from_broker(self, target: _Target) -> KafkaReport:
        """One read on the background loop, bounded by ``timeout``."""
        if not self._closed_at_exit:
            # Stopped before the interpreter ends, so that the clients close their
            # connections rather than vanish with the loop's daemon thread.
            atexit.register(self.close)
            self._closed_at_exit = True
        return self._background.call(self._fetch(target), self.timeout)

    def _close_clients(self, *, wait: bool = False) -> None:
        """Drop the clients; they stop on the background loop, waited for only if ``wait``
        (a frozen broker could hold a request up for the whole stop)."""
        clients, self._clients = self._clients, None
        if clients is None or not self._background.running:
            return
        stopping = self._background.submit(
            kafka.stop_quietly(*clients.all(), timeout=CLIENTS_STOP_SECONDS)
        )
        if wait:
            try:
                stopping.result(CLIENTS_STOP_SECONDS + 1)
            except Exception as exc:  # noqa: BLE001 - they are dropped either way
                logger.warning("closing the dashboard's Kafka clients failed: %s", exc)

    async def _connect(self, target: _Target) -> _Clients:
        clients = _Clients(offsets=kafka.make_consumer(group_id=None))
        self._clients = clients  # closed on failure, even half started
        await clients.offsets.start()
        for group in target.groups:
            # Never subscribes: it only asks for the group's committed offsets.
            consumer = kafka.make_consumer(group_id=group)
            clients.by_group[group] = consumer
            await consumer.start()
        return clients

    async def _fetch(self, target: _Target) -> KafkaReport:
        clients = self._clients or await self._connect(target)
        await kafka.refresh_metadata(clients.offsets)
        partitions = {
            topic: [
                TopicPartition(topic, p)
                for p in sorted(clients.offsets.partitions_for_topic(topic) or ())
            ]
            for topic in (target.topic, target.dlq)
        }
        every = [tp for tps in partitions.values() for tp in tps]
        starts = await clients.offsets.beginning_offsets(every) if every else {}
        ends = await clients.offsets.end_offsets(every) if every else {}
        committed = await asyncio.gather(
            *(_committed(clients.by_group[g], partitions[target.topic]) for g in target.groups)
        )
        topics = [
            {
                "name": topic,
                "partitions": [
                    {"partition": tp.partition, "start": starts[tp], "end": ends[tp]} for tp in tps
                ],
            }
            for topic, tps in partitions.items()
        ]
        groups = [
            _group_report(group, target.topic, partitions[target.topic], starts, ends, offsets)
            for group, offsets in zip(target.groups, committed, strict=True)
        ]
        return KafkaReport(topics, groups, {"ok": True})


async def _committed(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition]
) -> dict[TopicPartition, int | None]:
    return {tp: await consumer.committed(tp) for tp in tps}


def _group_report(
    group: str,
    topic: str,
    tps: list[TopicPartition],
    starts: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
    committed: dict[TopicPartition, int | None],
) -> dict[str, Any]:
    """The group's lag per partition: records between where it would resume and the end.

    A group that never committed on a partition (``committed`` None) resumes
    at its start, as the workers' ``auto_offset_reset="earliest"`` does, and
    so does one whose committed offset the log no longer holds. An end below
    the committed offset makes the lag unknown (``None``, and ``lag_unknown``
    says why), never 0; the group's total is then unknown too.
    """
    rows = [_partition_lag(tp, starts[tp], ends[tp], committed[tp]) for tp in tps]
    unknown = [row for row in rows if row["lag"] is None]
    report: dict[str, Any] = {
        "group": group,
        "topic": topic,
        "lag": None if unknown else sum(row["lag"] for row in rows),
        "partitions": rows,
    }
    if unknown:
        report["lag_unknown"] = "; ".join(
            f"partition {row['partition']}: {row['lag_unknown']}" for row in unknown
        )
    return report


def _partition_lag(tp: TopicPartition, start: int, end: int, offset: int | None) -> dict[str, Any]:
    row: dict[str, Any] = {"partition": tp.partition, "committed": offset, "end": end}
    if offset is not None and end < offset:
        row["lag"] = None
        row["lag_unknown"] = f"the broker reports end {end} below committed {offset}"
        return row
    resume_at = start if offset is None else max(offset, start)
    row["lag"] = max(end - resume_at, 0)
    return row


kafka_state = KafkaStateReader()
