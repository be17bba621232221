"""Consumer-group workers: poll a batch, process it durably, then commit.

Each worker is a small class on :class:`BatchWorker`. The loop is a chain of
steps a test can call one by one: :meth:`BatchWorker.split` validates the
records, :meth:`BatchWorker.dead_letter` sends the invalid ones to the
dead-letter topic (and waits for the broker), :meth:`BatchWorker.consume_batch`
does the worker's durable work, and only then are the offsets committed. A
crash anywhere before the commit means the batch is read again, which the
idempotent ``consume_batch`` absorbs. A stop request only sets a flag; the
current batch finishes and is committed first.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

from . import kafka
from .analytics import RecordedFrom, record_batch
from .events import InvalidEvent, parse_event
from .outbox import relay_outbox

logger = logging.getLogger(__name__)

Batch = Mapping[TopicPartition, Sequence[ConsumerRecord]]


class BatchWorker:
    group_id: str = ""
    poll_timeout_ms = 500

    def __init__(self) -> None:
        self.stopping = False
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None

    def request_stop(self) -> None:
        self.stopping = True

    def consume_batch(self, records: list[RecordedFrom]) -> None:
        """Make the batch durable. Runs in a thread; must be idempotent by event id."""
        raise NotImplementedError

    async def run(self) -> None:
        if not await self.start():
            return
        try:
            while not self.stopping:
                batch = await self.consumer.getmany(
                    timeout_ms=self.poll_timeout_ms, max_records=settings.ANALYTICS_BATCH_SIZE
                )
                if batch:
                    await self.handle(batch)
        finally:
            await self.close()

    async def start(self) -> bool:
        """Connect, retrying with backoff; False if a stop came first."""
        delay = 0.2
        while not self.stopping:
            try:
                await kafka.ensure_topics()
                self.consumer = kafka.make_consumer(
                    settings.KAFKA_EVENTS_TOPIC, group_id=self.group_id
                )
                self.producer = kafka.make_producer()
                await self.consumer.start()
                await self.producer.start()
                logger.info("%s worker connected", self.group_id)
                return True
            except Exception as exc:  # noqa: BLE001 - the broker may not be up yet
                logger.warning("%s worker cannot connect yet: %s", self.group_id, exc)
                await self.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        return False

    async def close(self) -> None:
        for client in (self.consumer, self.producer):
            if client is not None:
                await _stop_client(client)
        self.consumer = self.producer = None

    async def handle(self, batch: Batch) -> None:
        valid, dead = self.split(batch)
        if dead:
            await self.dead_letter(dead)
        if valid:
            await sync_to_async(self._consume_in_thread, thread_sensitive=False)(valid)
        await self.consumer.commit(
            {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
        )

    def split(self, batch: Batch) -> tuple[list[RecordedFrom], list[tuple[ConsumerRecord, str]]]:
        valid: list[RecordedFrom] = []
        dead: list[tuple[ConsumerRecord, str]] = []
        for records in batch.values():
            for record in records:
                try:
                    event = parse_event(record.value, max_bytes=settings.MAX_EVENT_BYTES)
                except InvalidEvent as exc:
                    dead.append((record, exc.reason))
                    continue
                valid.append(RecordedFrom(event, record.topic, record.partition, record.offset))
        return valid, dead

    async def dead_letter(self, dead: list[tuple[ConsumerRecord, str]]) -> None:
        """Send each invalid record, bytes unchanged, to the DLQ; wait for the acks."""
        futures = []
        for record, reason in dead:
            logger.warning(
                "dead-lettering %s[%d]@%d: %s",
                record.topic,
                record.partition,
                record.offset,
                reason,
            )
            headers = [
                ("dlq.reason", reason.encode()),
                ("dlq.topic", record.topic.encode()),
                ("dlq.partition", str(record.partition).encode()),
                ("dlq.offset", str(record.offset).encode()),
                ("dlq.group", self.group_id.encode()),
            ]
            futures.append(
                await self.producer.send(
                    settings.KAFKA_DLQ_TOPIC, record.value, key=record.key, headers=headers
                )
            )
        await asyncio.gather(*futures)

    def _consume_in_thread(self, records: list[RecordedFrom]) -> None:
        close_old_connections()
        self.consume_batch(records)


class AnalyticsWorker(BatchWorker):
    """Stores every event once (by event id) and the per-minute counts."""

    group_id = "analytics"

    def consume_batch(self, records: list[RecordedFrom]) -> None:
        new = record_batch(records)
        logger.debug("analytics recorded %d new of %d events", new, len(records))


class OutboxRelay:
    """Publishes outbox rows that the eager path did not confirm, every ``interval`` seconds."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        producer: AIOKafkaProducer | None = None
        while not self._stop.is_set():
            try:
                if producer is None:
                    await kafka.ensure_topics()
                    producer = kafka.make_producer()
                    await producer.start()
                sent = await relay_outbox(producer)
                if sent:
                    logger.info("relayed %d outbox events", sent)
            except Exception as exc:  # noqa: BLE001 - retried on the next round
                logger.warning("outbox relay round failed: %s", exc)
                if producer is not None:
                    await _stop_client(producer)
                    producer = None
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval)
            except TimeoutError:
                pass
        if producer is not None:
            await _stop_client(producer)


async def _stop_client(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    try:
        await client.stop()
    except Exception:  # noqa: BLE001
        logger.debug("client stop failed", exc_info=True)


def run_until_stopped(worker: BatchWorker | OutboxRelay) -> None:
    """Run a worker in a fresh event loop; SIGINT or SIGTERM asks it to stop."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, worker.request_stop)
        await worker.run()

    asyncio.run(main())
