"""Consumer-group workers: poll a batch, make it durable, then commit.

Each worker is a small class on :class:`BatchWorker`. The loop is a chain of
steps a test can call one by one:

1. :meth:`BatchWorker.split` validates the records;
2. :meth:`BatchWorker.dead_letter` sends the invalid ones, bytes unchanged,
   to the dead-letter topic and waits for the broker's acknowledgement;
3. :meth:`BatchWorker.make_durable` runs the worker's ``consume_batch`` and
   records the dead letters, in one database transaction, retrying with
   backoff while the database fails;
4. only then are the batch's offsets committed.

A crash anywhere before the commit means the batch is read again, which the
idempotent ``consume_batch`` absorbs. A rebalance waits for the batch in hand
(see :class:`FinishBatchOnRevoke`). A stop request only sets a flag: the
current batch finishes and is committed first.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping, Sequence

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import CommitFailedError, KafkaError
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, transaction

from . import kafka
from .analytics import RecordedFrom, record_batch
from .deadletters import DeadRecord, record_dead_letters
from .events import InvalidEvent, parse_event
from .outbox import relay_outbox

logger = logging.getLogger(__name__)

Batch = Mapping[TopicPartition, Sequence[ConsumerRecord]]
# Errors that say "the database is unavailable now" (down, locked, connection
# lost), as opposed to "the database refuses this data".
TRANSIENT_DB_ERRORS = (OperationalError, InterfaceError)


class FinishBatchOnRevoke(ConsumerRebalanceListener):
    """Before partitions move to another member, finish and commit the batch in hand."""

    def __init__(self, worker: BatchWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.worker.batch_lock:
            logger.info("%s: partitions revoked %s", self.worker.group_id, sorted(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        logger.info("%s: partitions assigned %s", self.worker.group_id, sorted(assigned))


class BatchWorker:
    group_id: str = ""
    poll_timeout_ms = 500

    def __init__(self) -> None:
        self.stopping = False
        self._stop_requested = asyncio.Event()
        self.batch_lock = asyncio.Lock()
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.cluster_id: str | None = None

    def request_stop(self) -> None:
        self.stopping = True
        self._stop_requested.set()

    def consume_batch(self, records: list[RecordedFrom]) -> None:
        """Make the batch durable. Runs in a thread inside a transaction; must be
        idempotent by event id."""
        raise NotImplementedError

    async def run(self) -> None:
        """Poll and handle batches until stopped; reconnect after broker failures."""
        while await self.start():
            try:
                assert self.consumer is not None
                while not self.stopping:
                    batch = await self.consumer.getmany(
                        timeout_ms=self.poll_timeout_ms, max_records=settings.ANALYTICS_BATCH_SIZE
                    )
                    if batch:
                        await self.handle(batch)
                return
            except kafka.BrokerReplaced as exc:
                # Positions from the old cluster mean nothing on the new one: a
                # fresh consumer starts from the new cluster's committed offsets.
                logger.warning("%s: %s; starting over with a fresh consumer", self.group_id, exc)
            except KafkaError as exc:
                logger.warning("%s: broker failure, reconnecting: %s", self.group_id, exc)
            finally:
                await self.close()
            await self._sleep(1.0)

    async def start(self) -> bool:
        """Connect, retrying with backoff; False if a stop came first."""
        delay = 0.2
        while not self.stopping:
            try:
                await kafka.ensure_topics()
                self.consumer = kafka.make_consumer(
                    group_id=self.group_id,
                    session_timeout_ms=settings.KAFKA_SESSION_TIMEOUT_MS,
                    heartbeat_interval_ms=max(1000, settings.KAFKA_SESSION_TIMEOUT_MS // 5),
                )
                self.consumer.subscribe(
                    [settings.KAFKA_EVENTS_TOPIC], listener=FinishBatchOnRevoke(self)
                )
                self.producer = kafka.make_producer(
                    max_request_size=settings.DLQ_MAX_RECORD_BYTES + 64 * 1024
                )
                await self.consumer.start()
                await self.producer.start()
                self.cluster_id = kafka.cluster_id(self.consumer)
                logger.info("%s worker connected to cluster %s", self.group_id, self.cluster_id)
                return True
            except Exception as exc:  # noqa: BLE001 - the broker may not be up yet
                logger.warning("%s worker cannot connect yet: %s", self.group_id, exc)
                await self.close()
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)
        return False

    async def close(self) -> None:
        for client in (self.consumer, self.producer):
            if client is not None:
                await _stop_client(client)
        self.consumer = self.producer = None

    async def handle(self, batch: Batch) -> None:
        async with self.batch_lock:
            await self.check_same_cluster()
            valid, dead = self.split(batch)
            if dead:
                await self.dead_letter(dead)
            if not await self.make_durable(valid, dead):
                return  # stopping while the database is down: commit nothing
            await self.commit(batch)

    async def check_same_cluster(self) -> None:
        """Raise BrokerReplaced if the broker is no longer the cluster we joined.

        The metadata is fetched afresh: a broker that restarted on the same
        address does not make the client refresh it by itself, and a batch
        read from the new cluster at the old positions must not be committed.
        """
        current = await kafka.fetch_cluster_id(self.consumer)
        if current is not None and self.cluster_id is not None and current != self.cluster_id:
            raise kafka.BrokerReplaced(f"cluster {self.cluster_id} was replaced by {current}")

    def split(self, batch: Batch) -> tuple[list[RecordedFrom], list[DeadRecord]]:
        valid: list[RecordedFrom] = []
        dead: list[DeadRecord] = []
        for records in batch.values():
            for record in records:
                try:
                    event = parse_event(record.value, max_bytes=settings.MAX_EVENT_BYTES)
                except InvalidEvent as exc:
                    dead.append(DeadRecord.of(record, exc.reason))
                    continue
                valid.append(
                    RecordedFrom(
                        event,
                        record.topic,
                        record.partition,
                        record.offset,
                        record.key,
                        record.value,
                    )
                )
        return valid, dead

    async def dead_letter(self, dead: list[DeadRecord]) -> None:
        """Send each invalid record to the DLQ topic; wait for the acknowledgements."""
        assert self.producer is not None
        futures = []
        for record in dead:
            logger.warning(
                "%s: dead-lettering %s[%d]@%d: %s",
                self.group_id,
                record.topic,
                record.partition,
                record.offset,
                record.reason,
            )
            value, headers = record.for_topic(self.group_id, settings.DLQ_MAX_RECORD_BYTES)
            futures.append(
                await self.producer.send(
                    settings.KAFKA_DLQ_TOPIC, value, key=record.key, headers=headers
                )
            )
        await asyncio.gather(*futures)

    async def make_durable(self, valid: list[RecordedFrom], dead: list[DeadRecord]) -> bool:
        """Write the batch, retrying with backoff while the database is unavailable.

        A record the database refuses for good (bad data, not a lost
        connection or a lock) is dead-lettered instead, so it cannot stall its
        partition. Returns False only if a stop was requested while the
        database was unavailable.
        """
        delay = 0.1
        attempt = 0
        while True:
            attempt += 1
            try:
                await sync_to_async(self._write, thread_sensitive=False)(valid, dead)
                if attempt > 1:
                    logger.info("%s: database back after %d attempts", self.group_id, attempt)
                return True
            except TRANSIENT_DB_ERRORS as exc:
                if self.stopping:
                    return False
                logger.warning(
                    "%s: database write failed (attempt %d), retrying in %.1fs: %s",
                    self.group_id,
                    attempt,
                    delay,
                    exc,
                )
            except Exception as exc:  # noqa: BLE001 - refused for good: find the culprits
                logger.warning(
                    "%s: batch refused (%s); writing records one by one", self.group_id, exc
                )
                valid, dead = await self._isolate_refused(valid, dead)
                continue
            await self._sleep(delay)
            delay = min(delay * 2, settings.WORKER_DB_RETRY_MAX_SECONDS)

    async def _isolate_refused(
        self, valid: list[RecordedFrom], dead: list[DeadRecord]
    ) -> tuple[list[RecordedFrom], list[DeadRecord]]:
        """Try each record alone; those refused for good become dead letters.

        Returns the batch to write again: the accepted records (idempotent,
        so writing them twice is harmless) and the dead letters, old and new.
        A transient error here propagates to make_durable's retry.
        """
        accepted: list[RecordedFrom] = []
        refused: list[DeadRecord] = []
        for record in valid:
            try:
                await sync_to_async(self._write, thread_sensitive=False)([record], [])
                accepted.append(record)
            except TRANSIENT_DB_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001
                reason = f"could not be stored: {type(exc).__name__}: {exc}"[:1000]
                refused.append(DeadRecord.from_event(record, reason))
        if refused:
            await self.dead_letter(refused)
        return accepted, [*dead, *refused]

    def _write(self, valid: list[RecordedFrom], dead: list[DeadRecord]) -> None:
        close_old_connections()  # drops a connection broken by an earlier failure
        with transaction.atomic():
            if valid:
                self.consume_batch(valid)
            if dead:
                record_dead_letters(self.group_id, dead)

    async def commit(self, batch: Batch) -> None:
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
        assert self.consumer is not None
        try:
            await self.consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group rebalanced mid-batch; the partitions' new owner reads the
            # batch again and the idempotent write absorbs it.
            logger.warning("%s: commit after rebalance refused: %s", self.group_id, exc)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop_requested.wait(), seconds)
        except TimeoutError:
            pass


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
                # Every round: a broker that restarted empty gets its topics back
                # (with their partitions) before anything is sent to them.
                await kafka.ensure_topics()
                if producer is None:
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
