"""The analytics writer: events from the topic into the ORM.

:func:`record_batch` is idempotent by event id. It inserts the batch with
``INSERT ... ON CONFLICT (event_id) DO NOTHING RETURNING event_id`` and adds
only the rows that were really inserted to the aggregates (per minute and
type, per actor and day, per post and day), so a redelivered event changes
nothing, even when two workers race on it. SQLite (3.35+) and PostgreSQL
both speak this dialect.

Raw events may be pruned (``manage.py prune_analytics``) while the
aggregates stay. The prune records its horizon first (``AnalyticsHorizon``),
and from then on :func:`record_batch` drops events older than
the horizon: their raw rows may be gone, so an event redelivered from before
it cannot be told from a new one, and it must not be counted twice.
"""

from __future__ import annotations

import functools
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import (
    CharField,
    DateField,
    DateTimeField,
    Field,
    IntegerField,
    Model,
)
from django.utils import timezone

from monitor.events.schema import Event, parse_time
from monitor.models import (
    AnalyticsEvent,
    AnalyticsHorizon,
    EventMinuteCount,
    PostDayEngagement,
    UserDayActivity,
)

# The primary key of the one AnalyticsHorizon row.
HORIZON_ROW = 1

# Rows per INSERT statement: 11 parameters each stays under SQLite's limit of
# 32,766 bound variables (PostgreSQL allows 65,535). The aggregates' upserts
# have at most 5 parameters a row.
CHUNK_ROWS = 2500

# The post engagement each event type adds to: (likes, unlikes, comments).
ENGAGEMENT = {
    "photo.liked": (1, 0, 0),
    "photo.unliked": (0, 1, 0),
    "comment.added": (0, 0, 1),
}


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

    The events must be valid envelopes (as :func:`~monitor.events.schema.parse_event`
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
        if inserted:
            inserted = _drop_pruned(db, inserted)
        _add_minute_counts(db, inserted)
        _add_user_days(db, inserted)
        _add_post_days(db, inserted)
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


def _drop_pruned(db: BaseDatabaseWrapper, inserted: list[_Row]) -> list[_Row]:
    """The rows at or after the pruning horizon; those before it are deleted again.

    Read after the insert, not before: a prune records its horizon (and
    commits) before it deletes anything, so if an insert went through
    because a prune had just deleted the event's first row, this read,
    under read-committed isolation, sees that horizon.
    """
    horizon = pruned_before(using=db.alias)
    if horizon is None:
        return inserted
    kept = [row for row in inserted if row.time >= horizon]
    if len(kept) < len(inserted):
        stale = [row.event_id for row in inserted if row.time < horizon]
        AnalyticsEvent.objects.using(db.alias).filter(event_id__in=stale).delete()
    return kept


def _add_minute_counts(db: BaseDatabaseWrapper, rows: list[_Row]) -> None:
    counts = Counter(
        (row.time.replace(second=0, microsecond=0), row.record.event["type"]) for row in rows
    )
    _upsert_adding(
        db, EventMinuteCount, ("minute", "type"), ("count",), ((*k, n) for k, n in counts.items())
    )


def _add_user_days(db: BaseDatabaseWrapper, rows: list[_Row]) -> None:
    counts = Counter((row.time.date(), row.record.event["actor"]) for row in rows)
    _upsert_adding(
        db, UserDayActivity, ("day", "actor"), ("count",), ((*k, n) for k, n in counts.items())
    )


def _add_post_days(db: BaseDatabaseWrapper, rows: list[_Row]) -> None:
    totals: dict[tuple[date, int], list[int]] = {}
    for row in rows:
        event = row.record.event
        adds = ENGAGEMENT.get(event["type"])
        if adds is None:
            continue
        total = totals.setdefault((row.time.date(), event["data"]["post_id"]), [0, 0, 0])
        for index, add in enumerate(adds):
            total[index] += add
    _upsert_adding(
        db,
        PostDayEngagement,
        ("day", "post_id"),
        ("likes", "unlikes", "comments"),
        ((*key, *amounts) for key, amounts in totals.items()),
    )


def _upsert_adding(
    db: BaseDatabaseWrapper,
    model: type[Model],
    keys: tuple[str, ...],
    amounts: tuple[str, ...],
    values: Iterable[tuple[Any, ...]],
) -> None:
    """Add amounts to the rows of ``model`` with these keys, creating the rows
    that are missing: ``INSERT ... ON CONFLICT (keys) DO UPDATE``, one statement
    per chunk. Each key must come once (PostgreSQL refuses to update a row twice
    in one statement): the callers aggregate first."""
    fields = [_field(model, name) for name in (*keys, *amounts)]
    adapters = [_adapter(db, field) for field in fields]
    params: list[Any] = []
    for value in values:
        params.extend(adapt(item) for adapt, item in zip(adapters, value, strict=True))
    if not params:
        return
    quote = db.ops.quote_name
    table = quote(model._meta.db_table)
    # The fields are plain ones: their names are their columns.
    columns = ", ".join(quote(name) for name in (*keys, *amounts))
    updates = ", ".join(
        f"{quote(name)} = {table}.{quote(name)} + EXCLUDED.{quote(name)}" for name in amounts
    )
    conflict = ", ".join(quote(name) for name in keys)
    row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
    chunk = CHUNK_ROWS * len(fields)
    with db.cursor() as cursor:
        for start in range(0, len(params), chunk):
            part = params[start : start + chunk]
            cursor.execute(
                f"INSERT INTO {table} ({columns}) "
                f"VALUES {', '.join([row_sql] * (len(part) // len(fields)))} "
                f"ON CONFLICT ({conflict}) DO UPDATE SET {updates}",
                part,
            )


def _adapter(db: BaseDatabaseWrapper, field: Field) -> Callable[[Any], Any]:
    """The backend's conversion for a value already of the field's type (as
    get_db_prep_save ends with, at a fraction of the cost per value)."""
    if isinstance(field, DateTimeField):
        return db.ops.adapt_datetimefield_value
    if isinstance(field, DateField):
        return db.ops.adapt_datefield_value
    if isinstance(field, CharField | IntegerField):
        return _same
    return functools.partial(field.get_db_prep_save, connection=db)


def _same(value: Any) -> Any:
    return value


def pruned_before(*, using: str = DEFAULT_DB_ALIAS) -> datetime | None:
    """The pruning horizon: events older than it are no longer recorded, and
    their raw rows may be gone. None: nothing was ever pruned."""
    return (
        AnalyticsHorizon.objects.using(using)
        .filter(pk=HORIZON_ROW)
        .values_list("pruned_before", flat=True)
        .first()
    )


def record_pruning_horizon(horizon: datetime, *, using: str = DEFAULT_DB_ALIAS) -> datetime:
    """Record that raw events older than ``horizon`` may be deleted; return the
    horizon now in force, which never moves back (the rows before a horizon
    once recorded may be gone). Commit this before deleting any row."""
    with transaction.atomic(using=using):
        row, created = (
            AnalyticsHorizon.objects.using(using)
            .select_for_update()
            .get_or_create(pk=HORIZON_ROW, defaults={"pruned_before": horizon})
        )
        if created:
            return horizon
        if row.pruned_before >= horizon:
            return row.pruned_before
        row.pruned_before = horizon
        row.recorded_at = timezone.now()
        row.save(using=using)
    return horizon


def _field(model: type[Model], name: str) -> Field:
    field = model._meta.get_field(name)
    assert isinstance(field, Field)
    return field
