"""The event envelope: CloudEvents 1.0 in structured JSON mode, built,
encoded and parsed here and nowhere else.

Every event on the ``user-events`` topic is one JSON object with the
CloudEvents context attributes, two extension attributes of ours
(``schemaversion`` and ``actor``) and a ``data`` object whose shape depends on
``type`` (one class per type in :mod:`monitor.events.event_types`). Producers
build envelopes with :func:`build_event`; consumers accept bytes only through
:func:`parse_event` (or :func:`parse_record`), which either returns a valid
envelope or raises :class:`InvalidEvent` with a reason fit for a dead-letter
record.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

from monitor.events.event_types import DATA_FIELDS, EVENT_TYPES, Event, EventData

__all__ = [
    "CONTENT_TYPE",
    "DATA_FIELDS",
    "EVENT_TYPES",
    "REQUIRED_STRINGS",
    "SCHEMA_VERSION",
    "SPEC_VERSION",
    "Event",
    "EventData",
    "InvalidEvent",
    "ParsedEvent",
    "CloudEvent",
    "build_event",
    "decode_value",
    "encode_event",
    "format_time",
    "parse_cloudevent",
    "parse_event",
    "parse_record",
    "parse_time",
    "validate_event",
]

SPEC_VERSION = "1.0"
SCHEMA_VERSION = 1
CONTENT_TYPE = "application/json"

REQUIRED_STRINGS = ("specversion", "id", "source", "type", "time", "subject", "actor")


class InvalidEvent(ValueError):
    """Raised for input that is not a valid envelope; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a ``Z`` suffix."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# RFC 3339 section 5.6 date-time; fromisoformat alone also takes other ISO 8601 forms.
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})?")


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 timestamp that carries an offset; return it in UTC."""
    match = RFC3339.fullmatch(text)
    if match is None:
        raise InvalidEvent(f"time is not an RFC 3339 timestamp: {text[:64]!r}")
    if match.group(2) is None:
        raise InvalidEvent("time has no UTC offset")
    fraction = match.group(1) or ""
    # Python keeps microseconds: trim nanosecond precision rather than reject it.
    normal = text[:19] + fraction[:7] + text[19 + len(fraction) :]
    try:
        moment = datetime.fromisoformat(normal.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidEvent(f"time is not a valid date and time: {text[:64]!r}") from None
    return moment.astimezone(UTC)


def build_event(
    *,
    type: str,
    subject: str,
    actor: str,
    data: Mapping[str, Any],
    source: str,
    time: datetime | None = None,
    id: uuid.UUID | None = None,
) -> Event:
    """A new, validated envelope holding a copy of ``data``. Raises InvalidEvent
    if ``data`` does not fit ``type``.

    ``data`` is any mapping, so that a test can build what no emitter may;
    emitters pass the type's own TypedDict (an :data:`EventData`).
    """
    event: Event = {
        "specversion": SPEC_VERSION,
        "id": str(id or uuid.uuid4()),
        "source": source,
        "type": type,
        "time": format_time(time or datetime.now(UTC)),
        "subject": subject,
        "datacontenttype": CONTENT_TYPE,
        "schemaversion": SCHEMA_VERSION,
        "actor": actor,
        "data": dict(data),
    }
    validate_event(event)
    return event


def encode_event(event: Event) -> bytes:
    """Compact UTF-8 JSON; the bytes that go on the topic."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


class ParsedEvent(NamedTuple):
    """A valid envelope, with the id and time that validating it parsed."""

    event: Event
    id: uuid.UUID
    time: datetime  # in UTC


def parse_event(raw: bytes | None, *, max_bytes: int | None = None) -> Event:
    """Decode and validate one record value; raise InvalidEvent with a reason."""
    return parse_record(raw, max_bytes=max_bytes).event


def parse_record(raw: bytes | None, *, max_bytes: int | None = None) -> ParsedEvent:
    """:func:`parse_event`, keeping the parsed id and time for a consumer that needs them."""
    event = decode_value(raw, max_bytes=max_bytes)
    return ParsedEvent(event, *validate_event(event))


def decode_value(raw: bytes | None, *, max_bytes: int | None = None) -> Any:
    """A record value's JSON, decoded as strictly as a database stores it; raise
    InvalidEvent with a reason for anything else."""
    if raw is None:
        raise InvalidEvent("record has no value")
    if max_bytes is not None and len(raw) > max_bytes:
        raise InvalidEvent(f"record is {len(raw)} bytes, over the limit of {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"value is not UTF-8: {exc.reason} at byte {exc.start}") from None
    if text.startswith("\ufeff"):
        # json.loads refuses a byte order mark; its decoder alone does not.
        raise InvalidEvent("value is not JSON: Unexpected UTF-8 BOM (decode using utf-8-sig) at 0")
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise InvalidEvent(f"value is not JSON: {exc.msg} at {exc.pos}") from None
    if "\\ud" in text or "\\uD" in text:
        # json.loads accepts escaped lone surrogates, which no database can store.
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidEvent("value has an unpaired UTF-16 surrogate escape") from None
    return value


class CloudEvent(NamedTuple):
    """Any CloudEvents 1.0 envelope, of any type and source: what the monitor
    shows and analytics counts. ``site_error`` is None when it is also a
    valid event of one of the site's own types (:func:`validate_event`),
    else why it is not."""

    event: Event
    time: datetime | None  # in UTC; None if the envelope has no time
    site_error: str | None


def parse_cloudevent(raw: bytes | None, *, max_bytes: int | None = None) -> CloudEvent:
    """Decode any CloudEvent (structured JSON mode); raise InvalidEvent with a
    reason if ``raw`` is not one. Beyond the specification's required
    attributes, ``time`` must be RFC 3339 and ``subject`` a string where given."""
    decoded: dict[str, Any] = decode_value(raw, max_bytes=max_bytes)
    if not isinstance(decoded, dict):
        raise InvalidEvent("value is not a CloudEvent: not a JSON object")
    if "specversion" not in decoded:
        raise InvalidEvent("value is not a CloudEvent: no specversion")
    if decoded["specversion"] != SPEC_VERSION:
        raise InvalidEvent(f"unsupported specversion {str(decoded['specversion'])[:16]!r}")
    for name in ("id", "source", "type"):
        value = decoded.get(name)
        if not isinstance(value, str) or not value:
            raise InvalidEvent(f"{name} is missing or not a non-empty string")
    for name in ("subject", "datacontenttype", "time"):
        if name in decoded and not isinstance(decoded[name], str):
            raise InvalidEvent(f"{name} is not a string")
    envelope = cast(Event, decoded)
    moment = parse_time(envelope["time"]) if "time" in envelope else None
    if envelope["type"] not in EVENT_TYPES:
        return CloudEvent(envelope, moment, "not one of the site's event types")
    try:
        _, moment = validate_event(envelope)
        site_error = None
    except InvalidEvent as exc:
        site_error = exc.reason
    return CloudEvent(envelope, moment, site_error)


def _reject_constant(name: str) -> object:
    raise InvalidEvent(f"value is not JSON: {name} is not allowed")


# One decoder for every record: json.loads with an option builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def validate_event(event: Any) -> tuple[uuid.UUID, datetime]:
    """Check an envelope's attributes and its data against its type; return its
    id and time (in UTC), parsed."""
    if not isinstance(event, dict):
        raise InvalidEvent("envelope is not a JSON object")
    for name in REQUIRED_STRINGS:
        value = event.get(name)
        if not isinstance(value, str) or not value:
            raise InvalidEvent(f"{name} is missing or not a non-empty string")
    if event["specversion"] != SPEC_VERSION:
        raise InvalidEvent(f"unsupported specversion {event['specversion']!r}")
    version = event.get("schemaversion")
    if type(version) is not int:
        raise InvalidEvent("schemaversion is missing or not an integer")
    if version != SCHEMA_VERSION:
        raise InvalidEvent(f"unsupported schemaversion {version}")
    try:
        event_id = uuid.UUID(event["id"])
    except ValueError:
        raise InvalidEvent(f"id is not a UUID: {event['id'][:64]!r}") from None
    moment = parse_time(event["time"])
    if event.get("datacontenttype", CONTENT_TYPE) != CONTENT_TYPE:
        raise InvalidEvent(f"unsupported datacontenttype {event['datacontenttype']!r}")
    fields = DATA_FIELDS.get(event["type"])
    if fields is None:
        raise InvalidEvent(f"unknown event type {event['type'][:64]!r}")
    data = event.get("data")
    if not isinstance(data, dict):
        raise InvalidEvent("data is missing or not a JSON object")
    for name, kind in fields.items():
        value = data.get(name)
        # bool is an int in Python but not in the schema.
        if not isinstance(value, kind) or isinstance(value, bool):
            raise InvalidEvent(f"data.{name} is missing or not of type {kind.__name__}")
    return event_id, moment
