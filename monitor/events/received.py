"""What a record read from a watched topic is: the site's own event, another
CloudEvent, or a record that is not a CloudEvent at all.

Every consumer reads records through :func:`receive`, so that all of them
agree on each record:

- the site's **own** event (``verified``): one of the site's event types,
  valid, and signed with the site's key (:mod:`monitor.events.signing`); the
  only kind the site acts on (feed updates, like counts, notices);
- any other **CloudEvent** (another service's, or one of the site's types
  that is unsigned or forged): shown and counted, never acted on;
- a **raw record** (plain text, JSON without an envelope, binary): shown as
  what it is, with a preview of its value and why it is not a CloudEvent.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from monitor.events import signing
from monitor.events.schema import Event, InvalidEvent, parse_cloudevent

# How much of a raw record's value, key and headers is shown.
PREVIEW_CHARS = 1000
KEY_CHARS = 200
HEADER_CHARS = 200
MAX_HEADERS = 20


class KafkaRecord(Protocol):
    """What :func:`receive` reads of a record: aiokafka's ConsumerRecord has it."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


@dataclass(slots=True)
class Received:
    """One record, classified. ``event`` is None for a raw record; ``reason``
    says why a raw record is not a CloudEvent, or why an event is not the
    site's own (None for the site's verified events)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int  # the broker's (or the producer's) timestamp
    event: Event | None
    verified: bool
    reason: str | None
    time: datetime  # the event's own time, else the record's timestamp; in UTC
    record: KafkaRecord

    @property
    def type(self) -> str | None:
        return self.event["type"] if self.event is not None else None

    @property
    def source(self) -> str | None:
        return self.event["source"] if self.event is not None else None


def record_time(timestamp_ms: int) -> datetime:
    return datetime.fromtimestamp(max(timestamp_ms, 0) / 1000, UTC)


def receive(record: KafkaRecord, *, max_bytes: int | None = None) -> Received:
    """Classify ``record`` (see the module's docstring); never raises for bad input."""
    timestamp = record.timestamp
    try:
        parsed = parse_cloudevent(record.value, max_bytes=max_bytes)
    except InvalidEvent as exc:
        return Received(
            record.topic,
            record.partition,
            record.offset,
            timestamp,
            None,
            False,
            exc.reason,
            record_time(timestamp),
            record,
        )
    reason = parsed.site_error or signing.check(record.value, record.headers)
    return Received(
        record.topic,
        record.partition,
        record.offset,
        timestamp,
        parsed.event,
        reason is None,
        reason,
        parsed.time or record_time(timestamp),
        record,
    )


def _shown(raw: bytes, limit: int) -> tuple[str, str]:
    """(text, encoding): UTF-8 text cut to ``limit`` characters, else base64 of
    the first bytes."""
    try:
        return raw.decode("utf-8")[:limit], "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw[: limit * 3 // 4]).decode(), "base64"


def preview(record: KafkaRecord) -> dict[str, Any]:
    """A raw record as the monitor shows it: key, headers, a bounded preview of
    the value, and its size; text as text, anything else in base64."""
    value = record.value
    shown: dict[str, Any] = {"size": None if value is None else len(value)}
    if value is not None:
        text, encoding = _shown(value, PREVIEW_CHARS)
        whole = len(text.encode()) if encoding == "utf-8" else PREVIEW_CHARS * 3 // 4
        shown.update(value=text, encoding=encoding, truncated=len(value) > whole)
    else:
        shown.update(value=None, encoding=None, truncated=False)
    shown["key"] = None if record.key is None else _shown(record.key, KEY_CHARS)[0]
    headers: dict[str, str | None] = {}
    for name, raw in list(record.headers or ())[:MAX_HEADERS]:
        headers[name[:HEADER_CHARS]] = None if raw is None else _shown(raw, HEADER_CHARS)[0]
    shown["headers"] = headers
    return shown


def encode_preview(record: KafkaRecord) -> str:
    """:func:`preview` as JSON."""
    return json.dumps(preview(record), separators=(",", ":"), ensure_ascii=False)
