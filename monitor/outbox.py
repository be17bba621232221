"""The transactional outbox: "the change is saved" and "its event will be
published" are one atomic fact.

:func:`emit_event` stores the envelope in the caller's transaction and, once
that transaction commits, hands it to the in-process publisher for an eager
send. Whatever the publisher does not confirm (broker down, process killed)
stays unsent in the table, and :func:`relay_outbox` publishes it later.
A row is marked sent only after the broker acknowledged it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any
from weakref import WeakKeyDictionary

from aiokafka import AIOKafkaProducer
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import Min
from django.utils import timezone

from eventsite.serving import call_after_response

from . import kafka
from .events import Event, build_event, encode_event
from .models import OutboxEvent

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
        from .publisher import publisher

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


def due_rows(*, older_than: timedelta, limit: int) -> list[OutboxEvent]:
    """Unsent rows created before now - ``older_than``, oldest first."""
    cutoff = timezone.now() - older_than
    return list(
        OutboxEvent.objects.filter(sent_at__isnull=True, created_at__lte=cutoff).order_by(
            "created_at", "id"
        )[:limit]
    )


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


async def relay_outbox(producer: AIOKafkaProducer, *, batch_size: int = 500) -> int:
    """Publish unsent rows older than the relay delay; return how many were acknowledged."""
    older_than = timedelta(seconds=settings.OUTBOX_RELAY_AFTER_SECONDS)
    total = 0
    while True:
        rows = await sync_to_async(due_rows)(older_than=older_than, limit=batch_size)
        if not rows:
            return total
        acknowledged = await publish_rows(producer, rows)
        await sync_to_async(mark_sent)(acknowledged)
        total += len(acknowledged)
        if len(acknowledged) < len(rows):
            return total  # the broker is failing; try again on the next round
