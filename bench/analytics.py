"""Events from the topic to committed analytics rows: the product's worker and the naive one.

The topic is filled first (``EVENTS`` valid envelopes); then the product's
``manage.py run_analytics`` runs against it. Its rate is the events after its
first committed batch divided by the time from that batch until the group's
committed offsets cover every event (polled every ``POLL_SECONDS``; worker
start-up and group join are not counted); then the table must hold exactly
one row per event.
Then the rows are deleted and the naive consumer (bench/naive_analytics.py)
reads the same topic contents in its own group, for at most
``NAIVE_SECONDS``. Both must end with exactly one row per event processed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from aiokafka import TopicPartition

from monitor.kafka import clients as kafka

from .report import ScenarioResult
from .source import EventSource
from .stack import Stack, topic_env
from .usage import BENCH, OTHER, CpuMeter

EVENTS = 60_000
POLL_SECONDS = 0.02
OURS_TIMEOUT = 120.0
NAIVE_SECONDS = 12.0
NAIVE_GROUP = "bench-naive-analytics"
PRODUCT_GROUP = "analytics"


class AnalyticsFailure(AssertionError):
    pass


async def fill_topic(topic: str, count: int = EVENTS) -> None:
    source = await EventSource(topic, linger_ms=5).start()
    try:
        while source.produced < count:
            await source.send(min(1000, count - source.produced))
        await source.flush(timeout=60)
    finally:
        await source.stop()


def count_rows(topic: str) -> int:
    from monitor.models import AnalyticsEvent

    return AnalyticsEvent.objects.filter(topic=topic).count()


def delete_rows(topic: str) -> None:
    """Delete a run's rows; on SQLite also fold the WAL back into the database file,
    so that the next run does not pay for checkpointing this delete."""
    from django.db import connection

    from monitor.models import AnalyticsEvent

    AnalyticsEvent.objects.filter(topic=topic).delete()
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")


class CommittedOffsets:
    """Reads a group's committed offsets without joining it."""

    def __init__(self, group: str, topic: str) -> None:
        self.group = group
        self.topic = topic

    async def __aenter__(self) -> CommittedOffsets:
        self.consumer = kafka.make_consumer(group_id=self.group)
        await self.consumer.start()
        partitions = await kafka.wait_for_topic(self.consumer, self.topic, timeout=10)
        self.partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def total(self) -> int:
        return sum([await self.consumer.committed(tp) or 0 for tp in self.partitions])


async def measure_ours(result: ScenarioResult, stack: Stack, topic: str) -> float:
    worker = stack.start_worker("analytics", ["run_analytics"], topic=topic)
    pids = {"worker": worker.pid, "broker": stack.broker_pid, BENCH: os.getpid()}
    meter = CpuMeter(pids)
    deadline = time.monotonic() + OURS_TIMEOUT
    first_at, first_committed = 0.0, 0
    try:
        async with CommittedOffsets(PRODUCT_GROUP, topic) as offsets:
            # The worker commits offsets only after the batch's transaction: a
            # committed offset is a durable row. Polling Kafka, not the table,
            # keeps the measuring off the database being measured.
            while (committed := await offsets.total()) < EVENTS:
                now = time.monotonic()
                if committed and not first_at:
                    first_at, first_committed = now, committed
                    meter.start()
                if worker.poll() is not None:
                    raise AnalyticsFailure(
                        f"run_analytics exited ({worker.returncode}): {stack.log_tail('analytics')}"
                    )
                if now > deadline:
                    raise AnalyticsFailure(
                        f"after {OURS_TIMEOUT:.0f}s only {committed} of {EVENTS} committed"
                    )
                await asyncio.sleep(POLL_SECONDS)
            done_at = time.monotonic()
        if first_at:
            result.cpu = meter.stop()
    finally:
        stack.stop("analytics")
    rows = await asyncio.to_thread(count_rows, topic)
    if rows != EVENTS:
        raise AnalyticsFailure(f"{rows} rows for {EVENTS} events, all committed")
    if not first_at or done_at - first_at < 0.5:
        raise AnalyticsFailure("the run was too short to time; raise EVENTS")
    rate = (EVENTS - first_committed) / (done_at - first_at)
    result.add("events to committed rows", rate, "events/s", "analytics_events_per_s")
    result.notes.append(
        f"product worker (manage.py run_analytics, batch {_batch_size(stack)}) on {EVENTS:,}"
        f" events, timed from its first committed batch ({first_committed} events) until every"
        " offset is committed (polled every 20 ms); then exactly one row per event"
    )
    return rate


def _batch_size(stack: Stack) -> str:
    from django.conf import settings

    return stack.env.get("ANALYTICS_BATCH_SIZE") or str(settings.ANALYTICS_BATCH_SIZE)


async def measure_naive(result: ScenarioResult, stack: Stack, topic: str) -> float:
    await asyncio.to_thread(delete_rows, topic)
    argv = [
        sys.executable,
        "-m",
        "bench.naive_analytics",
        "--topic",
        topic,
        "--group",
        NAIVE_GROUP,
        "--seconds",
        str(NAIVE_SECONDS),
        "--limit",
        str(EVENTS),
    ]
    process = stack.spawn("naive-analytics", argv[1:], {**stack.env, **topic_env(topic)})
    # The worker is gone before it can be measured from outside; it reports its own CPU.
    meter = CpuMeter({"broker": stack.broker_pid}).start()
    started = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.to_thread(process.wait), NAIVE_SECONDS + 60)
    finally:
        result.cpu = meter.stop()
        stack.stop("naive-analytics")
    if process.returncode != 0:
        raise AnalyticsFailure(f"naive consumer failed: {stack.log_tail('naive-analytics')}")
    output = stack.log_tail("naive-analytics").splitlines()
    summary = json.loads(next(line for line in reversed(output) if line.startswith("{")))
    rows = await asyncio.to_thread(count_rows, topic)
    async with CommittedOffsets(NAIVE_GROUP, topic) as offsets:
        committed = await offsets.total()
    if not rows == committed == summary["processed"]:
        raise AnalyticsFailure(
            f"naive: {rows} rows, {committed} committed, {summary['processed']} processed"
        )
    worker_cpu = summary["cpu_seconds"] / (time.monotonic() - started) * 100
    result.cpu["worker"] = round(worker_cpu, 1)
    result.cpu[OTHER] = round(max(0.0, result.cpu[OTHER] - worker_cpu), 1)
    rate = summary["processed"] / summary["seconds"]
    result.add("naive: events to committed rows", rate, "events/s")
    result.notes.append(
        f"naive consumer: one AnalyticsEvent.objects.create() and one commit per event,"
        f" {summary['processed']:,} events in {summary['seconds']:.1f} s (time-boxed), same topic"
        " contents, rows of the product's run deleted first; it skips the per-minute counts"
    )
    return rate
