"""Subscription filters of the event stream, evaluated on the server.

A client of ``/ws/events/`` may send ``{"type": "subscribe", "filter": {...}}``
with any of:

- ``types``: a list of event types, any type of any source (not only the
  site's); an event matches if its type is one of them;
- ``topics``: a list of topics; an item matches if it was read from one;
- ``kind``: ``event`` (CloudEvents only) or ``record`` (only records that are
  not CloudEvents);
- ``verified``: ``true`` for the site's own signed events only, ``false`` for
  everything else;
- ``actor``: the actor id, matched exactly;
- ``subject``: the subject (``posts/12``), matched exactly;
- ``text``: matched, case-insensitively, inside the string values of ``data``
  (of a record that is not a CloudEvent: inside its value's preview).

An item matches a filter when it matches every part given; an empty filter
matches everything. ``types``, ``actor`` and ``subject`` only ever match
CloudEvents. A new subscribe replaces the filter of the connection.

What a client may see at all is a part of its filter it cannot change:
``public_only`` (every client that is not staff) lets through only the site's
own verified events of the types the feed shows (:data:`PUBLIC_TYPES`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from monitor.events.event_types import PUBLIC_TYPES

MAX_TEXT = 200
MAX_ID = 200
MAX_NAMES = 100  # types or topics in one filter
KINDS = ("event", "record")
FIELDS = {"types", "topics", "kind", "verified", "actor", "subject", "text"}


class BadFilter(ValueError):
    """The filter a client sent is not one this server understands; the message says why."""


@dataclass(frozen=True)
class EventFilter:
    types: frozenset[str] = frozenset()
    topics: frozenset[str] = frozenset()
    kind: str | None = None
    verified: bool | None = None
    actor: str | None = None
    subject: str | None = None
    text: str | None = None  # lower-cased
    public_only: bool = False  # set by the server, never by a client

    @classmethod
    def from_message(cls, value: Any) -> EventFilter:
        """The filter described by a subscribe message's ``filter``; raise BadFilter."""
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise BadFilter("filter must be an object")
        unknown = set(value) - FIELDS
        if unknown:
            raise BadFilter(f"unknown filter fields: {', '.join(sorted(unknown))}")
        kind = value.get("kind")
        if kind is not None and kind not in KINDS:
            raise BadFilter(f"kind must be one of: {', '.join(KINDS)}")
        verified = value.get("verified")
        if verified is not None and not isinstance(verified, bool):
            raise BadFilter("verified must be true or false")
        return cls(
            types=_names(value, "types", "event types"),
            topics=_names(value, "topics", "topic names"),
            kind=kind,
            verified=verified,
            actor=_string(value, "actor", MAX_ID),
            subject=_string(value, "subject", MAX_ID),
            text=(_string(value, "text", MAX_TEXT) or "").lower() or None,
        )

    @property
    def matches_everything(self) -> bool:
        return self == EventFilter()

    def matches(self, view: Mapping[str, Any]) -> bool:
        """Whether the item whose view is ``view`` (see :mod:`monitor.live.items`) passes."""
        if self.topics and view["topic"] not in self.topics:
            return False
        if self.verified is not None and view["verified"] is not self.verified:
            return False
        event = view.get("event")
        if event is None:
            if self.public_only or self.kind == "event" or self.types:
                return False
            if self.actor is not None or self.subject is not None:
                return False
            return self.text is None or _contains(view["record"].get("value"), self.text)
        if self.kind == "record":
            return False
        if self.public_only and not (view["verified"] and event["type"] in PUBLIC_TYPES):
            return False
        if self.types and event["type"] not in self.types:
            return False
        if self.actor is not None and event.get("actor") != self.actor:
            return False
        if self.subject is not None and event.get("subject") != self.subject:
            return False
        return self.text is None or _contains(event.get("data"), self.text)

    def describe(self) -> dict[str, Any]:
        """The filter as the server understood it, for the ``subscribed`` answer
        (what the server sets for the client is not part of it)."""
        described = {
            key: value
            for key, value in asdict(self).items()
            if value not in (None, frozenset()) and key != "public_only"
        }
        for name in ("types", "topics"):
            if name in described:
                described[name] = sorted(described[name])
        return described


def _names(value: dict[str, Any], key: str, what: str) -> frozenset[str]:
    names = value.get(key) or []
    if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
        raise BadFilter(f"{key} must be a list of {what}")
    if len(names) > MAX_NAMES or any(len(name) > MAX_ID for name in names):
        raise BadFilter(f"{key} is limited to {MAX_NAMES} names of {MAX_ID} characters")
    return frozenset(names)


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
