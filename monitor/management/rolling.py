"""Rolling the embedded broker over, so that what it holds stays bounded.

The embedded broker (Tansu's memory engine) keeps every record for ever,
and a fetch that returns data costs it time in proportion to the record
batches the partition holds: past about 8,192 a reader cannot keep up
(docs/PERFORMANCE.md, "Soak"). :class:`Roller` watches what it holds and,
once a partition holds ``roll_records`` records or the broker uses
``roll_mb`` of memory, starts it again empty, as a new cluster, but only
at a moment when nothing is lost by it:

1. Produce requests are held at the broker's front
   (:meth:`~monitor.kafka.front.BrokerFront.hold_writes`), and those already
   sent are let finish: from then on the broker takes no record.
2. The broker's exact ends are read, and every consumer group of the site
   (:data:`monitor.workers.groups.ALL`) must have committed them on every
   partition of the events topic; if they do not within ``hold_seconds``,
   writes are let go and the roll is tried again later. Writes are held only
   when the groups were close behind (``near_records``) just before.
3. The new cluster's epoch is recorded (:func:`monitor.events.epochs.begin_epoch`):
   its offsets continue the old ones, so positions on the live stream keep
   growing. Then every connection is closed, with the requests held on it
   (never written, so never acknowledged: clients send them again), the
   broker starts again empty with the same topics, and writes flow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from channels.db import database_sync_to_async
from django.conf import settings

from monitor.events.epochs import begin_epoch, record_ends
from monitor.kafka import clients as kafka
from monitor.kafka.embedded import EmbeddedBroker, new_cluster_id
from monitor.kafka.front import BrokerFront

logger = logging.getLogger(__name__)

# How often a roll-over that is due but waits for the groups is logged.
PUT_OFF_LOG_SECONDS = 30.0
# After writes were held in vain (a group did not catch up in time), how long
# until the next try.
RETRY_SECONDS = 5.0
# How long reading the broker's exact ends may take.
READ_ENDS_SECONDS = 5.0

# Per topic, per partition: an offset of the broker's.
Ends = dict[str, dict[int, int]]


class BrokerDied(Exception):
    """The broker process ended on its own."""


@dataclass(frozen=True)
class RollPolicy:
    roll_records: int
    roll_mb: int
    groups: Sequence[str]
    check_seconds: float = 2.0
    hold_seconds: float = 1.0
    # Writes are held for a roll-over only when the groups are at most this far behind.
    near_records: int = 2_000


def rss_mb(pid: int) -> float | None:
    """The resident memory of process ``pid`` in MB (None where /proc is not there)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class Roller:
    """Rolls ``broker`` (behind ``front``) over when ``policy`` says, never losing
    a record a group of the site has not processed."""

    def __init__(self, broker: EmbeddedBroker, front: BrokerFront, policy: RollPolicy) -> None:
        self.broker = broker
        self.front = front
        self.policy = policy
        self.rolls = 0
        self._watcher: AIOKafkaConsumer | None = None
        self._groups: dict[str, AIOKafkaConsumer] = {}
        self._waiting_for: str | None = None
        self._put_off_logged = -PUT_OFF_LOG_SECONDS
        self._committed = 0  # all groups' committed offsets together, at the last look
        self._next_attempt = 0.0
        self._recorded: tuple[str, Ends] | None = None
        self._reading = asyncio.Lock()  # the watcher reads one set of ends at a time

    async def run(self, stop: asyncio.Event) -> None:
        """Check every ``check_seconds`` until ``stop``; raises BrokerDied."""
        try:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), self.policy.check_seconds)
                except TimeoutError:
                    pass
                if stop.is_set():
                    return
                if self.broker.process is None or self.broker.process.poll() is not None:
                    raise BrokerDied(f"the embedded broker ended ({self.broker.process})")
                try:
                    await self.check()
                except Exception as exc:  # noqa: BLE001 - tried again at the next check
                    logger.warning("embedded broker: roll-over check failed: %r", exc)
                    await self._close_clients()
        finally:
            await self._close_clients()

    async def check(self) -> bool:
        """Roll the broker over if it is due and nothing would be lost; True if it was."""
        ends = await self.ends()
        cluster = self.broker.cluster_id
        if cluster is not None and (cluster, ends) != self._recorded:
            # Where this life ends, should it end without saying (a crash).
            await database_sync_to_async(record_ends)(cluster, ends, final=False)
            self._recorded = (cluster, ends)
        due = self.due(ends)
        if due is None:
            return False
        committed_before = self._committed
        behind = await self.behind(ends)
        if behind > self.policy.near_records:
            self._put_off(due, f"the groups are {behind} records behind ({self._waiting_for})")
            return False
        if behind and self._committed == committed_before:
            # Holding writes for groups that do not move would only stall producers.
            self._put_off(due, f"the groups are not reading ({self._waiting_for})")
            return False
        loop = asyncio.get_running_loop()
        if loop.time() < self._next_attempt:
            return False
        logger.info("embedded broker: rolling over (%s)", due)
        rolled = await self.roll()
        self._next_attempt = 0.0 if rolled else loop.time() + RETRY_SECONDS
        return rolled

    async def record_final_ends(self) -> None:
        """Hold writes, and record where this life of the broker ends (before it is
        stopped), so that the next one goes on from there exactly."""
        cluster = self.broker.cluster_id
        if cluster is None:
            return
        async with self.front.hold_writes():
            await self.front.writes_settled(self.policy.hold_seconds)
            ends = await self.ends(exact=True)
            await database_sync_to_async(record_ends)(cluster, ends, final=True)
        await self._close_clients()

    def _put_off(self, due: str, why: str) -> None:
        """Log, at most every PUT_OFF_LOG_SECONDS, that a due roll-over waits."""
        now = asyncio.get_running_loop().time()
        if now - self._put_off_logged >= PUT_OFF_LOG_SECONDS:
            self._put_off_logged = now
            logger.info("embedded broker: roll-over due (%s) put off: %s", due, why)

    def due(self, ends: Ends) -> str | None:
        """Why the broker should be rolled over now, or None."""
        most = max((end for parts in ends.values() for end in parts.values()), default=0)
        if most >= self.policy.roll_records:
            return f"a partition holds {most} records"
        pid = self.broker.pid
        memory = rss_mb(pid) if pid is not None else None
        if memory is not None and memory >= self.policy.roll_mb:
            return f"the broker uses {memory:.0f} MB"
        return None

    async def roll(self) -> bool:
        """Hold writes, check again with exact ends, and roll over; False if a
        group did not catch up within ``hold_seconds`` (writes then flow again)."""
        topics = await self._topics()
        async with self.front.hold_writes():
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.policy.hold_seconds
            if not await self.front.writes_settled(self.policy.hold_seconds):
                return False
            ends = await self.ends(exact=True)
            while await self.behind(ends):
                if loop.time() >= deadline:
                    logger.info("embedded broker: roll-over put off: %s", self._waiting_for)
                    return False
                await asyncio.sleep(0.05)
            old, new = self.broker.cluster_id, new_cluster_id()
            bases = await database_sync_to_async(begin_epoch)(new, old, ends)
            await self._close_clients()
            self.front.drop_all()
            await asyncio.to_thread(self.broker.restart, 20.0, new, kill=True)
            await kafka.ensure_topics_with(topics)
        self.rolls += 1
        logger.info(
            "embedded broker: rolled over from %s to %s; %s positions go on from %s",
            old,
            new,
            settings.KAFKA_EVENTS_TOPIC,
            bases.get(settings.KAFKA_EVENTS_TOPIC),
        )
        return True

    async def ends(self, *, exact: bool = False) -> Ends:
        """Per topic and partition, the broker's end. The embedded broker reports
        the first offset of the last batch plus one; ``exact`` reads past that to
        the high watermark of a fetch."""
        async with self._reading:
            return await self._read_ends(exact)

    async def _read_ends(self, exact: bool) -> Ends:
        if exact and self._watcher is not None:
            # A new consumer: no high watermark from an earlier fetch is taken for now's.
            await kafka.stop_quietly(self._watcher, timeout=2.0)
            self._watcher = None
        watcher = await self._watcher_consumer()
        topics = await self._topics()
        tps = [TopicPartition(t, p) for t, count in topics.items() for p in range(count)]
        if not tps:
            return {}
        watcher.assign(tps)
        reported = await watcher.end_offsets(tps)
        ends: Ends = {}
        for tp, end in reported.items():
            ends.setdefault(tp.topic, {})[tp.partition] = end
        if not exact:
            watcher.unsubscribe()
            return ends
        for tp in tps:
            watcher.seek(tp, reported[tp])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READ_ENDS_SECONDS
        while True:
            await watcher.getmany(timeout_ms=100)
            marks = {tp: watcher.highwater(tp) for tp in tps}
            positions = {tp: await watcher.position(tp) for tp in tps}
            if all(marks[tp] is not None and positions[tp] >= marks[tp] for tp in tps):
                break
            if loop.time() > deadline:
                raise TimeoutError("the broker's exact ends could not be read")
        for tp in tps:
            ends[tp.topic][tp.partition] = max(ends[tp.topic][tp.partition], positions[tp])
        watcher.unsubscribe()  # an assigned consumer would go on fetching in the background
        return ends

    async def behind(self, ends: Ends) -> int:
        """How many records of the events topic, up to ``ends``, the groups of the
        site have not committed, all groups together (0: every group is done)."""
        topic = settings.KAFKA_EVENTS_TOPIC
        total = 0
        self._waiting_for = None
        self._committed = 0
        for group in self.policy.groups:
            consumer = await self._group_consumer(group)
            for partition, end in ends.get(topic, {}).items():
                committed = await consumer.committed(TopicPartition(topic, partition))
                self._committed += committed or 0
                lag = max(0, end - (committed or 0))
                if lag and self._waiting_for is None:
                    self._waiting_for = f"{group} at {committed} of {end} on partition {partition}"
                total += lag
        return total

    async def _topics(self) -> dict[str, int]:
        """Every topic on the broker, with its number of partitions."""
        watcher = await self._watcher_consumer()
        await kafka.refresh_metadata(watcher)
        names = await watcher.topics()
        return {
            name: len(watcher.partitions_for_topic(name) or ())
            for name in sorted(names)
            if not name.startswith("__")
        }

    async def _watcher_consumer(self) -> AIOKafkaConsumer:
        if self._watcher is None:
            self._watcher = kafka.make_consumer(group_id=None, fetch_max_wait_ms=50)
            await self._watcher.start()
        return self._watcher

    async def _group_consumer(self, group: str) -> AIOKafkaConsumer:
        """A consumer that only reads ``group``'s commits (it never joins the group)."""
        if group not in self._groups:
            consumer = kafka.make_consumer(group_id=group)
            await consumer.start()
            self._groups[group] = consumer
        return self._groups[group]

    async def _close_clients(self) -> None:
        clients = [*self._groups.values(), *([self._watcher] if self._watcher else [])]
        self._groups, self._watcher = {}, None
        for client in clients:
            await kafka.stop_quietly(client, timeout=2.0)
