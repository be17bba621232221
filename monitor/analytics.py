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

from django.db import connection, transaction
from django.db.models import Field, Model
from django.utils import timezone

from .events import Event, parse_time
from .models import AnalyticsEvent, EventMinuteCount

CHUNK_ROWS = 500


@dataclass(frozen=True, slots=True)
class RecordedFrom:
    """An event with the Kafka position it was read from."""

    event: Event
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    raw: bytes | None = None  # the record's value as read, when it was read from Kafka


def record_batch(records: Sequence[RecordedFrom]) -> int:
    """Store a batch in one transaction; return how many events were new."""
    unique: dict[uuid.UUID, RecordedFrom] = {}
    for record in records:
        unique.setdefault(uuid.UUID(record.event["id"]), record)
    if not unique:
        return 0
    now = timezone.now()
    inserted: list[RecordedFrom] = []
    with transaction.atomic():
        items = list(unique.items())
        for start in range(0, len(items), CHUNK_ROWS):
            chunk = items[start : start + CHUNK_ROWS]
            new_ids = _insert_events([(event_id, record) for event_id, record in chunk], now)
            inserted.extend(record for event_id, record in chunk if event_id in new_ids)
        _add_minute_counts(inserted)
    return len(inserted)


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


def _insert_events(rows: list[tuple[uuid.UUID, RecordedFrom]], now: datetime) -> set[uuid.UUID]:
    fields = [_field(AnalyticsEvent, name) for name in EVENT_COLUMNS]
    params: list[Any] = []
    for event_id, record in rows:
        event = record.event
        values = (
            event_id,
            event["type"],
            event["source"],
            event["subject"],
            event["actor"],
            parse_time(event["time"]),
            event["data"],
            record.topic,
            record.partition,
            record.offset,
            now,
        )
        params.extend(_prep(field, value) for field, value in zip(fields, values, strict=True))
    quote = connection.ops.quote_name
    row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = (
        f"INSERT INTO {quote(AnalyticsEvent._meta.db_table)} "
        f"({', '.join(quote(name) for name in EVENT_COLUMNS)}) "
        f"VALUES {', '.join([row_sql] * len(rows))} "
        f"ON CONFLICT ({quote('event_id')}) DO NOTHING RETURNING {quote('event_id')}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {uuid.UUID(str(value)) for (value,) in cursor.fetchall()}


def _add_minute_counts(records: list[RecordedFrom]) -> None:
    counts = Counter(
        (parse_time(record.event["time"]).replace(second=0, microsecond=0), record.event["type"])
        for record in records
    )
    if not counts:
        return
    meta = EventMinuteCount._meta
    fields = [_field(EventMinuteCount, name) for name in ("minute", "type", "count")]
    params: list[Any] = []
    for (minute, event_type), count in counts.items():
        params.extend(
            _prep(field, value)
            for field, value in zip(fields, (minute, event_type, count), strict=True)
        )
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    sql = (
        f"INSERT INTO {table} ({quote('minute')}, {quote('type')}, {quote('count')}) "
        f"VALUES {', '.join(['(%s, %s, %s)'] * len(counts))} "
        f"ON CONFLICT ({quote('minute')}, {quote('type')}) "
        f"DO UPDATE SET {quote('count')} = {table}.{quote('count')} + EXCLUDED.{quote('count')}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _prep(field: Field, value: object) -> Any:
    return field.get_db_prep_save(value, connection)


def _field(model: type[Model], name: str) -> Field:
    field = model._meta.get_field(name)
    assert isinstance(field, Field)
    return field
