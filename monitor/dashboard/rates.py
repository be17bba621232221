"""Event rates for the operators' dashboard, from the analytics tables.

Two aggregate queries per request: one over the raw events of the window
(bucketed in SQL), one over the per-minute counts for the totals of all
time (exact even once raw events are pruned).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Count, Func, IntegerField, Q, Sum
from django.db.models.sql.compiler import SQLCompiler
from django.utils import timezone

from monitor.events.schema import EVENT_TYPES
from monitor.models import AnalyticsEvent, EventMinuteCount

# The chart's window (minutes) and its bucket width (seconds) for each.
RATE_BUCKET_SECONDS = {5: 10, 15: 30, 60: 60}

SqlWithParams = tuple[str, tuple[str | int, ...]]


class EpochSeconds(Func):
    """Whole seconds since the Unix epoch of a datetime column (SQLite and PostgreSQL)."""

    arity = 1
    output_field = IntegerField()

    def as_sqlite(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra: Any
    ) -> SqlWithParams:
        # '%%%%s' is strftime's '%s' once the template and the driver's
        # placeholder syntax have each taken their '%'.
        template = "CAST(strftime('%%%%s', %(expressions)s) AS INTEGER)"
        return self.as_sql(compiler, connection, template=template, **extra)

    def as_postgresql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra: Any
    ) -> SqlWithParams:
        template = "CAST(FLOOR(EXTRACT(EPOCH FROM %(expressions)s)) AS BIGINT)"
        return self.as_sql(compiler, connection, template=template, **extra)


def event_rates(*, minutes: int, now: datetime | None = None) -> dict[str, Any]:
    """Events per second per type in the last ``minutes`` (a key of RATE_BUCKET_SECONDS).

    The window ends at the start of the bucket in progress, so every bucket
    is complete; each bucket is present, zeros included, and every series
    has one value per bucket. ``counters`` holds the totals of all time (from
    the per-minute counts, exact even once raw events are pruned) and those
    of the 60 seconds up to ``now`` (events stamped later wait until then);
    ``sources_by_type`` splits the totals of all time by the events' sources,
    and holds only the types recorded at least once.
    """
    now = now or timezone.now()
    width = RATE_BUCKET_SECONDS[minutes]
    end = int(now.timestamp()) // width * width
    start = end - minutes * 60
    count = (end - start) // width
    minute_ago = now - timedelta(seconds=60)
    # One row per (bucket, type); the last minute always lies within the
    # window or the bucket in progress (bucket == count), both read here.
    # Bounded on both sides, so that SQLite reads the time index (with one
    # side only, it prefers to scan the whole table in type order).
    grouped = list(
        AnalyticsEvent.objects.filter(time__gte=datetime.fromtimestamp(start, UTC), time__lte=now)
        .annotate(bucket=(EpochSeconds("time") - start) / width)
        .values("bucket", "type")
        .annotate(events=Count("id"), recent=Count("id", filter=Q(time__gte=minute_ago)))
        .order_by()
    )
    sources_by_type = _totals_by_source()
    totals = {event_type: sum(sources.values()) for event_type, sources in sources_by_type.items()}
    types = sorted(EVENT_TYPES | totals.keys() | {row["type"] for row in grouped})
    per_bucket = {event_type: [0] * count for event_type in types}
    last_minute = dict.fromkeys(types, 0)
    for row in grouped:
        if 0 <= row["bucket"] < count:
            per_bucket[row["type"]][row["bucket"]] += row["events"]
        last_minute[row["type"]] += row["recent"]
    by_type = {event_type: int(totals.get(event_type) or 0) for event_type in types}
    return {
        "minutes": minutes,
        "bucket_seconds": width,
        "start": start,
        "end": end,
        "buckets": list(range(start, end, width)),
        "series": {
            event_type: [round(n / width, 4) for n in counts]
            for event_type, counts in per_bucket.items()
        },
        "counters": {
            "total": sum(by_type.values()),
            "by_type": by_type,
            "last_minute": sum(last_minute.values()),
            "last_minute_by_type": last_minute,
            "sources_by_type": sources_by_type,
        },
    }


def _totals_by_source() -> dict[str, dict[str, int]]:
    """Per type recorded, per source: how many events of all time (one query)."""
    found: dict[str, dict[str, int]] = {}
    for event_type, source, events in (
        EventMinuteCount.objects.values("type", "source")
        .annotate(events=Sum("count"))
        .order_by()
        .values_list("type", "source", "events")
    ):
        found.setdefault(event_type, {})[source] = int(events or 0)
    return found


def seen_types() -> dict[str, int]:
    """Every event type analytics recorded, with how many of it (all time), by name."""
    totals = (
        EventMinuteCount.objects.values("type")
        .annotate(events=Sum("count"))
        .order_by("type")
        .values_list("type", "events")
    )
    return {event_type: int(events or 0) for event_type, events in totals}
