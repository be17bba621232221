"""The relay loop's rounds: a failing round lets its producer go and the next
round, once the broker answers, relays what is due."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaConnectionError
from django.db import transaction

from monitor.events import relay as relay_module
from monitor.events.emit import emit_event
from monitor.events.relay import OutboxRelay
from monitor.kafka import clients as kafka
from monitor.models import OutboxEvent

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_failing_round_drops_its_producer_and_a_later_round_relays(
    topics, settings, monkeypatch
) -> None:
    settings.OUTBOX_RELAY_AFTER_SECONDS = 0
    settings.EVENTS_PUBLISH_EAGERLY = False  # the relay alone publishes
    with transaction.atomic():
        emit_event(
            type="user.signed_up",
            subject="users/1",
            actor="1",
            data={"user_id": 1, "username": "ana"},
        )
    real_ensure_topics = kafka.ensure_topics
    broker = {"up": False}

    async def ensure_topics(*args: object) -> None:
        if not broker["up"]:
            raise KafkaConnectionError("the broker is down")
        await real_ensure_topics()

    real_relay_outbox = relay_module.relay_outbox

    async def relay_outbox(producer: object) -> int:
        if not broker["up"]:
            raise KafkaConnectionError("the broker is down")
        return await real_relay_outbox(producer)  # type: ignore[arg-type]

    monkeypatch.setattr(kafka, "ensure_topics", ensure_topics)
    monkeypatch.setattr(relay_module, "relay_outbox", relay_outbox)
    relay = OutboxRelay(interval=0.5)

    async def rounds() -> list[int | None]:
        results = [await relay.relay_round() for _ in range(2)]
        broker["up"] = True
        results.append(await relay.relay_round())
        started = relay._producer is not None
        broker["up"] = False
        results.append(await relay.relay_round())
        dropped = relay._producer is None
        relay.request_stop()
        await relay.run()  # stops at once
        return [*results, started, dropped]

    assert asyncio.run(rounds()) == [None, None, 1, None, True, True]
    assert not OutboxEvent.objects.filter(sent_at__isnull=True).exists()
