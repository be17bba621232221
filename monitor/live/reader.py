"""The live reader: each web process reads the events topic itself.

No consumer group: the reader is assigned every partition and starts at the
end (or, after a skip, at the offsets it is given). For each record it
reads, in offset order per partition, it moves the process's
:class:`~monitor.live.line.LiveLine` first and then hands the batch's valid
events, encoded once, to a callback (the hub's ``publish``): whoever reads
the line afterwards knows every later event is at or past it. Invalid
records are left out (the consumer groups dead-letter them).

Every ``PARTITION_CHECK_SECONDS``, and at once when a partition's log ends
before the line, it asks the broker which cluster it is and which partitions
the topic has (new ones are read from their beginning). A new cluster is
read from its beginning, with the bases of its epoch (positions are the
broker's offsets plus those, :mod:`monitor.kafka.shift`): after the
embedded broker rolled over where the line stood, the line simply goes on;
if the line had not reached the old cluster's end, the keeper is told, and
each client gets a gap notice with the count; a broker that came back empty
otherwise starts the line over. Every ``LAG_CHECK_SECONDS``, on a task of its
own (so that a read that hangs is seen too), it asks for the ends and tells its
:class:`~monitor.live.reader_watch.ReaderWatch`; when the watch finds it in
trouble (silent broker, stalled, too far behind), ``on_trouble`` is called
with the health and the ends (None if the broker did not answer), at every
check until the hub acts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from channels.db import database_sync_to_async
from django.conf import settings

from monitor.events.epochs import follow_cluster, follows
from monitor.events.received import receive
from monitor.kafka import clients as kafka
from monitor.kafka.clients import ClusterWatch
from monitor.kafka.shift import ShiftedConsumer
from monitor.live.items import View, shown, watched_topics
from monitor.live.line import LiveLine
from monitor.live.reader_moves import follow_new_partitions, log_went_back
from monitor.live.reader_watch import ReaderHealth, ReaderWatch, Trouble

logger = logging.getLogger(__name__)

# How often the live reader looks for partitions added to the topic.
PARTITION_CHECK_SECONDS = 3
# How soon a cluster check the broker did not answer is tried again.
RECHECK_SECONDS = 0.2
# How long one read waits for records before the loop looks around again (a
# broker that rolled over is seen after the first empty read).
READ_WAIT_MS = 200
# How often it compares its line with the broker's end offsets.
LAG_CHECK_SECONDS = 2.0
# How long stopping the reader's consumer may take (a sick broker must not hold it up).
STOP_SECONDS = 2.0

# Called with a batch's encoded items, their envelopes and their (partition, offset).
Publish = Callable[[list[str], list[View], list[tuple[TopicPartition, int]]], None]
# Called with the reader, its health and the broker's ends (None: no answer).
OnTrouble = Callable[["LiveReader", ReaderHealth, dict[TopicPartition, int] | None], None]


class LiveReader:
    """Reads the events topic from its end, moves ``line`` and publishes what it read."""

    def __init__(
        self,
        line: LiveLine,
        publish: Publish,
        *,
        on_trouble: OnTrouble | None = None,
        start_at: dict[TopicPartition, int] | None = None,
    ) -> None:
        self.line = line
        self.publish = publish
        self.on_trouble = on_trouble
        self.start_at = start_at
        self.ready = asyncio.Event()
        self.failed = False
        self.topic = settings.KAFKA_EVENTS_TOPIC
        self.topics = watched_topics()
        self.watch = ReaderWatch(line, max_behind_seconds=settings.LIVE_READER_MAX_BEHIND_SECONDS)
        self._started_at = time.monotonic()
        self._assigned: list[TopicPartition] = []
        self._task: asyncio.Task[None] | None = None
        self._check_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._started_at = time.monotonic()
        self._task = asyncio.create_task(self._run())

    def stop(self) -> None:
        for task in (self._task, self._check_task):
            if task is not None:
                task.cancel()

    async def stopped(self) -> None:
        """Stop, and return once the reader has stopped: it publishes nothing more."""
        self.stop()
        tasks = [task for task in (self._task, self._check_task) if task is not None]
        if tasks:
            await asyncio.wait(tasks)

    async def wait_ready(self, timeout: float) -> None:
        """Return once positioned; raise ConnectionError if the reader failed or timed out."""
        assert self._task is not None
        ready = asyncio.ensure_future(self.ready.wait())
        try:
            await asyncio.wait({ready, self._task}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            ready.cancel()
        if not self.ready.is_set():
            raise ConnectionError("the live event reader could not reach the broker")

    def health(self) -> ReaderHealth:
        """How far behind the reader is, and whether it is in trouble (see ReaderWatch);
        a reader that stopped on an error, or is not positioned within the bound,
        cannot reach the broker."""
        if self.ready.is_set() and not self.failed:
            return self.watch.health()
        waited = time.monotonic() - self._started_at
        if waited <= settings.LIVE_READER_MAX_BEHIND_SECONDS and not self.failed:
            return ReaderHealth(behind=None, seconds_behind=0.0, seconds_since_advance=0.0)
        why = "it stopped on an error" if self.failed else f"not positioned after {waited:.0f} s"
        return ReaderHealth(
            behind=None,
            seconds_behind=waited,
            seconds_since_advance=waited,
            trouble=Trouble.SILENT,
            reason=f"the live reader cannot reach the broker: {why}",
        )

    async def _run(self) -> None:
        consumer: ShiftedConsumer | None = None
        try:
            await kafka.ensure_topics()
            consumer = kafka.make_consumer(
                group_id=None,
                auto_offset_reset="latest",
                fetch_max_wait_ms=settings.KAFKA_LIVE_FETCH_WAIT_MS,
                metadata_max_age_ms=PARTITION_CHECK_SECONDS * 1000,
                shifted=True,
            )
            await consumer.start()
            cluster = ClusterWatch()
            await cluster.join(consumer)
            await follow_cluster(consumer, cluster)
            self._assigned = await self._position(consumer)
            self.watch.reset()
            self.ready.set()
            self._check_task = asyncio.create_task(self._check_lag(consumer))
            loop = asyncio.get_running_loop()
            next_check = loop.time() + PARTITION_CHECK_SECONDS
            while True:
                if loop.time() >= next_check or log_went_back(consumer, self._assigned, self.line):
                    next_check = loop.time() + PARTITION_CHECK_SECONDS
                    try:
                        self._assigned = await self._check_topic(consumer, cluster, self._assigned)
                    except KafkaError as exc:
                        # A broker restarting (or rolled over) does not answer for a
                        # moment; one that stays silent is the watch's to report.
                        logger.info("live reader: broker check failed, again soon: %r", exc)
                        next_check = loop.time() + RECHECK_SECONDS
                await self._read_batch(consumer)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.failed = True  # the next client to register starts a new reader
            logger.exception("live reader stopped")
            if self.on_trouble is not None:
                self.on_trouble(self, self.health(), None)
        finally:
            if self._check_task is not None:
                self._check_task.cancel()
            await kafka.stop_quietly(consumer, timeout=STOP_SECONDS)

    async def _position(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        """Assign every partition at its end (or at ``start_at``) and begin the line
        there afresh (resolved now, so that nothing after "ready" is skipped)."""
        await kafka.wait_for_topic(consumer, self.topic, timeout=10)
        assigned = [
            TopicPartition(topic, partition)
            for topic in self.topics
            for partition in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(assigned)
        start_at = self.start_at or {}
        at_end = [tp for tp in assigned if tp not in start_at]
        if at_end:  # (none given would mean every partition)
            await consumer.seek_to_end(*at_end)
        for tp in assigned:
            if tp in start_at:
                consumer.seek(tp, start_at[tp])
        # What an earlier reader of this process left is not contiguous with this one.
        self.line.restart()
        await self._begin(consumer, assigned)
        logger.info("live reader on %s", ", ".join(f"{tp.topic}/{tp.partition}" for tp in assigned))
        return assigned

    async def _check_topic(
        self, consumer: AIOKafkaConsumer, cluster: ClusterWatch, assigned: list[TopicPartition]
    ) -> list[TopicPartition]:
        """Start over on a broker that came back empty, and follow new partitions;
        returns the partitions now assigned."""
        before = cluster.cluster_id
        if await cluster.moved(consumer):
            try:
                await self._new_cluster(consumer, cluster, before, assigned)
            except Exception:
                cluster.cluster_id = before  # the next check finds the new cluster again
                raise
        assigned = await follow_new_partitions(consumer, self.topics, assigned)
        await self._begin(consumer, assigned)
        return assigned

    async def _new_cluster(
        self,
        consumer: ShiftedConsumer,
        cluster: ClusterWatch,
        before: str | None,
        assigned: list[TopicPartition],
    ) -> None:
        """Read the new cluster from its beginning. After a roll-over that the
        line had read up to, the line goes on (positions continue); otherwise
        it starts over: what the old cluster held and the line lacks is gone."""
        epoch = await follow_cluster(consumer, cluster)
        await consumer.seek_to_beginning(*assigned)
        starts = {tp: await consumer.position(tp) for tp in assigned}
        rolled = await database_sync_to_async(follows)(cluster.cluster_id, before)
        if rolled and starts == self.line.ends():
            logger.info("live reader: the broker rolled over to %s", cluster.cluster_id)
            return
        line = self.line.ends()
        unread = sum(start - line.get(p, start) for p, start in starts.items())
        if rolled and self.on_trouble is not None and unread > 0:
            # What the old cluster held past the line is gone: the keeper starts a
            # reader at the new cluster's beginning and tells each client how
            # many records it misses.
            reason = f"the embedded broker rolled over before the live reader read {unread}"
            health = ReaderHealth(unread, 0.0, 0.0, Trouble.BEHIND, reason)
            self.on_trouble(self, health, starts)
            return
        logger.warning(
            "live reader: new cluster %s, reading from start (bases %s, line %s)",
            cluster.cluster_id,
            epoch.bases.get(self.topic, {}),
            self.line.ends(),
        )
        self.line.restart()
        self.watch.reset()
        await self._begin(consumer, assigned)

    async def _check_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Every LAG_CHECK_SECONDS, tell the watch the broker's ends, and the hub
        any trouble; a check waits at most the bound for an answer."""
        bound = settings.LIVE_READER_MAX_BEHIND_SECONDS
        while True:
            await asyncio.sleep(LAG_CHECK_SECONDS)
            ends: dict[TopicPartition, int] | None
            try:
                offsets = await asyncio.wait_for(consumer.end_offsets(self._assigned), bound)
                ends = dict(offsets)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a broker that does not answer is the news
                logger.debug("live reader: no end offsets: %r", exc)
                ends = None
            self.watch.observed(ends)
            health = self.watch.health()
            if health.trouble is not None and self.on_trouble is not None:
                self.on_trouble(self, health, ends)

    async def _read_batch(self, consumer: AIOKafkaConsumer) -> None:
        batch = await consumer.getmany(timeout_ms=READ_WAIT_MS)
        items: list[str] = []
        views: list[View] = []
        positions: list[tuple[TopicPartition, int]] = []
        max_bytes = settings.MAX_EVENT_BYTES
        for records in batch.values():
            for record in records:
                item = shown(receive(record, max_bytes=max_bytes))
                self.line.received(item.partition, item.offset, item.item, item.time)
                items.append(item.item)
                views.append(item.view)
                positions.append((item.partition, item.offset))
        if batch:
            self.watch.advanced()
        self.publish(items, views, positions)

    async def _begin(self, consumer: AIOKafkaConsumer, assigned: list[TopicPartition]) -> None:
        """Begin the line where the consumer stands on each partition it has not begun."""
        for tp in assigned:
            if tp not in self.line.partitions:
                self.line.begin(tp, await consumer.position(tp))
