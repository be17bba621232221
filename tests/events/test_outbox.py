"""The outbox: events saved with the change, published eagerly after commit,
and re-published by the relay when that did not happen."""

from __future__ import annotations

import asyncio
import time

import pytest
from django.db import transaction

from monitor.events.emit import emit_event
from monitor.events.relay import relay_outbox
from monitor.events.schema import parse_event
from monitor.kafka import clients as kafka
from monitor.models import OutboxEvent
from tests.support.kafka import read_all

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def topic(topics) -> str:
    asyncio.run(kafka.ensure_topics())
    return topics[0]


def emit_signups(count: int) -> list[str]:
    ids = []
    with transaction.atomic():
        for n in range(count):
            event = emit_event(
                type="user.signed_up",
                subject=f"users/{n}",
                actor=str(n),
                data={"user_id": n, "username": f"u{n}"},
            )
            ids.append(event["id"])
    return ids


def test_it_refuses_to_emit_outside_a_transaction() -> None:
    with pytest.raises(RuntimeError, match="transaction.atomic"):
        emit_event(
            type="user.signed_up",
            subject="users/1",
            actor="1",
            data={"user_id": 1, "username": "x"},
        )
    assert not OutboxEvent.objects.exists()


def test_it_emits_nothing_when_the_transaction_rolls_back(settings) -> None:
    settings.EVENTS_PUBLISH_EAGERLY = False
    with pytest.raises(ValueError), transaction.atomic():
        emit_event(
            type="user.signed_up",
            subject="users/1",
            actor="1",
            data={"user_id": 1, "username": "x"},
        )
        raise ValueError("the change failed")
    assert not OutboxEvent.objects.exists()


def test_the_relay_publishes_unsent_rows_and_marks_them_sent(topic, settings) -> None:
    settings.EVENTS_PUBLISH_EAGERLY = False
    settings.OUTBOX_RELAY_AFTER_SECONDS = 0
    ids = emit_signups(25)
    assert OutboxEvent.objects.filter(sent_at__isnull=True).count() == 25

    async def relay() -> int:
        producer = kafka.make_producer()
        await producer.start()
        try:
            return await relay_outbox(producer, batch_size=10)
        finally:
            await producer.stop()

    assert asyncio.run(relay()) == 25
    assert not OutboxEvent.objects.filter(sent_at__isnull=True).exists()
    records = asyncio.run(read_all(topic, 25))
    assert sorted(parse_event(r.value)["id"] for r in records) == sorted(ids)
    # Keyed by actor: each record's key is its event's actor.
    assert all(r.key.decode() == parse_event(r.value)["actor"] for r in records)
    # A second round finds nothing left to send.
    assert asyncio.run(relay()) == 0


def test_the_relay_leaves_fresh_rows_to_the_eager_path(topic, settings) -> None:
    settings.EVENTS_PUBLISH_EAGERLY = False
    settings.OUTBOX_RELAY_AFTER_SECONDS = 60
    emit_signups(3)

    async def relay() -> int:
        producer = kafka.make_producer()
        await producer.start()
        try:
            return await relay_outbox(producer)
        finally:
            await producer.stop()

    assert asyncio.run(relay()) == 0
    assert OutboxEvent.objects.filter(sent_at__isnull=True).count() == 3


def test_it_publishes_eagerly_after_commit(topic) -> None:
    ids = emit_signups(5)
    deadline = time.monotonic() + 10
    while OutboxEvent.objects.filter(sent_at__isnull=True).exists():
        assert time.monotonic() < deadline, "eager publish did not mark the rows sent"
        time.sleep(0.05)
    records = asyncio.run(read_all(topic, 5))
    assert sorted(parse_event(r.value)["id"] for r in records) == sorted(ids)
