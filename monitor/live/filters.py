"""Subscription filters of the event stream, evaluated on the server.

A client of ``/ws/events/`` may send ``{"type": "subscribe", "filter": {...}}``
with any of:

- ``types``: a list of event types; an event matches if its type is one of them;
- ``actor``: the actor id, matched exactly;
- ``subject``: the subject (``posts/12``), matched exactly;
- ``text``: matched, case-insensitively, inside the string values of ``data``.

An event matches a filter when it matches every part given; an empty filter
matches everything. A new subscribe replaces the filter of the connection.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from monitor.events.schema import EVENT_TYPES, Event

MAX_TEXT = 200
MAX_ID = 200


class BadFilter(ValueError):
    """The filter a client sent is not one this server understands; the message says why."""


@dataclass(frozen=True)
class EventFilter:
    types: frozenset[str] = frozenset()
    actor: str | None = None
    subject: str | None = None
    text: str | None = None  # lower-cased

    @classmethod
    def from_message(cls, value: Any) -> EventFilter:
        """The filter described by a subscribe message's ``filter``; raise BadFilter."""
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise BadFilter("filter must be an object")
        unknown = set(value) - {"types", "actor", "subject", "text"}
        if unknown:
            raise BadFilter(f"unknown filter fields: {', '.join(sorted(unknown))}")
        types = value.get("types") or []
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise BadFilter("types must be a list of event types")
        not_known = sorted(set(types) - EVENT_TYPES)
        if not_known:
            raise BadFilter(f"unknown event types: {', '.join(not_known)}")
        return cls(
            types=frozenset(types),
            actor=_string(value, "actor", MAX_ID),
            subject=_string(value, "subject", MAX_ID),
            text=(_string(value, "text", MAX_TEXT) or "").lower() or None,
        )

    @property
    def matches_everything(self) -> bool:
        return self == EventFilter()

    def matches(self, event: Event) -> bool:
        if self.types and event["type"] not in self.types:
            return False
        if self.actor is not None and event["actor"] != self.actor:
            return False
        if self.subject is not None and event["subject"] != self.subject:
            return False
        return self.text is None or _contains(event.get("data"), self.text)

    def describe(self) -> dict[str, Any]:
        """The filter as the server understood it, for the ``subscribed`` answer."""
        described = {key: value for key, value in asdict(self).items() if value}
        if self.types:
            described["types"] = sorted(self.types)
        return described


def _string(value: dict[str, Any], key: str, limit: int) -> str | None:
    text = value.get(key)
    if text is None or text == "":
        return None
    if not isinstance(text, str | int) or isinstance(text, bool):
        raise BadFilter(f"{key} must be a string")
    text = str(text)
    if len(text) > limit:
        raise BadFilter(f"{key} is limited to {limit} characters")
    return text


def _contains(data: Any, needle: str) -> bool:
    """Whether ``needle`` (lower-cased) occurs in any string value within ``data``."""
    if isinstance(data, str):
        return needle in data.lower()
    if isinstance(data, dict):
        return any(_contains(value, needle) for value in data.values())
    if isinstance(data, list):
        return any(_contains(value, needle) for value in data)
    return False
