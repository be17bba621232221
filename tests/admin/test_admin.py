"""Staff see the analytics in the admin; others do not."""

from __future__ import annotations

import pytest

from monitor.events.schema import build_event
from monitor.workers.analytics import record_batch
from monitor.workers.records import RecordedFrom

pytestmark = pytest.mark.django_db


@pytest.fixture
def recorded() -> dict:
    event = build_event(
        type="user.signed_up",
        subject="users/5",
        actor="5",
        data={"user_id": 5, "username": "bob"},
        source="/test",
    )
    record_batch([RecordedFrom(event, "user-events", 1, 41, verified=True)])
    return event


def test_it_lists_events_and_minute_counts_for_staff(admin_client, recorded) -> None:
    events = admin_client.get("/admin/monitor/analyticsevent/")
    assert events.status_code == 200
    assert recorded["id"] in events.content.decode()
    counts = admin_client.get("/admin/monitor/eventminutecount/")
    assert counts.status_code == 200
    assert "user.signed_up" in counts.content.decode()
    found = admin_client.get("/admin/monitor/analyticsevent/?q=" + recorded["id"])
    assert found.context["cl"].result_count == 1
    missing = admin_client.get(
        "/admin/monitor/analyticsevent/?q=00000000-0000-4000-8000-000000000000"
    )
    assert missing.context["cl"].result_count == 0


def test_it_keeps_pipeline_records_read_only(admin_client, recorded) -> None:
    assert admin_client.get("/admin/monitor/analyticsevent/add/").status_code == 403


def test_it_turns_away_users_who_are_not_staff(client, django_user_model, recorded) -> None:
    user = django_user_model.objects.create_user(username="plain", password="pw-plain-123")
    client.force_login(user)
    response = client.get("/admin/monitor/analyticsevent/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_a_search_that_is_not_an_event_id_still_works(admin_client, recorded) -> None:
    response = admin_client.get("/admin/monitor/analyticsevent/?q=users/5")
    assert response.status_code == 200
    assert response.context["cl"].result_count == 1
