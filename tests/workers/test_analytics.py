"""monitor.workers.analytics.record_batch: idempotent storage of events and per-minute counts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from monitor.events.schema import Event
from monitor.models import AnalyticsEvent, EventMinuteCount
from monitor.workers import analytics
from monitor.workers.analytics import record_batch
from monitor.workers.records import RecordedFrom
from tests.support.events import photo_event, signup_event

pytestmark = pytest.mark.django_db

MINUTE = datetime(2024, 5, 6, 7, 8, tzinfo=UTC)


def signed_up(user_id: int, *, at: datetime) -> Event:
    return signup_event(user_id, at=at)


def posted(post_id: int, *, at: datetime, author_id: int = 1) -> Event:
    return photo_event(post_id, author_id=author_id, at=at)


def delivered(
    event: Event, offset: int, *, partition: int = 0, topic: str = "user-events"
) -> RecordedFrom:
    """The site's own event (verified), as read from ``topic``."""
    return RecordedFrom(event=event, topic=topic, partition=partition, offset=offset, verified=True)


def minute_counts() -> dict[tuple[datetime, str], int]:
    """Per minute and type; every event here comes from the same source."""
    rows = EventMinuteCount.objects.all()
    assert {row.source for row in rows} <= {"/test"}
    return {(row.minute, row.type): row.count for row in rows}


def test_it_stores_an_event_delivered_twice_in_one_batch_once() -> None:
    event = signed_up(1, at=MINUTE + timedelta(seconds=5))

    new = record_batch([delivered(event, 10), delivered(event, 10)])

    assert new == 1
    assert AnalyticsEvent.objects.count() == 1
    assert minute_counts() == {(MINUTE, "user.signed_up"): 1}


def test_it_stores_an_event_delivered_again_in_a_later_batch_once() -> None:
    event = signed_up(1, at=MINUTE + timedelta(seconds=5))

    first = record_batch([delivered(event, 10)])
    second = record_batch([delivered(event, 11, partition=2)])

    assert (first, second) == (1, 0)
    assert AnalyticsEvent.objects.count() == 1
    assert minute_counts() == {(MINUTE, "user.signed_up"): 1}
    # The first delivery's position is kept.
    row = AnalyticsEvent.objects.get()
    assert (row.partition, row.offset) == (0, 10)


def test_it_counts_new_events_only_when_a_batch_mixes_old_and_new() -> None:
    old = signed_up(1, at=MINUTE)
    record_batch([delivered(old, 0)])

    new = record_batch(
        [
            delivered(old, 0),
            delivered(signed_up(2, at=MINUTE), 1),
            delivered(posted(1, at=MINUTE), 2),
        ]
    )

    assert new == 2
    assert AnalyticsEvent.objects.count() == 3
    assert minute_counts() == {(MINUTE, "user.signed_up"): 2, (MINUTE, "photo.posted"): 1}


def test_it_counts_several_events_of_two_types_in_one_minute() -> None:
    events = [
        signed_up(1, at=MINUTE),
        posted(1, at=MINUTE + timedelta(seconds=1)),
        posted(2, at=MINUTE + timedelta(seconds=30)),
        signed_up(2, at=MINUTE + timedelta(seconds=59, microseconds=999999)),
        posted(3, at=MINUTE + timedelta(seconds=59)),
    ]

    new = record_batch([delivered(event, offset) for offset, event in enumerate(events)])

    assert new == 5
    assert minute_counts() == {(MINUTE, "user.signed_up"): 2, (MINUTE, "photo.posted"): 3}


def test_it_adds_to_a_minute_already_counted_by_an_earlier_batch() -> None:
    record_batch([delivered(posted(1, at=MINUTE), 0), delivered(posted(2, at=MINUTE), 1)])

    record_batch([delivered(posted(3, at=MINUTE + timedelta(seconds=40)), 2)])

    assert minute_counts() == {(MINUTE, "photo.posted"): 3}


def test_it_counts_events_in_different_minutes_separately() -> None:
    events = [
        posted(1, at=MINUTE + timedelta(seconds=59)),
        posted(2, at=MINUTE + timedelta(minutes=1)),
        posted(3, at=MINUTE + timedelta(minutes=1, seconds=2)),
        posted(4, at=MINUTE + timedelta(hours=1)),
        signed_up(1, at=MINUTE - timedelta(seconds=1)),
    ]

    record_batch([delivered(event, offset) for offset, event in enumerate(events)])

    assert minute_counts() == {
        (MINUTE, "photo.posted"): 1,
        (MINUTE + timedelta(minutes=1), "photo.posted"): 2,
        (MINUTE + timedelta(hours=1), "photo.posted"): 1,
        (MINUTE - timedelta(minutes=1), "user.signed_up"): 1,
    }


def test_it_buckets_by_the_utc_minute_of_an_offset_time() -> None:
    # 12:38:20 at +05:30 is 07:08:20 UTC.
    local = (MINUTE + timedelta(seconds=20)).astimezone(timezone(timedelta(hours=5, minutes=30)))
    event = posted(1, at=MINUTE)
    event["time"] = local.isoformat()

    record_batch([delivered(event, 0)])

    assert minute_counts() == {(MINUTE, "photo.posted"): 1}
    assert AnalyticsEvent.objects.get().time == MINUTE + timedelta(seconds=20)


def test_it_stores_the_kafka_position_and_the_envelope() -> None:
    event = posted(42, at=MINUTE + timedelta(seconds=7, microseconds=250), author_id=9)

    record_batch([delivered(event, 123_456_789_012, partition=2, topic="user-events-test")])

    row = AnalyticsEvent.objects.get()
    assert row.event_id == uuid.UUID(event["id"])
    assert row.type == "photo.posted"
    assert row.source == "/test"
    assert row.subject == "posts/42"
    assert row.actor == "9"
    assert row.time == MINUTE + timedelta(seconds=7, microseconds=250)
    assert row.data == event["data"]
    assert row.topic == "user-events-test"
    assert row.partition == 2
    assert row.offset == 123_456_789_012
    assert row.recorded_at is not None
    assert row.verified is True
    assert row.cloudevent_id == event["id"] == row.envelope_id


def test_it_returns_zero_and_writes_nothing_for_an_empty_batch() -> None:
    assert record_batch([]) == 0
    assert AnalyticsEvent.objects.count() == 0
    assert EventMinuteCount.objects.count() == 0


def test_it_returns_zero_for_a_batch_of_only_known_events() -> None:
    events = [posted(1, at=MINUTE), signed_up(1, at=MINUTE)]
    record_batch([delivered(event, offset) for offset, event in enumerate(events)])

    assert record_batch([delivered(event, offset) for offset, event in enumerate(events)]) == 0
    assert minute_counts() == {(MINUTE, "photo.posted"): 1, (MINUTE, "user.signed_up"): 1}


def test_it_stores_a_batch_larger_than_one_insert_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analytics, "CHUNK_ROWS", 2)
    events = [posted(n, at=MINUTE + timedelta(seconds=n)) for n in range(5)]
    records = [delivered(event, n) for n, event in enumerate(events)]

    new = record_batch(records + records[:2])

    assert new == 5
    assert AnalyticsEvent.objects.count() == 5
    assert sorted(AnalyticsEvent.objects.values_list("offset", flat=True)) == [0, 1, 2, 3, 4]
    assert minute_counts() == {(MINUTE, "photo.posted"): 5}
