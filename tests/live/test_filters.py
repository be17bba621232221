"""monitor.live.filters: what a subscription lets through, and what it refuses."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from monitor.live.filters import BadFilter, EventFilter
from tests.support.events import photo_event, signup_event


def view(
    event: dict[str, Any], *, verified: bool = True, topic: str = "user-events"
) -> dict[str, Any]:
    """What filters read of an item (see monitor.live.items)."""
    return {"topic": topic, "verified": verified, "event": event}


POSTED = view(photo_event(3, author_id=7, caption="Sunset at the PIER"))
SIGNED_UP = view(signup_event(7))
FOREIGN = view(
    {
        "specversion": "1.0",
        "id": "A-1",
        "source": "/shop",
        "type": "order.placed",
        "data": {"sku": "PIER-7"},
    },
    verified=False,
    topic="orders",
)
FORGED = view(photo_event(4, author_id=7), verified=False)
RAW = {
    "topic": "orders",
    "verified": False,
    "record": {
        "key": None,
        "headers": {},
        "value": "User signed up at the pier",
        "encoding": "utf-8",
        "size": 26,
        "truncated": False,
    },
}


def test_an_empty_filter_lets_everything_through() -> None:
    for description in (None, {}, {"types": [], "actor": "", "text": None}):
        event_filter = EventFilter.from_message(description)
        assert event_filter.matches_everything
        assert event_filter.matches(POSTED) and event_filter.matches(SIGNED_UP)
        assert event_filter.describe() == {}


@pytest.mark.parametrize(
    ("description", "posted", "signed_up"),
    [
        ({"types": ["photo.posted"]}, True, False),
        ({"types": ["photo.posted", "user.signed_up"]}, True, True),
        ({"actor": "7"}, True, True),
        ({"actor": 7}, True, True),
        ({"actor": "8"}, False, False),
        ({"subject": "posts/3"}, True, False),
        ({"text": "pier"}, True, False),  # case-insensitive, in data's string values
        ({"text": "USER7"}, True, True),  # the author in one, the username in the other
        ({"text": "caption"}, False, False),  # keys are not searched
        ({"types": ["photo.posted"], "text": "sunset", "actor": "7"}, True, False),
        ({"types": ["photo.posted"], "actor": "8"}, False, False),  # every part must match
    ],
)
def test_it_lets_through_what_matches_every_part(
    description: dict[str, Any], posted: bool, signed_up: bool
) -> None:
    event_filter = EventFilter.from_message(description)
    assert event_filter.matches(POSTED) is posted
    assert event_filter.matches(SIGNED_UP) is signed_up


@pytest.mark.parametrize(
    ("description", "reason"),
    [
        ("photo.posted", "filter must be an object"),
        ({"types": "photo.posted"}, "types must be a list"),
        ({"types": [""]}, "types must be a list"),
        ({"types": ["t"] * 101}, "types is limited to 100 names"),
        ({"topics": "orders"}, "topics must be a list"),
        ({"kind": "raw"}, "kind must be one of: event, record"),
        ({"verified": "yes"}, "verified must be true or false"),
        ({"types": [1]}, "types must be a list"),
        ({"actor": ["7"]}, "actor must be a string"),
        ({"subject": True}, "subject must be a string"),
        ({"text": "x" * 201}, "text is limited to 200 characters"),
        ({"colour": "red"}, "unknown filter fields: colour"),
    ],
)
def test_it_refuses_a_filter_it_does_not_understand(description: Any, reason: str) -> None:
    with pytest.raises(BadFilter, match=reason):
        EventFilter.from_message(description)


def test_it_describes_the_filter_it_understood() -> None:
    event_filter = EventFilter.from_message(
        {"types": ["user.signed_up", "photo.posted"], "text": "PIER", "actor": 7}
    )
    assert event_filter.describe() == {
        "types": ["photo.posted", "user.signed_up"],
        "actor": "7",
        "text": "pier",
    }


def test_a_type_the_site_does_not_know_is_accepted_and_matched() -> None:
    event_filter = EventFilter.from_message({"types": ["order.placed"]})
    assert event_filter.matches(FOREIGN)
    assert not event_filter.matches(POSTED) and not event_filter.matches(RAW)


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ({}, {"POSTED", "SIGNED_UP", "FOREIGN", "FORGED", "RAW"}),
        ({"topics": ["orders"]}, {"FOREIGN", "RAW"}),
        ({"kind": "record"}, {"RAW"}),
        ({"kind": "event"}, {"POSTED", "SIGNED_UP", "FOREIGN", "FORGED"}),
        ({"verified": True}, {"POSTED", "SIGNED_UP"}),
        ({"verified": False}, {"FOREIGN", "FORGED", "RAW"}),
        ({"text": "pier"}, {"POSTED", "FOREIGN", "RAW"}),  # a raw record's value preview too
        ({"actor": "7"}, {"POSTED", "SIGNED_UP", "FORGED"}),  # never a raw record
    ],
)
def test_it_tells_apart_topics_kinds_and_the_site_s_own(
    description: dict[str, Any], expected: set[str]
) -> None:
    event_filter = EventFilter.from_message(description)
    items = {
        "POSTED": POSTED,
        "SIGNED_UP": SIGNED_UP,
        "FOREIGN": FOREIGN,
        "FORGED": FORGED,
        "RAW": RAW,
    }
    assert {name for name, item in items.items() if event_filter.matches(item)} == expected


def test_a_public_filter_lets_through_only_the_site_s_own_feed_events() -> None:
    public = dataclasses.replace(EventFilter(), public_only=True)
    assert public.matches(POSTED)
    # Not the feed's (a sign-up), not signed (forged), not the site's, not an event.
    assert not any(public.matches(item) for item in (SIGNED_UP, FORGED, FOREIGN, RAW))
    # What the client asked for narrows it further; it cannot widen it.
    asked = dataclasses.replace(EventFilter.from_message({"verified": False}), public_only=True)
    assert not asked.matches(FORGED) and not asked.matches(POSTED)
    assert public.describe() == {}
