from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from django.db import transaction
from django.test import AsyncClient
from django.utils import timezone

from monitor.events.emit import emit_event
from monitor.kafka.embedded import free_port
from monitor.live import hub as fanout
from monitor.live.hub import FanoutHub
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


def test_it_shows_the_live_reader_of_this_process_ok_while_none_runs(client) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json()["live_reader"] == {
        "ok": True,
        "trouble": None,
        "behind": None,
        "seconds_behind": 0.0,
        "seconds_since_advance": 0.0,
        "reason": None,
        "running": False,
        "skip": None,
    }


def test_it_answers_503_naming_a_live_reader_that_cannot_reach_the_broker(
    settings, monkeypatch
) -> None:
    fresh = FanoutHub()
    monkeypatch.setattr(fanout, "hub", fresh)
    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{free_port()}"

    async def scenario():
        with pytest.raises(ConnectionError):
            await fresh.ensure_reader(timeout=20)
        return await AsyncClient().get("/healthz")

    response = asyncio.run(scenario())

    assert response.status_code == 503
    reader = response.json()["live_reader"]
    assert reader["ok"] is False and reader["running"] is True
    assert reader["trouble"] == "broker_silent" and reader["behind"] is None
    assert reader["reason"] == "the live reader cannot reach the broker: it stopped on an error"
