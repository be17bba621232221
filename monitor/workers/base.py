"""Consumer-group workers: poll a batch, make it durable, then commit.

Each worker is a small class on :class:`BatchWorker`. The loop is a chain of
steps a test can call one by one:

1. :meth:`BatchWorker.split` validates the records;
2. :meth:`BatchWorker.dead_letter` sends the invalid ones, bytes unchanged,
   to the dead-letter topic and waits for the broker's acknowledgement;
3. :meth:`BatchWorker.make_durable` runs the worker's ``consume_batch`` and
   records the dead letters, in one database transaction, retrying with
   backoff while the database fails;
4. only then, and only once the broker is known to be the cluster the
   batch was read from (:meth:`BatchWorker.check_same_cluster`), are the
   batch's offsets committed.

Steps 2 to 4 of one batch (:meth:`BatchWorker.finish`) run while the next
batch is polled and validated; batches are still made durable and committed
one at a time, in the order they were polled, and no batch is committed
after one that could not be made durable.

A crash anywhere before the commit means the batch is read again, which the
idempotent ``consume_batch`` absorbs. A rebalance waits for the batch in hand
(see :class:`FinishBatchOnRevoke`). A stop request only sets a flag: the
batches already polled are finished and committed first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

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
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
    transaction,
)

from monitor.events.schema import InvalidEvent, parse_record
from monitor.kafka import clients as kafka
from monitor.workers.analytics import RecordedFrom, record_batch
from monitor.workers.deadletters import DeadRecord, record_dead_letters

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
        await self.worker.settle()
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
        # The batch being finished while the next one is polled, if any.
        self.in_hand: asyncio.Task[bool] | None = None
        # Database work runs on one thread, so that its connection is kept
        # between batches (DATABASE_CONN_MAX_AGE): opening one per batch cost
        # as much as writing the batch.
        self._database_thread: ThreadPoolExecutor | None = None

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
                await self.consume()
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
        await self._close_database()

    async def consume(self) -> None:
        """Poll and finish batches until stopped.

        Each batch is validated while the one before it is being finished
        (written and committed). A batch is handed on only once the one before
        it is committed, so writes and commits keep the polling order; if a
        batch could not be made durable (a stop while the database is down),
        the batch polled after it is dropped, uncommitted. A batch that fails
        (a replaced cluster, a broker error) ends the loop with its error.
        """
        assert self.consumer is not None
        try:
            while not self.stopping:
                batch = await self.consumer.getmany(
                    timeout_ms=self.poll_timeout_ms, max_records=settings.ANALYTICS_BATCH_SIZE
                )
                split = self.split(batch) if batch else None
                # The batch in hand is waited for when the next one is ready, or
                # as soon as it is done: its failure ends the loop within a poll
                # even if no record follows.
                if self.in_hand is not None and (batch or self.in_hand.done()):
                    if not await self.in_hand:
                        break
                    self.in_hand = None
                if split is not None:
                    self.in_hand = asyncio.create_task(self.finish(batch, *split))
        finally:
            # Whatever ended the loop, the batch in hand is finished first.
            last = self.in_hand
            if last is not None:
                await asyncio.wait([last])
                self.in_hand = None
        if last is not None:
            await last  # its failure, if any, is this loop's failure

    async def settle(self) -> None:
        """Wait until the batch in hand is committed, or has failed. Never raises."""
        if self.in_hand is not None:
            await asyncio.wait([self.in_hand])

    async def handle(self, batch: Batch) -> bool:
        """Validate, make durable and commit one batch; True once committed."""
        return await self.finish(batch, *self.split(batch))

    async def finish(self, batch: Batch, valid: list[RecordedFrom], dead: list[DeadRecord]) -> bool:
        """Make a split batch durable, then commit it; True once committed.

        The broker is asked for its cluster id while the batch is written; the
        commit waits for the answer. Dead letters wait for it before they are
        sent, so that records read from a replaced cluster are not listed.
        """
        async with self.batch_lock:
            same_cluster = asyncio.create_task(self.check_same_cluster())
            try:
                if dead:
                    await same_cluster
                    await self.dead_letter(dead)
                if not await self.make_durable(valid, dead):
                    return False  # stopping while the database is down: commit nothing
                await same_cluster
            finally:
                if not same_cluster.done():
                    same_cluster.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await same_cluster
            await self.commit(batch)
            return True

    async def check_same_cluster(self) -> None:
        """Raise BrokerReplaced if the broker is no longer the cluster we joined.

        The metadata is fetched afresh: a broker that restarted on the same
        address does not make the client refresh it by itself, and a batch
        read from the new cluster at the old positions must not be committed.
        It is asked over the producer's connection: on the consumer's, the
        request would queue behind a fetch that waits up to
        ``fetch_max_wait_ms`` for new records.
        """
        current = await kafka.fetch_cluster_id(self.producer or self.consumer)
        if current is not None and self.cluster_id is not None and current != self.cluster_id:
            raise kafka.BrokerReplaced(f"cluster {self.cluster_id} was replaced by {current}")

    def split(self, batch: Batch) -> tuple[list[RecordedFrom], list[DeadRecord]]:
        valid: list[RecordedFrom] = []
        dead: list[DeadRecord] = []
        max_bytes = settings.MAX_EVENT_BYTES
        for records in batch.values():
            for record in records:
                try:
                    event, event_id, time = parse_record(record.value, max_bytes=max_bytes)
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
                        event_id,
                        time,
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
                await self._in_database_thread(self._write, valid, dead)
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
                await self._in_database_thread(self._write, [record], [])
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
        close_old_connections()  # one past DATABASE_CONN_MAX_AGE or found unusable
        try:
            with transaction.atomic():
                if valid:
                    self.consume_batch(valid)
                if dead:
                    record_dead_letters(self.group_id, dead)
        except BaseException:
            # Whatever failed, the next attempt starts on a fresh connection
            # (a lost one would fail again).
            with contextlib.suppress(DatabaseError):
                connection.close()
            raise

    async def _in_database_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        if self._database_thread is None:
            self._database_thread = ThreadPoolExecutor(1, thread_name_prefix=f"{self.group_id}-db")
        call = sync_to_async(function, thread_sensitive=False, executor=self._database_thread)
        return await call(*args)

    async def _close_database(self) -> None:
        """Close the database thread's connection, then the thread."""
        if self._database_thread is None:
            return
        with contextlib.suppress(DatabaseError):
            # Looked up inside that thread: ``connection`` is per thread, and
            # ``connection.close`` taken here would close this thread's instead.
            await self._in_database_thread(_close_connection)
        self._database_thread.shutdown(wait=False)
        self._database_thread = None

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


async def _stop_client(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    try:
        await client.stop()
    except Exception:  # noqa: BLE001
        logger.debug("client stop failed", exc_info=True)


def _close_connection() -> None:
    connection.close()
