"""One read of the Kafka cluster for the dashboard: every topic, every consumer group.

Topics: each with its partitions' start and end offsets, the number of
records they hold, whether it is internal (named ``__...``), whether the
live stream shows it (``watched``), and its role for the site (``events``:
the topic the site writes its events to; ``dead letters``). Consumer
groups: the site's own (named in :mod:`monitor.workers.groups`, listed even
before they first join) and every other group the broker lists, each with
its lag per partition in records and in time (:mod:`monitor.dashboard.lag`).
A group is reported on the topics where it committed an offset, and the
site's groups on the events topic too.

A read costs: one metadata request, the start and end offsets of every
partition, the list of groups, one committed-offsets request per group, and
at most one fetch per partition and offset where a group lags
(:class:`~monitor.dashboard.record_times.RecordTimes`, within
``AGE_READ_SECONDS``), and one fetch per partition where a group committed
past the end the broker reported (within ``END_READ_SECONDS``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from monitor.dashboard import lag
from monitor.dashboard.lag import Offsets, RecordTime
from monitor.dashboard.record_times import RecordTimes, Wanted, exact_ends
from monitor.kafka import clients as kafka

logger = logging.getLogger(__name__)

# How long a read may spend fetching the records whose times give the lags in
# time; the rest of the read needs the remainder of the reader's timeout.
AGE_READ_SECONDS = 0.8
# How long a read may spend reading the true ends the broker reported short.
END_READ_SECONDS = 0.5


@dataclass(frozen=True)
class Target:
    """What a read looks at; clients made for one target are not used for another."""

    servers: str
    topic: str
    dlq: str
    watched: tuple[str, ...]  # the topics the live stream shows
    site_groups: tuple[str, ...]


@dataclass(frozen=True)
class KafkaReport:
    topics: list[dict[str, Any]]
    groups: list[dict[str, Any]]
    broker: dict[str, Any]


@dataclass
class KafkaClients:
    offsets: AIOKafkaConsumer  # the metadata, and every partition's start and end
    records: AIOKafkaConsumer  # fetches the records whose times the lags need
    admin: AIOKafkaAdminClient  # the groups and their committed offsets

    async def start(self) -> None:
        await self.offsets.start()
        await self.records.start()
        await self.admin.start()

    async def stop(self, timeout: float) -> None:
        """Stop all three; one that fails or takes longer than ``timeout`` is dropped."""
        await asyncio.gather(
            kafka.stop_quietly(self.offsets, self.records, timeout=timeout),
            _close_quietly(self.admin, timeout),
        )


async def _close_quietly(admin: AIOKafkaAdminClient, timeout: float) -> None:
    try:
        await asyncio.wait_for(admin.close(), timeout)
    except Exception as exc:  # noqa: BLE001 - it is dropped either way
        logger.debug("the dashboard's admin client failed to close: %s", exc)


def make_clients() -> KafkaClients:
    return KafkaClients(
        offsets=kafka.make_consumer(group_id=None),
        records=kafka.make_consumer(group_id=None),
        admin=kafka.make_admin(),
    )


@dataclass
class GroupRows:
    """A group's partitions, each row with the offset where the group resumes there."""

    group: str
    site: bool
    rows: list[tuple[dict[str, Any], int]]
    error: str | None = None  # why its committed offsets could not be read

    def report(self, times: dict[Wanted, RecordTime], now_ms: int) -> dict[str, Any]:
        for row, resumes_at in self.rows:
            lag.add_lag_time(row, resumes_at, times, now_ms)
        rows = [row for row, _ in self.rows]
        return lag.group_report(self.group, rows, site=self.site, error=self.error)


async def read_cluster(clients: KafkaClients, target: Target, times: RecordTimes) -> KafkaReport:
    """Every topic and every group, as the module says; raises if the broker fails."""
    await kafka.refresh_metadata(clients.offsets)
    partitions = {
        name: [
            TopicPartition(name, p)
            for p in sorted(clients.offsets.partitions_for_topic(name) or ())
        ]
        for name in kafka.known_topics(clients.offsets)
    }
    every = [tp for tps in partitions.values() for tp in tps]
    starts = await clients.offsets.beginning_offsets(every) if every else {}
    ends = await clients.offsets.end_offsets(every) if every else {}
    listed = {name for name, *_ in await clients.admin.list_consumer_groups()}
    names = [*target.site_groups, *sorted(listed - set(target.site_groups))]
    committed = await asyncio.gather(*(_committed(clients.admin, name, every) for name in names))
    # Where a group committed past the end the broker reported, that end is
    # the embedded broker's short one (see exact_ends): read the true end.
    short = {
        tp: ends[tp]
        for found in committed
        if isinstance(found, dict)
        for tp, offset in found.items()
        if offset is not None and tp in ends and offset > ends[tp]
    }
    if short:
        ends.update(await exact_ends(clients.records, short, END_READ_SECONDS))
    offsets = {tp: Offsets(starts[tp], ends[tp]) for tp in every}
    now_ms = int(time.time() * 1000)
    groups = [
        _group_rows(name, found, partitions, offsets, target)
        for name, found in zip(names, committed, strict=True)
    ]
    wanted = {
        (TopicPartition(row["topic"], row["partition"]), resumes_at)
        for group in groups
        for row, resumes_at in group.rows
        if row["lag"]
    }
    cluster = kafka.cluster_id(clients.offsets)
    known = await times.read(clients.records, wanted, cluster=cluster, budget=AGE_READ_SECONDS)
    return KafkaReport(
        _topic_reports(partitions, offsets, target),
        [group.report(known, now_ms) for group in groups],
        {"ok": True},
    )


async def _committed(
    admin: AIOKafkaAdminClient, group: str, tps: list[TopicPartition]
) -> dict[TopicPartition, int | None] | str:
    """The group's committed offset on each partition (None where it has none),
    or why they could not be read."""
    if not tps:
        return {}
    try:
        found = await admin.list_consumer_group_offsets(group, partitions=tps)
    except Exception as exc:  # noqa: BLE001 - the group's report says it
        return f"its offsets could not be read: {type(exc).__name__}: {exc}".strip()
    return {tp: (found[tp].offset if tp in found and found[tp].offset >= 0 else None) for tp in tps}


def _group_rows(
    group: str,
    committed: dict[TopicPartition, int | None] | str,
    partitions: dict[str, list[TopicPartition]],
    offsets: dict[TopicPartition, Offsets],
    target: Target,
) -> GroupRows:
    """The group's rows: on each topic where it committed an offset, and for
    the site's groups on the events topic."""
    site = group in target.site_groups
    if isinstance(committed, str):
        return GroupRows(group, site, [], error=committed)
    topics = {tp.topic for tp, offset in committed.items() if offset is not None}
    if site and target.topic in partitions:
        topics.add(target.topic)
    rows = [
        (
            lag.partition_lag(tp, offsets[tp], committed.get(tp), site=site),
            lag.resume_offset(offsets[tp], committed.get(tp)),
        )
        for topic in sorted(topics, key=lambda name: (name != target.topic, name))
        for tp in partitions[topic]
    ]
    return GroupRows(group, site, rows)


def _topic_reports(
    partitions: dict[str, list[TopicPartition]],
    offsets: dict[TopicPartition, Offsets],
    target: Target,
) -> list[dict[str, Any]]:
    """Every topic: the events topic first, then its dead letters, the other
    watched topics, the rest by name, and internal topics last."""
    roles = {target.topic: "events", target.dlq: "dead letters"}

    def order(name: str) -> tuple[int, str]:
        place = {target.topic: 0, target.dlq: 1}.get(name, 2 if name in target.watched else 3)
        return (5 if name.startswith("__") else place), name

    reports = []
    for name in sorted(partitions, key=order):
        rows = [
            {"partition": tp.partition, "start": offsets[tp].start, "end": offsets[tp].end}
            for tp in partitions[name]
        ]
        reports.append(
            {
                "name": name,
                "role": roles.get(name),
                "watched": name in target.watched,
                "internal": name.startswith("__"),
                "records": sum(row["end"] - row["start"] for row in rows),
                "partitions": rows,
            }
        )
    return reports
