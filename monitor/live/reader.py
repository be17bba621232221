"""The live reader: each web process reads the events topic itself.

No consumer group: the reader is assigned every partition and starts at the
end. For each record it reads, in offset order per partition, it moves the
process's :class:`~monitor.live.line.LiveLine` first and then hands the
batch's valid events, encoded once, to a callback (the hub's ``publish``):
whoever reads the line afterwards knows every later event is at or past it.
Invalid records are left out (the consumer groups dead-letter them).

Every ``PARTITION_CHECK_SECONDS`` it asks the broker which cluster it is (a
broker that came back empty is read again from the beginning) and which
partitions the topic has (new ones are read from their beginning).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from django.conf import settings

from monitor.events.schema import Event, InvalidEvent, parse_record
from monitor.kafka import clients as kafka
from monitor.kafka.clients import ClusterWatch
from monitor.live.line import LiveLine
from monitor.live.protocol import encode_item

logger = logging.getLogger(__name__)

# How often the live reader looks for partitions added to the topic.
PARTITION_CHECK_SECONDS = 3

# Called with a batch's encoded items, their envelopes and their (partition, offset).
Publish = Callable[[list[str], list[Event], list[tuple[int, int]]], None]


class LiveReader:
    """Reads the events topic from its end, moves ``line`` and publishes what it read."""

    def __init__(self, line: LiveLine, publish: Publish) -> None:
        self.line = line
        self.publish = publish
        self.ready = asyncio.Event()
        self.failed = False
        self.topic = settings.KAFKA_EVENTS_TOPIC
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

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

    async def _run(self) -> None:
        consumer: AIOKafkaConsumer | None = None
        try:
            await kafka.ensure_topics()
            consumer = kafka.make_consumer(
                group_id=None,
                auto_offset_reset="latest",
                fetch_max_wait_ms=settings.KAFKA_LIVE_FETCH_WAIT_MS,
                metadata_max_age_ms=PARTITION_CHECK_SECONDS * 1000,
            )
            await consumer.start()
            assigned = await self._position(consumer)
            cluster = ClusterWatch()
            await cluster.join(consumer)
            self.ready.set()
            loop = asyncio.get_running_loop()
            next_check = loop.time() + PARTITION_CHECK_SECONDS
            while True:
                if loop.time() >= next_check:
                    next_check = loop.time() + PARTITION_CHECK_SECONDS
                    assigned = await self._check_topic(consumer, cluster, assigned)
                await self._read_batch(consumer)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.failed = True  # the next client to register starts a new reader
            logger.exception("live reader stopped")
        finally:
            await kafka.stop_quietly(consumer)

    async def _position(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        """Assign every partition at its end and begin the line there afresh
        (resolved now, so that nothing after "ready" is skipped)."""
        partitions = await kafka.wait_for_topic(consumer, self.topic, timeout=10)
        assigned = [TopicPartition(self.topic, partition) for partition in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_end(*assigned)
        # What an earlier reader of this process left is not contiguous with this one.
        self.line.restart()
        await self._begin(consumer, assigned)
        logger.info("live reader on %s, partitions %s", self.topic, sorted(partitions))
        return assigned

    async def _check_topic(
        self, consumer: AIOKafkaConsumer, cluster: ClusterWatch, assigned: list[TopicPartition]
    ) -> list[TopicPartition]:
        """Start over on a broker that came back empty, and follow new partitions;
        returns the partitions now assigned."""
        if await cluster.moved(consumer):
            # The broker came back empty: everything in its logs is new.
            logger.warning("live reader: new cluster %s, reading from start", cluster.cluster_id)
            await consumer.seek_to_beginning(*assigned)
            self.line.restart()
            await self._begin(consumer, assigned)
        assigned = await self._follow_new_partitions(consumer, assigned)
        await self._begin(consumer, assigned)
        return assigned

    async def _read_batch(self, consumer: AIOKafkaConsumer) -> None:
        batch = await consumer.getmany(timeout_ms=1000)
        items: list[str] = []
        events: list[Event] = []
        positions: list[tuple[int, int]] = []
        for records in batch.values():
            for record in records:
                partition, offset = record.partition, record.offset
                try:
                    parsed = parse_record(record.value, max_bytes=settings.MAX_EVENT_BYTES)
                except InvalidEvent:
                    self.line.skipped(partition, offset)
                    continue
                item = encode_item(record.topic, partition, offset, record.value)
                self.line.received(partition, offset, item, parsed.time)
                items.append(item)
                events.append(parsed.event)
                positions.append((partition, offset))
        self.publish(items, events, positions)

    async def _begin(self, consumer: AIOKafkaConsumer, assigned: list[TopicPartition]) -> None:
        """Begin the line where the consumer stands on each partition it has not begun."""
        for tp in assigned:
            if tp.partition not in self.line.partitions:
                self.line.begin(tp.partition, await consumer.position(tp))

    async def _follow_new_partitions(
        self, consumer: AIOKafkaConsumer, assigned: list[TopicPartition]
    ) -> list[TopicPartition]:
        """Add partitions created since the reader started, read from their beginning."""
        await consumer.topics()  # fresh metadata, so that new partitions show
        known = {tp.partition for tp in assigned}
        new = sorted((consumer.partitions_for_topic(self.topic) or set()) - known)
        if not new:
            return assigned
        positions = {tp: await consumer.position(tp) for tp in assigned}
        added = [TopicPartition(self.topic, partition) for partition in new]
        consumer.assign([*assigned, *added])
        for tp, position in positions.items():
            consumer.seek(tp, position)
        await consumer.seek_to_beginning(*added)
        logger.info("live reader now also reads partitions %s", new)
        return [*assigned, *added]
