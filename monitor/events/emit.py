"""Emitting an event: the first step of its path, where it enters the outbox.

:func:`emit_event` saves the event to the outbox in the caller's transaction,
so that "the change is saved" and "its event will be published" are one
atomic fact. Once that transaction commits, and the response (if any) has
been sent, the row is handed to the eager publisher; whatever it does not
confirm is published later by the outbox relay.
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from monitor.events.after_response import call_after_response
from monitor.events.publisher import publisher
from monitor.events.schema import Event, EventData, build_event, encode_event
from monitor.models import OutboxEvent


def emit_event(*, type: str, subject: str, actor: str, data: EventData) -> Event:
    """Save an event to the outbox inside the current transaction; publish after commit.

    Must be called inside ``transaction.atomic()`` (RuntimeError otherwise):
    the event exists exactly when the change it describes does, and nothing
    is published if the transaction rolls back. The Kafka key is the actor,
    so one user's events stay in order on one partition. ``data`` is one of
    the typed data classes (:mod:`monitor.events.event_types`), so the type
    checker sees every field an emitter writes; it is validated against
    ``type`` all the same (InvalidEvent). Returns the event as saved.
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
        # In a web request, the publisher starts once the response is sent,
        # so that its work does not slow the request down.
        transaction.on_commit(lambda: call_after_response(lambda: publisher.submit(row)))
    return event
