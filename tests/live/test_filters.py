"""monitor.live.filters: what a subscription lets through, and what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from monitor.live.filters import BadFilter, EventFilter
from tests.support.events import photo_event, signup_event

POSTED = photo_event(3, author_id=7, caption="Sunset at the PIER")
SIGNED_UP = signup_event(7)


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
        ({"types": ["photo.exploded"]}, "unknown event types: photo.exploded"),
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
