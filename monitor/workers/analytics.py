"""The analytics worker: every CloudEvent from the topic into the ORM, each stored once.

:class:`AnalyticsWorker` consumes in the group
:data:`~monitor.workers.groups.ANALYTICS` on the common loop
(:mod:`monitor.workers.base`): every CloudEvent, whatever its type or
source, is stored and counted; a record that is not a CloudEvent is a dead
letter. Its writer, :func:`record_batch`, is idempotent by event key
(:func:`~monitor.workers.records.event_key`). It inserts the batch with
``INSERT ... ON CONFLICT (event_id) DO NOTHING RETURNING event_id`` and adds
only the rows that were really inserted to the aggregates (per minute, type
and source; per actor and day; per post and day, from the site's own
verified events only), so a redelivered event changes nothing, even when two
workers race on it. SQLite (3.35+) and PostgreSQL both speak this dialect.

An event of another source may lack what the site's events carry: it is
stored with a blank subject or actor, the record's time, and ``{}`` as data;
data that is not a JSON object is stored as ``{"value": <data>}``, and
binary data (``data_base64``) as ``{"data_base64": <text>}``. Text longer
than its column is cut to fit.

Raw events may be pruned (``manage.py prune_analytics``) while the
aggregates stay; an event older than the pruning horizon
(:mod:`monitor.workers.pruning`) is not recorded, as it cannot be told from
one already counted.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from monitor.events.schema import parse_time
from monitor.models import AnalyticsEvent, EventMinuteCount, PostDayEngagement, UserDayActivity
from monitor.workers import groups
from monitor.workers.base import BatchWorker
from monitor.workers.pruning import pruned_before
from monitor.workers.records import RecordedFrom, event_key
from monitor.workers.upsert import model_field, upsert_adding

logger = logging.getLogger(__name__)

# Rows per INSERT statement: 13 parameters each stays under SQLite's limit of
# 32,766 bound variables (PostgreSQL allows 65,535). The aggregates' upserts
# have at most 5 parameters a row.
CHUNK_ROWS = 2500

# The post engagement each event type adds to: (likes, unlikes, comments).
ENGAGEMENT = {
    "photo.liked": (1, 0, 0),
    "photo.unliked": (0, 1, 0),
    "comment.added": (0, 0, 1),
}

EVENT_COLUMNS = (
    "event_id",
    "cloudevent_id",
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
    "verified",
)


def _max_length(name: str) -> int:
    length = model_field(AnalyticsEvent, name).max_length
    assert length is not None
    return length


# How much of each text attribute a row keeps: its column's length.
ID_CHARS, TYPE_CHARS, SOURCE_CHARS, SUBJECT_CHARS, ACTOR_CHARS = (
    _max_length(name) for name in ("cloudevent_id", "type", "source", "subject", "actor")
)
# The aggregates keep the same attributes in columns of the same lengths.
assert model_field(EventMinuteCount, "type").max_length == TYPE_CHARS
assert model_field(EventMinuteCount, "source").max_length == SOURCE_CHARS
assert model_field(UserDayActivity, "actor").max_length == ACTOR_CHARS


class AnalyticsWorker(BatchWorker):
    """Stores every CloudEvent once (by event key) and the per-minute counts."""

    group_id = groups.ANALYTICS

    def consume_batch(self, records: list[RecordedFrom]) -> None:
        new = record_batch(records)
        logger.debug("analytics recorded %d new of %d events", new, len(records))


def record_batch(records: Sequence[RecordedFrom]) -> int:
    """Store a batch in one transaction; return how many events were new.

    The events must be CloudEvents (as :func:`~monitor.events.received.receive`
    returns them): their values go to the database without further checks,
    but for text cut to its column.
    """
    unique: dict[uuid.UUID, RecordedFrom] = {}
    for record in records:
        key = record.event_id or event_key(record.event, verified=record.verified)
        unique.setdefault(key, record)
    if not unique:
        return 0
    now = timezone.now()
    rows = [_Row.of(key, record, now) for key, record in unique.items()]
    db = connections[DEFAULT_DB_ALIAS]  # resolved once: the proxy costs a lookup per use
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


def _text(value: object, limit: int) -> str:
    """A string attribute cut to ``limit`` characters; anything else is blank."""
    return value[:limit] if isinstance(value, str) else ""


def stored_data(event: Mapping[str, Any]) -> dict[str, Any]:
    """What an event's data is stored as: always a JSON object (see the module's docstring)."""
    data = event.get("data")
    if isinstance(data, dict):
        return data
    if data is not None:
        return {"value": data}
    binary = event.get("data_base64")
    return {"data_base64": binary} if isinstance(binary, str) else {}


@dataclass(frozen=True, slots=True)
class _Row:
    event_id: uuid.UUID
    record: RecordedFrom
    time: datetime  # the event's time (else the record's), parsed once
    # The attributes the aggregates read too, cut to their columns.
    type: str
    source: str
    actor: str

    @classmethod
    def of(cls, key: uuid.UUID, record: RecordedFrom, now: datetime) -> _Row:
        event = record.event
        moment = record.time
        if moment is None:  # not read from a record: the event's own time, else now
            text = event.get("time")
            moment = parse_time(text) if isinstance(text, str) else now
        return cls(
            key,
            record,
            moment,
            _text(event["type"], TYPE_CHARS),
            _text(event["source"], SOURCE_CHARS),
            _text(event.get("actor"), ACTOR_CHARS),
        )


def _insert_events(db: BaseDatabaseWrapper, rows: list[_Row], now: datetime) -> list[_Row]:
    """Insert the rows whose event key is new; return those rows."""
    # The string, integer and datetime values are already of their fields'
    # types, so only the backend's conversion is applied (what
    # get_db_prep_value does once a value is prepared).
    id_field = model_field(AnalyticsEvent, "event_id")
    data_field = model_field(AnalyticsEvent, "data")
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
            _text(event["id"], ID_CHARS),
            row.type,
            row.source,
            _text(event.get("subject"), SUBJECT_CHARS),
            row.actor,
            adapt_time(row.time),
            data_field.get_db_prep_value(stored_data(event), db, prepared=True),
            row.record.topic,
            row.record.partition,
            row.record.offset,
            recorded_at,
            row.record.verified,
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
        row = by_db_id[str(model_field(AnalyticsEvent, "event_id").to_python(value))]
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
        (row.time.replace(second=0, microsecond=0), row.type, row.source) for row in rows
    )
    upsert_adding(
        db,
        EventMinuteCount,
        ("minute", "type", "source"),
        ("count",),
        ((*key, count) for key, count in counts.items()),
        chunk_rows=CHUNK_ROWS,
    )


def _add_user_days(db: BaseDatabaseWrapper, rows: list[_Row]) -> None:
    counts = Counter((row.time.date(), row.actor) for row in rows if row.actor)
    upsert_adding(
        db,
        UserDayActivity,
        ("day", "actor"),
        ("count",),
        ((*key, count) for key, count in counts.items()),
        chunk_rows=CHUNK_ROWS,
    )


def _add_post_days(db: BaseDatabaseWrapper, rows: list[_Row]) -> None:
    """Engagement from the site's own events only: a forged like counts for no post."""
    totals: dict[tuple[date, int], list[int]] = {}
    for row in rows:
        event = row.record.event
        adds = ENGAGEMENT.get(event["type"])
        if adds is None or not row.record.verified:
            continue
        total = totals.setdefault((row.time.date(), event["data"]["post_id"]), [0, 0, 0])
        for index, add in enumerate(adds):
            total[index] += add
    upsert_adding(
        db,
        PostDayEngagement,
        ("day", "post_id"),
        ("likes", "unlikes", "comments"),
        ((*key, *amounts) for key, amounts in totals.items()),
        chunk_rows=CHUNK_ROWS,
    )
