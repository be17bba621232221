"""The analytics page's figures, from the aggregates."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db.models import Count, DateTimeField, F, IntegerField, QuerySet, Sum
from django.db.models.functions import Trunc, TruncDate
from django.urls import reverse

from monitor.admin_analytics.filters import MAX_DAYS, Filters
from monitor.events.schema import EVENT_TYPES
from monitor.models import EventMinuteCount, Post, PostDayEngagement, UserDayActivity
from monitor.workers.pruning import pruned_before

TOP_ROWS = 20
DAY_SECONDS = 86_400
# The per-type rates chart: its bucket for the longest range of days it serves.
RATE_BUCKETS = (("minute", 60, 2), ("hour", 3600, 92), ("day", DAY_SECONDS, MAX_DAYS))


@dataclass
class Report:
    filters: Filters
    days: list[date]
    active: list[int]  # distinct actors per day
    posts: list[int]
    likes: list[int]
    comments: list[int]
    active_in_range: int
    totals: dict[str, int]  # events per type over the range
    rate_unit: str
    rate_buckets: list[int]  # epoch seconds
    rates: dict[str, list[int]]  # events per bucket per type
    source_totals: dict[str, int] = field(default_factory=dict)  # events per source
    source_rates: dict[str, list[int]] = field(default_factory=dict)  # per bucket per source
    # What the filters offer: the site's types and every type and source in the range.
    type_choices: list[str] = field(default_factory=list)
    source_choices: list[str] = field(default_factory=list)
    top_posts: list[dict[str, Any]] = field(default_factory=list)
    top_users: list[dict[str, Any]] = field(default_factory=list)
    pruned_before: datetime | None = None

    def day_rows(self) -> list[dict[str, Any]]:
        """One row per day, newest first."""
        columns = zip(self.days, self.active, self.posts, self.likes, self.comments, strict=True)
        return [
            {"day": day, "active": a, "posts": p, "likes": li, "comments": c}
            for day, a, p, li, c in reversed(list(columns))
        ]

    def sums(self) -> dict[str, int]:
        """Totals over the range: events (of the types and sources shown), posts,
        likes, comments."""
        return {
            "events": sum(self.totals.values()),
            "posts": sum(self.posts),
            "likes": sum(self.likes),
            "comments": sum(self.comments),
        }

    def chart_data(self) -> dict[str, Any]:
        """The figures the charts draw (admin-analytics.js)."""
        return {
            "days": [_epoch(day) for day in self.days],
            "active": self.active,
            "posts": self.posts,
            "likes": self.likes,
            "comments": self.comments,
            "rates": {
                "unit": self.rate_unit,
                "buckets": self.rate_buckets,
                "series": self.rates,
                "sources": self.source_rates,
            },
        }


def build_report(filters: Filters) -> Report:
    """The page's figures: seven aggregate queries (six GROUP BY), then the
    posts and users of the top lists by primary key, and the pruning horizon."""
    days = [filters.first + timedelta(days=n) for n in range(filters.days)]
    active = _active_per_day(filters)
    per_day = _counts_per_day(filters, ("photo.posted", "photo.liked", "comment.added"))
    unit, width, _ = next(bucket for bucket in RATE_BUCKETS if filters.days <= bucket[2])
    buckets, rates, source_rates = _rates(filters, unit, width)
    types, sources = _in_range_choices(filters)
    return Report(
        filters=filters,
        days=days,
        active=[active.get(day, 0) for day in days],
        posts=[per_day.get((day, "photo.posted"), 0) for day in days],
        likes=[per_day.get((day, "photo.liked"), 0) for day in days],
        comments=[per_day.get((day, "comment.added"), 0) for day in days],
        active_in_range=_active_in_range(filters),
        totals=_totals(rates, filters.types or sorted(EVENT_TYPES)),
        rate_unit=unit,
        rate_buckets=buckets,
        rates=_shown(rates, filters.types),
        source_totals=_totals(source_rates, filters.sources),
        source_rates=_shown(source_rates, filters.sources),
        type_choices=sorted(EVENT_TYPES | types | set(filters.types)),
        source_choices=sorted(sources | set(filters.sources)),
        top_posts=top_posts(filters),
        top_users=top_users(filters),
        pruned_before=pruned_before(),
    )


def _totals(series: dict[str, list[int]], always: Iterable[str]) -> dict[str, int]:
    """Events per name over the range, sorted by name; ``always`` listed even at 0."""
    totals = dict.fromkeys(always, 0)
    totals.update({name: sum(values) for name, values in series.items()})
    return dict(sorted(totals.items()))


def _shown(series: dict[str, list[int]], chosen: Iterable[str]) -> dict[str, list[int]]:
    """The series worth a line: those with events, and those chosen in the filters."""
    return {
        name: values for name, values in sorted(series.items()) if any(values) or name in chosen
    }


def _in_range(queryset: QuerySet[Any], filters: Filters) -> QuerySet[Any]:
    return queryset.filter(day__gte=filters.first, day__lte=filters.last)


def _minutes(
    filters: Filters, types: Iterable[str], sources: Iterable[str] = ()
) -> QuerySet[EventMinuteCount]:
    counts = EventMinuteCount.objects.filter(minute__gte=filters.start, minute__lt=filters.end)
    types, sources = list(types), list(sources)
    counts = counts.filter(type__in=types) if types else counts
    return counts.filter(source__in=sources) if sources else counts


def _in_range_choices(filters: Filters) -> tuple[set[str], set[str]]:
    """The types and the sources of the events in the range, whatever the filters."""
    rows = _minutes(filters, ()).values_list("type", "source").annotate(n=Sum("count")).order_by()
    types: set[str] = set()
    sources: set[str] = set()
    for event_type, source, _ in rows:
        types.add(event_type)
        sources.add(source)
    return types, sources


def _active_per_day(filters: Filters) -> dict[date, int]:
    rows = _in_range(UserDayActivity.objects.all(), filters).values("day").annotate(n=Count("id"))
    return {row["day"]: row["n"] for row in rows.order_by()}


def _active_in_range(filters: Filters) -> int:
    days = _in_range(UserDayActivity.objects.all(), filters)
    return int(days.aggregate(n=Count("actor", distinct=True))["n"])


def _counts_per_day(filters: Filters, types: tuple[str, ...]) -> dict[tuple[date, str], int]:
    rows = (
        _minutes(filters, types, filters.sources)
        .annotate(day=TruncDate("minute", tzinfo=UTC))
        .values("day", "type")
        .annotate(n=Sum("count"))
        .order_by()
    )
    return {(row["day"], row["type"]): row["n"] for row in rows}


Series = dict[str, list[int]]


def _rates(filters: Filters, unit: str, width: int) -> tuple[list[int], Series, Series]:
    """Events per bucket over the range, per type and per source, every bucket present."""
    start = int(filters.start.timestamp())
    buckets = list(range(start, int(filters.end.timestamp()), width))
    bucket = (
        F("minute")
        if unit == "minute"
        else Trunc("minute", unit, output_field=DateTimeField(), tzinfo=UTC)
    )
    rows = (
        _minutes(filters, filters.types, filters.sources)
        .annotate(bucket=bucket)
        .values("bucket", "type", "source")
        .annotate(n=Sum("count"))
        .order_by()
    )
    by_type: Series = {name: [0] * len(buckets) for name in filters.types}
    by_source: Series = {name: [0] * len(buckets) for name in filters.sources}
    for row in rows:
        index = (int(row["bucket"].timestamp()) - start) // width
        by_type.setdefault(row["type"], [0] * len(buckets))[index] += row["n"]
        by_source.setdefault(row["source"], [0] * len(buckets))[index] += row["n"]
    return buckets, by_type, by_source


def top_posts(filters: Filters, limit: int = TOP_ROWS) -> list[dict[str, Any]]:
    """The posts with the most engagement (likes - unlikes + comments) in the
    range, most first; ``post`` is None for a post deleted since."""
    rows = list(
        _in_range(PostDayEngagement.objects.all(), filters)
        .values("post_id")
        .annotate(
            likes_in_range=Sum("likes"),
            unlikes_in_range=Sum("unlikes"),
            comments_in_range=Sum("comments"),
            score=Sum(F("likes") - F("unlikes") + F("comments"), output_field=IntegerField()),
        )
        .order_by("-score", "-comments_in_range", "post_id")[:limit]
    )
    posts = Post.objects.select_related("author").in_bulk([row["post_id"] for row in rows])
    for row in rows:
        row["post"] = posts.get(row["post_id"])
        row["url"] = (
            reverse("admin:monitor_post_change", args=[row["post_id"]]) if row["post"] else None
        )
    return rows


def top_users(filters: Filters, limit: int = TOP_ROWS) -> list[dict[str, Any]]:
    """The actors with the most events in the range, most first; ``user`` is
    None for an actor who is not (or no longer) a user."""
    rows = list(
        _in_range(UserDayActivity.objects.all(), filters)
        .values("actor")
        .annotate(events=Sum("count"), active_days=Count("id"))
        .order_by("-events", "actor")[:limit]
    )
    user_model = get_user_model()
    ids = [int(row["actor"]) for row in rows if _is_id(row["actor"])]
    users = user_model._default_manager.in_bulk(ids)
    linked = admin.site.is_registered(user_model)
    meta = user_model._meta
    for row in rows:
        row["user"] = users.get(int(row["actor"])) if _is_id(row["actor"]) else None
        row["url"] = (
            reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[row["user"].pk])
            if row["user"] and linked
            else None
        )
    return rows


def _is_id(actor: str) -> bool:
    return actor.isascii() and actor.isdigit() and len(actor) < 19


def _epoch(day: date) -> int:
    return int(datetime.combine(day, time.min, UTC).timestamp())
