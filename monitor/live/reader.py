"""The live reader: each web process reads the events topic itself.

No consumer group: the reader is assigned every partition, starts at the
end, and hands what it reads to the process's hub (:mod:`monitor.live.hub`),
which also keeps the most recent events for replays (:mod:`monitor.live.recent`).
The offset after the last record handed over, per partition, is the hub's
*live line* (``received_end``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, TopicPartition
from django.conf import settings

from monitor.events.schema import InvalidEvent, parse_record
from monitor.kafka import clients as kafka

if TYPE_CHECKING:
    from monitor.live.hub import FanoutHub

logger = logging.getLogger(__name__)

# How often the live reader looks for partitions added to the topic.
PARTITION_CHECK_SECONDS = 3


def encode_item(record_topic: str, partition: int, offset: int, value: bytes) -> str:
    """One event as it appears in a frame; the envelope's own JSON is reused verbatim."""
    return (
        f'{{"topic":{json.dumps(record_topic)},"partition":{partition},'
        f'"offset":{offset},"event":{value.decode()}}}'
    )


class LiveReader:
    """Reads the events topic from its end and feeds the hub."""

    def __init__(self, hub: FanoutHub) -> None:
        self.hub = hub
        self.ready = asyncio.Event()
        self.failed = False
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
            topic = settings.KAFKA_EVENTS_TOPIC
            consumer = kafka.make_consumer(
                group_id=None,
                auto_offset_reset="latest",
                fetch_max_wait_ms=settings.KAFKA_LIVE_FETCH_WAIT_MS,
                metadata_max_age_ms=PARTITION_CHECK_SECONDS * 1000,
            )
            await consumer.start()
            partitions = await kafka.wait_for_topic(consumer, topic, timeout=10)
            assigned = [TopicPartition(topic, partition) for partition in sorted(partitions)]
            consumer.assign(assigned)
            await consumer.seek_to_end(*assigned)
            # Resolved now, so nothing after "ready" is skipped.
            await self._note_positions(consumer, assigned)
            cluster = await kafka.fetch_cluster_id(consumer)
            self.ready.set()
            logger.info("live reader on %s, partitions %s", topic, sorted(partitions))
            loop = asyncio.get_running_loop()
            next_check = loop.time() + PARTITION_CHECK_SECONDS
            while True:
                if loop.time() >= next_check:
                    next_check = loop.time() + PARTITION_CHECK_SECONDS
                    current = await kafka.fetch_cluster_id(consumer)
                    if current != cluster:
                        # The broker came back empty: its logs are all new events.
                        cluster = current
                        logger.warning("live reader: new cluster %s, reading from start", cluster)
                        await consumer.seek_to_beginning(*assigned)
                        await self._note_positions(consumer, assigned)
                    assigned = await self._follow_new_partitions(consumer, topic, assigned)
                    await self._note_positions(consumer, assigned, only_new=True)
                batch = await consumer.getmany(timeout_ms=1000)
                items, events, positions = [], [], []
                received_end, recent = self.hub.received_end, self.hub.recent
                for records in batch.values():
                    for record in records:
                        partition, offset = record.partition, record.offset
                        received_end[partition] = offset + 1
                        try:
                            parsed = parse_record(record.value, max_bytes=settings.MAX_EVENT_BYTES)
                        except InvalidEvent:
                            continue  # the consumer groups dead-letter it; viewers never see it
                        item = encode_item(record.topic, partition, offset, record.value)
                        items.append(item)
                        events.append(parsed.event)
                        positions.append((partition, offset))
                        recent.add(partition, offset, item, parsed.time)
                self.hub.publish(items, events, positions)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.failed = True  # the next client to register starts a new reader
            logger.exception("live reader stopped")
        finally:
            if consumer is not None:
                await consumer.stop()

    async def _note_positions(
        self, consumer: AIOKafkaConsumer, assigned: list[TopicPartition], *, only_new: bool = False
    ) -> None:
        """Record where the reader stands on each partition as the hub's live line
        (from which on the hub's recent events are complete)."""
        line = self.hub.received_end
        if not only_new:
            line.clear()
            self.hub.recent.clear()
        for tp in assigned:
            if tp.partition not in line:
                line[tp.partition] = await consumer.position(tp)
                self.hub.recent.begin(tp.partition, line[tp.partition])

    @staticmethod
    async def _follow_new_partitions(
        consumer: AIOKafkaConsumer, topic: str, assigned: list[TopicPartition]
    ) -> list[TopicPartition]:
        """Add partitions created since the reader started, read from their beginning."""
        await consumer.topics()  # fresh metadata, so that new partitions show
        known = {tp.partition for tp in assigned}
        new = sorted((consumer.partitions_for_topic(topic) or set()) - known)
        if not new:
            return assigned
        positions = {tp: await consumer.position(tp) for tp in assigned}
        added = [TopicPartition(topic, partition) for partition in new]
        consumer.assign([*assigned, *added])
        for tp, position in positions.items():
            consumer.seek(tp, position)
        await consumer.seek_to_beginning(*added)
        logger.info("live reader now also reads partitions %s", new)
        return [*assigned, *added]
