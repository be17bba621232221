from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from monitor.events.emit import emit_event
from monitor.kafka.embedded import free_port
from monitor.models import OutboxEvent

pytestmark = pytest.mark.django_db


def test_it_is_healthy_with_database_and_broker_up(client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] is True
    assert body["broker"]["ok"] is True
    assert body["outbox"]["unsent"] == 0
    assert body["outbox"]["oldest_unsent_age_seconds"] == 0.0
    assert body["outbox"]["ok"] is True


def test_it_answers_503_when_the_broker_is_down(client, settings) -> None:
    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{free_port()}"
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["broker"]["ok"] is False
    assert body["broker"]["error"]
    assert body["database"]["ok"] is True


def test_it_reports_the_outbox_backlog_and_turns_503_past_the_age_limit(client, settings) -> None:
    settings.OUTBOX_MAX_AGE_SECONDS = 30
    settings.EVENTS_PUBLISH_EAGERLY = False
    with transaction.atomic():
        for n in range(3):
            emit_event(
                type="user.signed_up",
                subject=f"users/{n}",
                actor=str(n),
                data={"user_id": n, "username": f"u{n}"},
            )
    young = client.get("/healthz")
    assert young.status_code == 200
    assert young.json()["outbox"]["unsent"] == 3
    assert young.json()["outbox"]["ok"] is True

    OutboxEvent.objects.update(created_at=timezone.now() - timedelta(seconds=45))
    old = client.get("/healthz")
    assert old.status_code == 503
    body = old.json()
    assert body["outbox"]["ok"] is False
    assert 44 < body["outbox"]["oldest_unsent_age_seconds"] < 60
    assert body["broker"]["ok"] and body["database"]["ok"]

    OutboxEvent.objects.update(sent_at=timezone.now())
    assert client.get("/healthz").status_code == 200
