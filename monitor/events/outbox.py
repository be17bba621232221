"""The transactional outbox: "the change is saved" and "its event will be
published" are one atomic fact.

:func:`emit_event` stores the envelope in the caller's transaction and, once
that transaction commits, hands it to the in-process publisher for an eager
send. Whatever the publisher does not confirm (broker down, process killed)
stays unsent in the table, and :func:`relay_outbox` publishes it later.
A row is marked sent only after the broker acknowledged it.

Several relays may run at once (see :func:`relay_outbox`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any
from weakref import WeakKeyDictionary

from aiokafka import AIOKafkaProducer
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Min
from django.utils import timezone

from eventsite.serving import call_after_response
from monitor.events.schema import Event, build_event, encode_event
from monitor.kafka import clients as kafka
from monitor.models import OutboxEvent

logger = logging.getLogger(__name__)


def emit_event(*, type: str, subject: str, actor: str, data: dict[str, Any]) -> Event:
    """Save an event to the outbox inside the current transaction; publish after commit.

    Must be called inside ``transaction.atomic()``: the event exists exactly
    when the change it describes does. The Kafka key is the actor, so one
    user's events stay in order on one partition.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("emit_event must run inside transaction.atomic()")
    event = build_event(
        type=type, subject=subject, actor=actor, data=data, source=settings.EVENT_SOURCE
    )
    row = OutboxEvent.objects.create(
        event_id=event["id"],
        event_type=type,
        topic=settings.KAFKA_EVENTS_TOPIC,
        key=actor,
        payload=encode_event(event),
    )
    if settings.EVENTS_PUBLISH_EAGERLY:
        from monitor.events.publisher import publisher

        # In a web request, the publisher starts once the response is sent,
        # so that its work does not slow the request down.
        transaction.on_commit(lambda: call_after_response(lambda: publisher.submit(row)))
    return event


def mark_sent(event_ids: Iterable[str]) -> int:
    """Record the broker's acknowledgement; returns the number of rows marked."""
    ids = list(event_ids)
    if not ids:
        return 0
    return OutboxEvent.objects.filter(event_id__in=ids, sent_at__isnull=True).update(
        sent_at=timezone.now()
    )


def record_failure(event_ids: Iterable[str], error: str) -> None:
    from django.db.models import F

    OutboxEvent.objects.filter(event_id__in=list(event_ids)).update(
        attempts=F("attempts") + 1, last_error=error[:1000]
    )


def due_rows(*, older_than: timedelta, limit: int, claim: bool = False) -> list[OutboxEvent]:
    """Unsent rows created before now - ``older_than``, oldest first.

    With ``claim`` (inside ``transaction.atomic()``, on a database that can
    skip locked rows), the rows are locked until the transaction ends, and
    rows another transaction holds are left out.
    """
    cutoff = timezone.now() - older_than
    rows = OutboxEvent.objects.filter(sent_at__isnull=True, created_at__lte=cutoff)
    if claim:
        rows = rows.select_for_update(skip_locked=True)
    return list(rows.order_by("created_at", "id")[:limit])


def backlog() -> dict[str, Any]:
    """How many events wait in the outbox, and the age of the oldest in seconds."""
    unsent = OutboxEvent.objects.filter(sent_at__isnull=True)
    oldest = unsent.aggregate(oldest=Min("created_at"))["oldest"]
    age = (timezone.now() - oldest).total_seconds() if oldest else 0.0
    return {"unsent": unsent.count(), "oldest_unsent_age_seconds": round(age, 3)}


async def publish_rows(producer: AIOKafkaProducer, rows: list[OutboxEvent]) -> list[str]:
    """Send rows and wait for every acknowledgement; return the acknowledged event ids.

    Records are sent concurrently (the producer batches them); a failure of
    one leaves the others acknowledged.
    """
    expected_cluster = _cluster_of.get(producer)
    if expected_cluster is None or _topics_seen_on.get(producer) != expected_cluster:
        # First send of this producer, or the first since the broker came back
        # empty: make sure the topics exist there before sending. The embedded
        # broker acknowledges records for a topic that does not exist yet, and
        # such records can be lost when the topic is then created.
        expected_cluster = _cluster_of[producer] = await kafka.fetch_cluster_id(producer)
        topics = {row.topic for row in rows} | {
            settings.KAFKA_EVENTS_TOPIC,
            settings.KAFKA_DLQ_TOPIC,
        }
        await kafka.ensure_topics(sorted(topics))
        _topics_seen_on[producer] = expected_cluster
    futures = []
    for row in rows:
        futures.append(
            (
                str(row.event_id),
                await producer.send(row.topic, bytes(row.payload), key=row.key.encode()),
            )
        )
    acknowledged, failed, error = [], [], ""
    for event_id, future in futures:
        try:
            await future
            acknowledged.append(event_id)
        except Exception as exc:  # noqa: BLE001 - any send failure leaves the row unsent
            failed.append(event_id)
            error = f"{type(exc).__name__}: {exc}"
    if acknowledged and not await _same_cluster(producer, expected_cluster):
        # Sent before the broker came back empty, acknowledged after: such
        # retried batches are not reliably readable on the new cluster. Leave
        # them unsent; the relay sends them again and consumers deduplicate.
        failed, acknowledged = failed + acknowledged, []
        error = "the broker was replaced by an empty one during the send"
    if failed:
        logger.warning("%d events not acknowledged: %s", len(failed), error)
        await sync_to_async(record_failure)(failed, error)
    return acknowledged


# The cluster each producer last confirmed it was talking to, and the cluster
# on which it last made sure the topics exist.
_cluster_of: WeakKeyDictionary[AIOKafkaProducer, str | None] = WeakKeyDictionary()
_topics_seen_on: WeakKeyDictionary[AIOKafkaProducer, str | None] = WeakKeyDictionary()


async def _same_cluster(producer: AIOKafkaProducer, expected: str | None) -> bool:
    """Whether the broker is still the cluster ``expected``; remembers the answer."""
    try:
        current = await kafka.fetch_cluster_id(producer)
    except Exception:  # noqa: BLE001 - cannot tell: the acknowledgements stand
        return True
    _cluster_of[producer] = current
    return current == expected


# How long a relay may wait for the broker while it holds a claimed batch:
# the batch's rows stay locked, and their transaction open, until then.
CLAIM_PUBLISH_TIMEOUT_SECONDS = 30.0


async def relay_outbox(producer: AIOKafkaProducer, *, batch_size: int = 500) -> int:
    """Publish unsent rows older than the relay delay; return how many were acknowledged.

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
    if await sync_to_async(_can_skip_locked)():
        relay_batch = sync_to_async(_relay_claimed_batch)
    else:
        relay_batch = _relay_batch
    total = 0
    while True:
        claimed, acknowledged = await relay_batch(producer, older_than, batch_size)
        total += acknowledged
        if acknowledged < claimed or claimed == 0:
            # Nothing left, or the broker is failing: try again on the next round.
            return total


def _can_skip_locked() -> bool:
    # A sync call: on some backends the answer asks the server for its version.
    return bool(connection.features.has_select_for_update_skip_locked)


async def _relay_batch(
    producer: AIOKafkaProducer, older_than: timedelta, limit: int
) -> tuple[int, int]:
    """Read, publish and mark one batch; returns (rows read, rows acknowledged)."""
    rows = await sync_to_async(due_rows)(older_than=older_than, limit=limit)
    if not rows:
        return 0, 0
    acknowledged = await publish_rows(producer, rows)
    await sync_to_async(mark_sent)(acknowledged)
    return len(rows), len(acknowledged)


def _relay_claimed_batch(
    producer: AIOKafkaProducer, older_than: timedelta, limit: int
) -> tuple[int, int]:
    """Claim, publish and mark one batch in one transaction; returns (rows
    claimed, rows acknowledged). Runs in a thread; the sends run on the
    caller's event loop."""
    with transaction.atomic():
        rows = due_rows(older_than=older_than, limit=limit, claim=True)
        if not rows:
            return 0, 0
        acknowledged = async_to_sync(_publish_claimed)(producer, rows)
        mark_sent(acknowledged)
    return len(rows), len(acknowledged)


async def _publish_claimed(producer: AIOKafkaProducer, rows: list[OutboxEvent]) -> list[str]:
    # On timeout the transaction rolls back and the rows are due again; any
    # that reached the broker meanwhile are published twice, and deduplicated.
    return await asyncio.wait_for(publish_rows(producer, rows), CLAIM_PUBLISH_TIMEOUT_SECONDS)
