"""The outbox table: events saved with the change they describe, waiting for
the broker's acknowledgement.

A row is written by ``emit_event`` in the caller's transaction, sent by the
eager publisher or the relay, and marked sent here only once the broker
acknowledged it. Every function here is synchronous and uses the calling
thread's database connection (and so its transaction, if one is open).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import TypedDict

from django.db import connection
from django.db.models import F, Min
from django.utils import timezone

from monitor.models import OutboxEvent

# How much of a send error is kept on the row: enough to diagnose, bounded.
MAX_ERROR_CHARS = 1000


class Backlog(TypedDict):
    unsent: int
    oldest_unsent_age_seconds: float


def due_rows(*, older_than: timedelta, limit: int, claim: bool = False) -> list[OutboxEvent]:
    """Unsent rows created before now - ``older_than``, oldest first, at most ``limit``.

    With ``claim`` (inside ``transaction.atomic()``, on a database where
    :func:`can_claim_rows`), the rows are locked until the transaction ends,
    and rows another transaction holds are left out.
    """
    cutoff = timezone.now() - older_than
    rows = OutboxEvent.objects.filter(sent_at__isnull=True, created_at__lte=cutoff)
    if claim:
        rows = rows.select_for_update(skip_locked=True)
    return list(rows.order_by("created_at", "id")[:limit])


def can_claim_rows() -> bool:
    """Whether this database can skip rows another transaction locked, which
    :func:`due_rows` with ``claim`` needs. May ask the server for its version."""
    return bool(connection.features.has_select_for_update_skip_locked)


def mark_sent(event_ids: Iterable[str]) -> int:
    """Record the broker's acknowledgement; returns the number of rows marked.

    Idempotent: a row already marked keeps its first ``sent_at`` and is not counted.
    """
    ids = list(event_ids)
    if not ids:
        return 0
    return OutboxEvent.objects.filter(event_id__in=ids, sent_at__isnull=True).update(
        sent_at=timezone.now()
    )


def record_failure(event_ids: Iterable[str], error: str) -> None:
    """Count one more failed attempt on each row, and keep the latest error.
    The rows stay unsent (due for the relay)."""
    OutboxEvent.objects.filter(event_id__in=list(event_ids)).update(
        attempts=F("attempts") + 1, last_error=error[:MAX_ERROR_CHARS]
    )


def backlog() -> Backlog:
    """How many events wait in the outbox, and the age of the oldest in seconds
    (0.0 when none waits)."""
    unsent = OutboxEvent.objects.filter(sent_at__isnull=True)
    oldest = unsent.aggregate(oldest=Min("created_at"))["oldest"]
    age = (timezone.now() - oldest).total_seconds() if oldest else 0.0
    return {"unsent": unsent.count(), "oldest_unsent_age_seconds": round(age, 3)}
