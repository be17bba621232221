"""What the operators' dashboard shows of Kafka: topics, groups, dead letters, watchers.

Kafka state comes from :data:`kafka_state`, one reader per process that many
polling dashboards share: it reads at most once per ``max_age`` seconds, and
requests that arrive during a read wait for that read. A read covers every
topic and every consumer group on the cluster (:mod:`monitor.dashboard.cluster`);
the site's own groups are named in :mod:`monitor.workers.groups` (names
only: nothing here runs a worker) and marked as the site's. Event rates are
in :mod:`monitor.dashboard.rates`.

A group's lag, in records and in time, is never made up: where the figures
cannot give it, it is ``None`` with a reason (:mod:`monitor.dashboard.lag`).
The state also carries ``live_reader``: the live reader of the web process
that answers (see :mod:`monitor.live.reader_keeper`).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from typing import Any

from django.conf import settings
from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone

from monitor.dashboard import cluster
from monitor.dashboard.cluster import KafkaReport
from monitor.dashboard.record_times import RecordTimes
from monitor.events.schema import format_time
from monitor.live import hub as fanout
from monitor.live import presence
from monitor.live.items import watched_topics
from monitor.models import DeadLetter
from monitor.runtime.background_loop import BackgroundLoop
from monitor.workers import groups

logger = logging.getLogger(__name__)

# The site's own consumer groups (each read looks it up afresh); the dashboard
# shows every other group on the cluster too.
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
        self._clients: cluster.KafkaClients | None = None
        self._times = RecordTimes()
        self._target: cluster.Target | None = None
        self._report: KafkaReport | None = None
        self._expires = 0.0

    def read(self) -> KafkaReport:
        target = cluster.Target(
            servers=settings.KAFKA_BOOTSTRAP_SERVERS,
            topic=settings.KAFKA_EVENTS_TOPIC,
            dlq=settings.KAFKA_DLQ_TOPIC,
            watched=tuple(watched_topics()),
            site_groups=CONSUMER_GROUPS,
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

    def _read_from_broker(self, target: cluster.Target) -> KafkaReport:
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
        stopping = self._background.submit(clients.stop(CLIENTS_STOP_SECONDS))
        if wait:
            try:
                stopping.result(CLIENTS_STOP_SECONDS + 1)
            except Exception as exc:  # noqa: BLE001 - they are dropped either way
                logger.warning("closing the dashboard's Kafka clients failed: %s", exc)

    async def _connect(self) -> cluster.KafkaClients:
        clients = self._clients = cluster.make_clients()  # closed on failure, even half started
        await clients.start()
        return clients

    async def _fetch(self, target: cluster.Target) -> KafkaReport:
        clients = self._clients or await self._connect()
        return await cluster.read_cluster(clients, target, self._times)


kafka_state = KafkaStateReader()
