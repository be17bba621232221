"""The analytics writer: events from the topic into the ORM.

:func:`record_batch` is idempotent by event id. It inserts the batch with
``INSERT ... ON CONFLICT (event_id) DO NOTHING RETURNING event_id`` and adds
only the rows that were really inserted to the per-minute counts, so a
redelivered event changes nothing, even when two workers race on it.
SQLite (3.35+) and PostgreSQL both speak this dialect.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model
from django.utils import timezone

from .events import Event, parse_time
from .models import AnalyticsEvent, EventMinuteCount

# Rows per INSERT statement: 11 parameters each stays under SQLite's limit of
# 32,766 bound variables (PostgreSQL allows 65,535).
CHUNK_ROWS = 2500


@dataclass(frozen=True, slots=True)
class RecordedFrom:
    """An event with the Kafka position it was read from."""

    event: Event
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    raw: bytes | None = None  # the record's value as read, when it was read from Kafka
    # The event's id and time as validating it parsed them; None: parsed again here.
    event_id: uuid.UUID | None = None
    time: datetime | None = None


def record_batch(records: Sequence[RecordedFrom]) -> int:
    """Store a batch in one transaction; return how many events were new.

    The events must be valid envelopes (as :func:`~monitor.events.parse_event`
    returns them): their values go to the database without further checks.
    """
    unique: dict[uuid.UUID, RecordedFrom] = {}
    for record in records:
        event_id = record.event_id
        if event_id is None:
            event_id = uuid.UUID(record.event["id"])
        unique.setdefault(event_id, record)
    if not unique:
        return 0
    rows = [
        _Row(event_id, record, record.time or parse_time(record.event["time"]))
        for event_id, record in unique.items()
    ]
    db = connections[DEFAULT_DB_ALIAS]  # resolved once: the proxy costs a lookup per use
    now = timezone.now()
    inserted: list[_Row] = []
    with transaction.atomic(using=db.alias):
        for start in range(0, len(rows), CHUNK_ROWS):
            inserted.extend(_insert_events(db, rows[start : start + CHUNK_ROWS], now))
        _add_minute_counts(db, inserted)
    return len(inserted)


@dataclass(frozen=True, slots=True)
class _Row:
    event_id: uuid.UUID
    record: RecordedFrom
    time: datetime  # the event's time, parsed once


EVENT_COLUMNS = (
    "event_id",
    "type",
    "source",
    "subject",
    "actor",
    "time",
    "data",
    "topic",
    "partition",
    "offset",
    "recorded_at",
)


def _insert_events(db: BaseDatabaseWrapper, rows: list[_Row], now: datetime) -> list[_Row]:
    """Insert the rows whose event id is new; return those rows."""
    # The string, integer and datetime values are already of their fields'
    # types, so only the backend's conversion is applied (what
    # get_db_prep_value does once a value is prepared).
    id_field = _field(AnalyticsEvent, "event_id")
    data_field = _field(AnalyticsEvent, "data")
    adapt_time = db.ops.adapt_datetimefield_value
    recorded_at = adapt_time(now)
    by_db_id: dict[str, _Row] = {}
    params: list[Any] = []
    for row in rows:
        event = row.record.event
        db_id = id_field.get_db_prep_value(row.event_id, db, prepared=True)
        by_db_id[str(db_id)] = row
        params += (
            db_id,
            event["type"],
            event["source"],
            event["subject"],
            event["actor"],
            adapt_time(row.time),
            data_field.get_db_prep_value(event["data"], db, prepared=True),
            row.record.topic,
            row.record.partition,
            row.record.offset,
            recorded_at,
        )
    quote = db.ops.quote_name
    row_sql = "(" + ", ".join(["%s"] * len(EVENT_COLUMNS)) + ")"
    sql = (
        f"INSERT INTO {quote(AnalyticsEvent._meta.db_table)} "
        f"({', '.join(quote(name) for name in EVENT_COLUMNS)}) "
        f"VALUES {', '.join([row_sql] * len(rows))} "
        f"ON CONFLICT ({quote('event_id')}) DO NOTHING RETURNING {quote('event_id')}"
    )
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        returned = cursor.fetchall()
    return [_inserted_row(by_db_id, value) for (value,) in returned]


def _inserted_row(by_db_id: dict[str, _Row], value: object) -> _Row:
    row = by_db_id.get(str(value))
    if row is None:  # a driver that returns another form of the UUID
        row = by_db_id[str(_field(AnalyticsEvent, "event_id").to_python(value))]
    return row


def _add_minute_counts(db: BaseDatabaseWrapper, rows: list[_Row]) -> None:
    counts = Counter(
        (row.time.replace(second=0, microsecond=0), row.record.event["type"]) for row in rows
    )
    if not counts:
        return
    meta = EventMinuteCount._meta
    fields = [_field(EventMinuteCount, name) for name in ("minute", "type", "count")]
    params: list[Any] = []
    for (minute, event_type), count in counts.items():
        params.extend(
            field.get_db_prep_save(value, db)
            for field, value in zip(fields, (minute, event_type, count), strict=True)
        )
    quote = db.ops.quote_name
    table = quote(meta.db_table)
    sql = (
        f"INSERT INTO {table} ({quote('minute')}, {quote('type')}, {quote('count')}) "
        f"VALUES {', '.join(['(%s, %s, %s)'] * len(counts))} "
        f"ON CONFLICT ({quote('minute')}, {quote('type')}) "
        f"DO UPDATE SET {quote('count')} = {table}.{quote('count')} + EXCLUDED.{quote('count')}"
    )
    with db.cursor() as cursor:
        cursor.execute(sql, params)


def _field(model: type[Model], name: str) -> Field:
    field = model._meta.get_field(name)
    assert isinstance(field, Field)
    return field
