"""The outbox relay: the second chance of an event's path to Kafka.

It publishes the outbox rows that eager publishing did not confirm (broker
down, process killed, a mark that failed) once they are older than
``OUTBOX_RELAY_AFTER_SECONDS``, so that every saved event reaches Kafka at
least once; consumers deduplicate by event id. :func:`relay_outbox` is one
pass over the due rows; :class:`OutboxRelay` is the loop ``manage.py
relay_outbox`` runs.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from aiokafka import AIOKafkaProducer
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.db import close_old_connections, transaction

from monitor.events import outbox
from monitor.events.sending import publish_rows
from monitor.kafka import clients as kafka
from monitor.models import OutboxEvent

logger = logging.getLogger(__name__)

# How long a relay may wait for the broker while it holds a claimed batch:
# the batch's rows stay locked, and their transaction open, until then.
CLAIM_PUBLISH_TIMEOUT_SECONDS = 30.0


async def relay_outbox(producer: AIOKafkaProducer, *, batch_size: int = 500) -> int:
    """Publish unsent rows older than the relay delay; return how many were acknowledged.

    Batches go oldest first until none is left, or until a batch is not
    fully acknowledged (the broker is failing: the next pass tries again).

    Several relays may run at once. On a database that can skip locked rows
    (PostgreSQL), each relay claims a batch with ``SELECT ... FOR UPDATE SKIP
    LOCKED`` and publishes it and marks it sent before its transaction ends:
    no other relay sees those rows as due, so the relays publish each row
    once. SQLite has no row locks, and a transaction there would hold the
    whole database's write lock while the broker answers; so there a batch
    is read, published and marked sent in three steps, and two relays may
    both publish a row: each row is published at least once, and consumers
    deduplicate by event id. Either way a row is marked sent only once
    acknowledged; a relay that dies before marking leaves it due again.
    """
    older_than = timedelta(seconds=settings.OUTBOX_RELAY_AFTER_SECONDS)
    if await sync_to_async(outbox.can_claim_rows)():
        relay_batch = sync_to_async(_relay_claimed_batch)
    else:
        relay_batch = _relay_batch
    total = 0
    while True:
        found, acknowledged = await relay_batch(producer, older_than, batch_size)
        total += acknowledged
        if acknowledged < found or found == 0:
            return total


async def _relay_batch(
    producer: AIOKafkaProducer, older_than: timedelta, limit: int
) -> tuple[int, int]:
    """Read, publish and mark one batch; returns (rows read, rows acknowledged)."""
    rows = await sync_to_async(outbox.due_rows)(older_than=older_than, limit=limit)
    if not rows:
        return 0, 0
    acknowledged = await publish_rows(producer, rows)
    await sync_to_async(outbox.mark_sent)(acknowledged)
    return len(rows), len(acknowledged)


def _relay_claimed_batch(
    producer: AIOKafkaProducer, older_than: timedelta, limit: int
) -> tuple[int, int]:
    """Claim, publish and mark one batch in one transaction; returns (rows
    claimed, rows acknowledged). Runs in a thread; the sends run on the
    caller's event loop."""
    with transaction.atomic():
        rows = outbox.due_rows(older_than=older_than, limit=limit, claim=True)
        if not rows:
            return 0, 0
        acknowledged = async_to_sync(_publish_claimed)(producer, rows)
        outbox.mark_sent(acknowledged)
    return len(rows), len(acknowledged)


async def _publish_claimed(producer: AIOKafkaProducer, rows: list[OutboxEvent]) -> list[str]:
    # On timeout the transaction rolls back and the rows are due again; any
    # that reached the broker meanwhile are published twice, and deduplicated.
    return await asyncio.wait_for(publish_rows(producer, rows), CLAIM_PUBLISH_TIMEOUT_SECONDS)


class OutboxRelay:
    """Relays due outbox rows every ``interval`` seconds until asked to stop; a
    failed round is tried again, with a new producer, after the same interval."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._stop = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None

    def request_stop(self) -> None:
        """Stop after the round in hand; safe to call from a signal handler."""
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            await self.relay_round()
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval)
            except TimeoutError:
                pass
        producer, self._producer = self._producer, None
        await kafka.stop_quietly(producer)

    async def relay_round(self) -> int | None:
        """Relay what is due; returns how many events were acknowledged, or None
        if the round failed (logged; the producer is dropped, and the next round
        starts a new one)."""
        try:
            if self._producer is None:
                # A new producer (the first, or after a failed round: a broker that
                # restarted empty) makes sure of the topics, with their partitions,
                # before anything is sent to them; later sends check the cluster
                # (monitor.events.sending).
                await kafka.ensure_topics()
                self._producer = kafka.make_producer()
                await self._producer.start()
            # A connection lost while idle (a database restart) is replaced,
            # in the thread the relay's queries run in.
            await sync_to_async(close_old_connections)()
            sent = await relay_outbox(self._producer)
        except Exception as exc:  # noqa: BLE001 - retried on the next round
            logger.warning("outbox relay round failed: %s", exc)
            producer, self._producer = self._producer, None
            await kafka.stop_quietly(producer)
            return None
        if sent:
            logger.info("relayed %d outbox events", sent)
        return sent
