"""History the broker's log no longer holds, from the analytics store: the newest
events below where the log begins, in position order, filtered, rebuilt as
valid envelopes."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from monitor.events.schema import parse_record
from monitor.live.filters import EventFilter
from monitor.live.stored_history import stored_history
from monitor.models import AnalyticsEvent

pytestmark = pytest.mark.django_db

TOPIC = "user-events"
START = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def store(partition: int, offset: int, type: str = "user.signed_up") -> AnalyticsEvent:
    n = partition * 1000 + offset
    data = {"user_id": n, "username": f"user{n}"}
    return AnalyticsEvent.objects.create(
        event_id=uuid.uuid4(),
        type=type,
        source="/test",
        subject=f"users/{n}",
        actor=str(n),
        time=START + timedelta(seconds=2 * offset + partition),
        data=data,
        topic=TOPIC,
        partition=partition,
        offset=offset,
    )


def items(history: dict[int, list[tuple[datetime, str]]]) -> list[dict[str, object]]:
    return [json.loads(item) for entries in history.values() for _, item in entries]


def test_it_takes_the_newest_events_below_the_log_in_position_order() -> None:
    for offset in range(10):
        store(0, offset)
        store(1, offset)
    history = stored_history(TOPIC, {0: 8, 1: 5}, 4, None)
    # The four newest below the log (positions from 8 and 5 on are the log's own),
    # each partition's in position order.
    assert {p: [json.loads(i)["offset"] for _, i in e] for p, e in history.items()} == {
        0: [5, 6, 7],
        1: [4],
    }


def test_the_rebuilt_envelopes_are_valid_events() -> None:
    stored = store(0, 3)
    (item,) = items(stored_history(TOPIC, {0: 5}, 10, None))
    event = item["event"]
    assert isinstance(event, dict) and event["id"] == str(stored.event_id)
    parsed = parse_record(json.dumps(event).encode(), max_bytes=10_000)
    assert parsed.event["data"] == stored.data
    assert item["partition"] == 0 and item["offset"] == 3


def test_the_filter_applies_and_nothing_is_read_when_the_log_begins_at_zero() -> None:
    store(0, 1)
    store(0, 2, type="user.signed_up")
    assert stored_history(TOPIC, {0: 0}, 10, None) == {}
    only_actor = EventFilter(actor="2")
    assert [i["event"]["actor"] for i in items(stored_history(TOPIC, {0: 9}, 10, only_actor))] == [  # type: ignore[index]
        "2"
    ]
