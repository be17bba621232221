"""The pruning horizon: the time before which raw analytics events may be gone.

``manage.py prune_analytics`` deletes old raw events while the aggregates
stay. It records its horizon first (:func:`record_pruning_horizon`, committed
before any row is deleted), and from then on the analytics writer drops
events older than :func:`pruned_before`: their raw rows may be gone, so such
an event, redelivered, cannot be told from a new one and must not be counted
twice. The horizon never moves back.
"""

from __future__ import annotations

from datetime import datetime

from django.db import DEFAULT_DB_ALIAS, transaction
from django.utils import timezone

from monitor.models import AnalyticsHorizon

# The primary key of the one AnalyticsHorizon row.
HORIZON_ROW = 1


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
