"""Consumer-group workers: poll a batch, make it durable, then commit.

Each worker is a small class on :class:`BatchWorker` that names its group
(:mod:`monitor.workers.groups`) and writes a batch (``consume_batch``). The
loop is a chain of steps a test can call one by one:

1. :meth:`BatchWorker.split` validates the records
   (:func:`~monitor.workers.records.split_records`), but for re-driven
   ones meant for other groups (:mod:`monitor.workers.held`);
2. :meth:`BatchWorker.dead_letter` sends the invalid ones, bytes unchanged,
   to the dead-letter topic and waits for the broker's acknowledgement;
3. :meth:`BatchWorker.make_durable` runs the worker's ``consume_batch`` and
   lists the dead letters, in one database transaction, retrying with
   backoff while the database is unavailable;
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

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from channels.db import database_sync_to_async
from django.conf import settings

from monitor.events.epochs import bases_of
from monitor.kafka import clients as kafka
from monitor.runtime.backoff import Backoff
from monitor.workers.deadletters import RECORD_OVERHEAD_BYTES, send_dead_letters
from monitor.workers.durable import DurableWriter
from monitor.workers.held import at_positions
from monitor.workers.records import Batch, DeadRecord, RecordedFrom, split_records

logger = logging.getLogger(__name__)


class FinishBatchOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
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
    """The loop every consumer group runs; a subclass sets ``group_id`` and
    writes a batch in ``consume_batch``."""

    group_id: str = ""
    poll_timeout_ms = 500

    def __init__(self) -> None:
        self.stopping = False
        self._stop_requested = asyncio.Event()
        self.batch_lock = asyncio.Lock()
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.cluster = kafka.ClusterWatch()
        # The batch being finished while the next one is polled, if any.
        self.in_hand: asyncio.Task[bool] | None = None
        self.durable = DurableWriter(self)
        # Per partition of the events topic: what makes the broker's offsets
        # positions on the stream, and the last offset handed on.
        self.bases: dict[int, int] = {}
        self._last_offsets: dict[int, int] = {}

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
                while True:
                    try:
                        await self.consume()
                        return
                    except kafka.BrokerReplaced as exc:
                        logger.warning("%s: %s; reading the new cluster", self.group_id, exc)
                        await self.start_over()
            except KafkaError as exc:
                logger.warning("%s: broker failure, reconnecting: %s", self.group_id, exc)
            finally:
                await self.close()
            await self.wait_unless_stopped(1.0)

    async def start_over(self) -> None:
        """Positions from the old cluster mean nothing on the new one (an empty
        broker, or the embedded broker rolled over once every group had read all
        it held): read each partition from the new cluster's committed offset,
        or its beginning. The consumer stays in its group, so no rebalance
        waits for a member that left."""
        assert self.consumer is not None
        for tp in self.consumer.assignment():
            committed = await self.consumer.committed(tp)
            if committed is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, committed)

    async def start(self) -> bool:
        """Connect, retrying with backoff; False if a stop came first."""
        backoff = Backoff(0.2, 5.0)
        while not self.stopping:
            try:
                await self._connect()
                return True
            except Exception as exc:  # noqa: BLE001 - the broker may not be up yet
                logger.warning("%s worker cannot connect yet: %s", self.group_id, exc)
                await self.close()
                await self.wait_unless_stopped(backoff.next())
        return False

    async def _connect(self) -> None:
        """Create the topics if missing, join the group, and watch the cluster joined."""
        await kafka.ensure_topics()
        self.consumer = kafka.make_consumer(
            group_id=self.group_id,
            session_timeout_ms=settings.KAFKA_SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=max(1000, settings.KAFKA_SESSION_TIMEOUT_MS // 5),
        )
        self.consumer.subscribe([settings.KAFKA_EVENTS_TOPIC], listener=FinishBatchOnRevoke(self))
        # A dead letter may be an oversize record, cut to DLQ_MAX_RECORD_BYTES: room for it.
        self.producer = kafka.make_producer(
            max_request_size=settings.DLQ_MAX_RECORD_BYTES + RECORD_OVERHEAD_BYTES
        )
        await self.consumer.start()
        await self.producer.start()
        self.cluster = kafka.ClusterWatch(kafka.cluster_id(self.consumer))
        await self._follow_bases()
        logger.info("%s worker connected to cluster %s", self.group_id, self.cluster.cluster_id)

    async def close(self) -> None:
        """Stop the Kafka clients and the database thread. Never raises."""
        await kafka.stop_quietly(self.consumer, self.producer)
        self.consumer = self.producer = None
        await self.durable.close()

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
                if dead or self._went_back(batch):
                    # Offsets that went back: a new cluster, most likely, whose
                    # positions differ; nothing is written before it is known.
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

        A batch read from a new cluster at the old positions must not be
        committed. The broker is asked over the producer's connection: on the
        consumer's, the request would queue behind a fetch that waits up to
        ``fetch_max_wait_ms`` for new records.
        """
        joined = self.cluster.cluster_id
        if await self.cluster.moved(self.producer or self.consumer):
            await self._follow_bases()
            raise kafka.BrokerReplaced(
                f"cluster {joined} was replaced by {self.cluster.cluster_id}"
            )

    def split(self, batch: Batch) -> tuple[list[RecordedFrom], list[DeadRecord]]:
        """The batch's valid events and its dead records, at their positions on the
        stream and in the batch's order (step 1 in the module's text)."""
        mine = self.durable.held.hold(batch, self.group_id, self.bases)
        valid, dead = split_records(mine, max_bytes=settings.MAX_EVENT_BYTES, bases=self.bases)
        return valid, at_positions(dead, self.bases)

    async def _follow_bases(self) -> None:
        """Positions from now on are those of the cluster watched (see monitor.kafka.shift)."""
        bases = await database_sync_to_async(bases_of)(self.cluster.cluster_id)
        self.bases = bases.get(settings.KAFKA_EVENTS_TOPIC, {})
        self._last_offsets.clear()

    def _went_back(self, batch: Batch) -> bool:
        """Whether a partition's first offset in ``batch`` is not past the last one
        seen before (remembering the batch's last offsets)."""
        back = False
        for tp, records in batch.items():
            if records:
                back = back or records[0].offset <= self._last_offsets.get(tp.partition, -1)
                self._last_offsets[tp.partition] = records[-1].offset
        return back

    async def dead_letter(self, dead: list[DeadRecord]) -> None:
        """Send each invalid record to the DLQ topic; wait for the acknowledgements."""
        assert self.producer is not None
        await send_dead_letters(self.producer, self.group_id, dead)

    async def make_durable(self, valid: list[RecordedFrom], dead: list[DeadRecord]) -> bool:
        """Write the batch and list its dead letters in one transaction, retrying
        while the database is unavailable; False only if a stop was requested
        meanwhile (see :class:`~monitor.workers.durable.DurableWriter`)."""
        return await self.durable.write(valid, dead)

    async def commit(self, batch: Batch) -> None:
        """Commit the offsets after the batch's last record of each partition."""
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
        assert self.consumer is not None
        try:
            await self.consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group rebalanced mid-batch; the partitions' new owner reads the
            # batch again and the idempotent write absorbs it.
            logger.warning("%s: commit after rebalance refused: %s", self.group_id, exc)

    async def wait_unless_stopped(self, seconds: float) -> None:
        """Wait ``seconds``, or less if a stop is requested meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_requested.wait(), seconds)
