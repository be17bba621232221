"""The recent events a web process keeps for replays."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from monitor.live.filters import EventFilter
from monitor.live.recent import RecentEvents

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def add(
    recent: RecentEvents,
    partition: int,
    offset: int,
    *,
    kind: str = "user.signed_up",
    second: int = 0,
) -> None:
    event = {
        "type": kind,
        "actor": "1",
        "subject": "users/1",
        "data": {"n": f"{partition}@{offset}"},
    }
    item = json.dumps({"partition": partition, "offset": offset, "event": event})
    recent.add(partition, offset, item, T0 + timedelta(seconds=second))


def names(items: list[str] | None) -> list[str] | None:
    """Which events these are, by the partition@offset each was added with."""
    return None if items is None else [json.loads(item)["event"]["data"]["n"] for item in items]


def test_it_holds_each_partition_from_where_the_reader_began() -> None:
    recent = RecentEvents(10)
    recent.begin(0, 5)
    recent.begin(1, 0)
    add(recent, 0, 5)
    assert recent.holds(0, 5) and recent.holds(0, 6)
    assert not recent.holds(0, 4)
    assert not recent.holds(2, 0)  # a partition the reader never began


def test_evicting_the_oldest_moves_its_partition_start() -> None:
    recent = RecentEvents(3)
    recent.begin(0, 0)
    recent.begin(1, 0)
    for offset, partition in [(0, 0), (0, 1), (1, 0), (2, 0)]:
        add(recent, partition, offset)
    assert not recent.holds(0, 0) and recent.holds(0, 1)
    assert recent.holds(1, 0)
    add(recent, 1, 1)
    assert not recent.holds(1, 0) and recent.holds(1, 1)


def test_after_returns_what_is_past_each_position_through_the_filter() -> None:
    recent = RecentEvents(10)
    recent.begin(0, 0)
    recent.begin(1, 0)
    add(recent, 0, 0)
    add(recent, 1, 0, kind="photo.posted")
    add(recent, 0, 1, kind="photo.posted")
    add(recent, 1, 1)
    assert names(recent.after({0: 1, 1: 0}, None)) == ["1@0", "0@1", "1@1"]
    only_photos = EventFilter(types=frozenset({"photo.posted"}))
    assert names(recent.after({0: 0, 1: 1}, only_photos)) == ["0@1"]


def test_last_orders_by_event_time_and_keeps_partition_order() -> None:
    recent = RecentEvents(10)
    recent.begin(0, 0)
    recent.begin(1, 0)
    add(recent, 0, 0, second=1)
    add(recent, 1, 0, second=3)
    add(recent, 0, 1, second=2)
    add(recent, 1, 1, second=4)
    assert names(recent.last(3, None)) == ["0@1", "1@0", "1@1"]
    assert names(recent.last(10, None)) == ["0@0", "0@1", "1@0", "1@1"]  # the whole log is held


def test_last_chooses_by_event_time_not_by_arrival() -> None:
    # The live reader may receive one partition's batch before another's older one:
    # the latest by time are chosen, as a replay from the broker chooses them.
    recent = RecentEvents(10)
    recent.begin(0, 0)
    recent.begin(1, 0)
    add(recent, 1, 0, second=2, kind="photo.posted")
    add(recent, 1, 1, second=4, kind="photo.posted")
    add(recent, 0, 0, second=1, kind="photo.posted")
    add(recent, 0, 1, second=3, kind="photo.posted")
    add(recent, 0, 2, second=5)
    photos = EventFilter(types=frozenset({"photo.posted"}))
    assert names(recent.last(3, photos)) == ["1@0", "0@1", "1@1"]
    assert names(recent.last(2, None)) == ["1@1", "0@2"]


def test_last_says_when_older_events_may_exist_elsewhere() -> None:
    recent = RecentEvents(10)
    recent.begin(0, 40)
    add(recent, 0, 40)
    assert names(recent.last(1, None)) == ["0@40"]
    assert recent.last(2, None) is None


def test_keeping_nothing_holds_nothing() -> None:
    recent = RecentEvents(0)
    recent.begin(0, 0)
    add(recent, 0, 0)
    assert not recent.holds(0, 0) and recent.holds(0, 1)
    assert names(recent.after({0: 0}, None)) == []
