"""A crash between publishing and marking sent: the event is delivered (perhaps
twice on the topic) and counted once."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import TopicPartition
from django.db import DatabaseError, transaction

from monitor.events import outbox
from monitor.events.emit import emit_event
from monitor.events.publisher import publisher
from monitor.events.relay import relay_outbox
from monitor.events.schema import parse_event
from monitor.events.sending import publish_rows
from monitor.kafka import clients as kafka
from monitor.models import AnalyticsEvent, EventMinuteCount, OutboxEvent
from tests.support.kafka import read_all
from tests.support.workers import IsolatedWorker, run_until_consumed

pytestmark = pytest.mark.django_db(transaction=True)


def emit_signup(n: int) -> str:
    with transaction.atomic():
        event = emit_event(
            type="user.signed_up",
            subject=f"users/{n}",
            actor=str(n),
            data={"user_id": n, "username": f"user{n}"},
        )
    return event["id"]


async def with_producer(step):  # type: ignore[no-untyped-def]
    producer = kafka.make_producer()
    await producer.start()
    try:
        return await step(producer)
    finally:
        await producer.stop()


def relay() -> int:
    return asyncio.run(with_producer(relay_outbox))


async def _topic_size(topic: str) -> int:
    consumer = kafka.make_consumer(group_id=None)
    await consumer.start()
    try:
        partitions = await kafka.wait_for_topic(consumer, topic, timeout=10)
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return sum(ends.values())
    finally:
        await consumer.stop()


def assert_on_the_topic_twice(topic: str, event_id: str) -> None:
    assert asyncio.run(_topic_size(topic)) == 2
    records = asyncio.run(read_all(topic, 2))
    assert [parse_event(record.value)["id"] for record in records] == [event_id, event_id]


def assert_counted_once(event_id: str) -> None:
    assert list(AnalyticsEvent.objects.values_list("event_id", flat=True)) == [uuid.UUID(event_id)]
    assert list(EventMinuteCount.objects.values_list("type", "count")) == [("user.signed_up", 1)]


def test_a_crash_before_marking_sent_delivers_twice_and_counts_once(topics, settings) -> None:
    topic, _ = topics
    settings.EVENTS_PUBLISH_EAGERLY = False
    settings.OUTBOX_RELAY_AFTER_SECONDS = 0
    asyncio.run(kafka.ensure_topics())
    event_id = emit_signup(1)
    row = OutboxEvent.objects.get(event_id=event_id)

    async def publish(producer) -> list[str]:  # type: ignore[no-untyped-def]
        return await publish_rows(producer, [row])

    # The broker acknowledges, then the process dies before mark_sent.
    assert asyncio.run(with_producer(publish)) == [event_id]
    row.refresh_from_db()
    assert row.sent_at is None

    # The relay cannot know it was sent: it sends it again, and marks it this time.
    assert relay() == 1
    row.refresh_from_db()
    assert row.sent_at is not None
    assert relay() == 0

    assert_on_the_topic_twice(topic, event_id)
    # Analytics reads both copies (in one batch, as after a pause) and counts one.
    asyncio.run(run_until_consumed(IsolatedWorker(), topic, 2))
    assert_counted_once(event_id)


def test_a_failed_mark_after_an_eager_publish_is_relayed_and_counted_once(
    topics, settings, monkeypatch
) -> None:
    topic, _ = topics
    settings.EVENTS_PUBLISH_EAGERLY = True
    settings.OUTBOX_RELAY_AFTER_SECONDS = 0
    asyncio.run(kafka.ensure_topics())
    real_mark_sent = outbox.mark_sent
    calls: list[list[str]] = []

    def mark_sent_failing_once(event_ids):  # type: ignore[no-untyped-def]
        ids = list(event_ids)
        calls.append(ids)
        if len(calls) == 1:
            raise DatabaseError("database is locked")
        return real_mark_sent(ids)

    monkeypatch.setattr(outbox, "mark_sent", mark_sent_failing_once)

    event_id = emit_signup(1)
    (record,) = asyncio.run(read_all(topic, 1))
    assert parse_event(record.value)["id"] == event_id
    assert publisher.wait_idle(10), "the eager publisher did not finish its round"
    assert calls == [[event_id]]
    assert OutboxEvent.objects.get(event_id=event_id).sent_at is None
    # Analytics records the first copy before the second exists.
    asyncio.run(run_until_consumed(IsolatedWorker(), topic, 1))
    assert_counted_once(event_id)

    assert relay() == 1
    assert len(calls) == 2
    assert OutboxEvent.objects.get(event_id=event_id).sent_at is not None
    assert relay() == 0

    assert_on_the_topic_twice(topic, event_id)
    # The second copy arrives in a later batch, and changes nothing.
    asyncio.run(run_until_consumed(IsolatedWorker(), topic, 1))
    assert_counted_once(event_id)
