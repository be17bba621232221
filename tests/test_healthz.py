from __future__ import annotations

import pytest

from monitor.broker import free_port

pytestmark = pytest.mark.django_db


def test_it_is_healthy_with_database_and_broker_up(client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] is True
    assert body["broker"]["ok"] is True
    assert body["outbox"] == {"unsent": 0, "oldest_unsent_age_seconds": 0.0}


def test_it_answers_503_when_the_broker_is_down(client, settings) -> None:
    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{free_port()}"
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["broker"]["ok"] is False
    assert body["broker"]["error"]
    assert body["database"]["ok"] is True
