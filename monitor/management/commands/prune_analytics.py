"""Delete raw analytics events past the retention, keeping the aggregates.

The horizon is recorded (and committed) before any row is deleted
(:mod:`monitor.workers.pruning`), so that the analytics worker never counts
again an event whose raw row is gone. Deletes go in chunks, each its own
transaction, so that the worker writes between them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from monitor.models import AnalyticsEvent
from monitor.workers.pruning import pruned_before, record_pruning_horizon


def horizon_for(days: int, *, now: datetime) -> datetime:
    """The start of the UTC day ``days`` days before ``now``: raw events from
    before it are pruned, so whole days go at once."""
    moment = now.astimezone(UTC) - timedelta(days=days)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def described(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


class Command(BaseCommand):
    help = (
        "Delete raw analytics events older than the retention (whole UTC days), in "
        "chunks. The aggregates (per minute, per user and day, per post and day) are "
        "kept, and events from before the horizon are no longer recorded, so a "
        "redelivered old event is never counted twice."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days",
            type=int,
            help="days of raw events to keep (default: ANALYTICS_RETENTION_DAYS, "
            f"now {settings.ANALYTICS_RETENTION_DAYS})",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="say what would be deleted; change nothing"
        )
        parser.add_argument(
            "--chunk-size",
            type=int,
            default=2000,
            help="rows per delete, each in its own transaction (default 2000)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["days"]
        if days is None:
            days = settings.ANALYTICS_RETENTION_DAYS
        if days < 1:
            raise CommandError(f"the retention must be at least 1 day, got {days}")
        if options["chunk_size"] < 1:
            raise CommandError(f"--chunk-size must be at least 1, got {options['chunk_size']}")
        cutoff = horizon_for(days, now=timezone.now())
        if options["dry_run"]:
            self.dry_run(cutoff, days)
            return
        horizon = record_pruning_horizon(cutoff)
        if horizon > cutoff:
            self.stdout.write(
                f"An earlier prune set a later horizon, {described(horizon)}; it stays."
            )
        deleted, chunks = self.delete_before(horizon, options["chunk_size"], options["verbosity"])
        self.stdout.write(
            self.style.SUCCESS(
                f"Deleted {deleted:,} raw events from before {described(horizon)} "
                f"(retention {days} days) in {chunks} chunk{'s' if chunks != 1 else ''}. "
                "The aggregates are unchanged; events older than the horizon "
                "are no longer recorded."
            )
        )

    def dry_run(self, cutoff: datetime, days: int) -> None:
        in_force = pruned_before()
        horizon = max(cutoff, in_force) if in_force else cutoff
        count = AnalyticsEvent.objects.filter(time__lt=horizon).count()
        self.stdout.write(
            f"Dry run: would delete {count:,} raw events from before {described(horizon)} "
            f"(retention {days} days). Nothing was changed."
        )

    def delete_before(self, horizon: datetime, chunk_size: int, verbosity: int) -> tuple[int, int]:
        """Delete the raw events older than ``horizon``, ``chunk_size`` at a time,
        each chunk its own transaction (so the analytics worker writes between
        them); return how many were deleted and in how many chunks."""
        deleted = chunks = 0
        while count := self.delete_chunk(horizon, chunk_size):
            deleted += count
            chunks += 1
            if verbosity >= 2:
                self.stdout.write(f"chunk {chunks}: deleted {count:,} ({deleted:,} so far)")
        return deleted, chunks

    def delete_chunk(self, horizon: datetime, size: int) -> int:
        ids = list(
            AnalyticsEvent.objects.filter(time__lt=horizon)
            .order_by()
            .values_list("pk", flat=True)[:size]
        )
        if not ids:
            return 0
        count, _ = AnalyticsEvent.objects.filter(pk__in=ids).delete()
        return count
