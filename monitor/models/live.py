"""What the live side of a web process records for the others: who it streams to."""

from __future__ import annotations

from django.db import models


class WatcherHeartbeat(models.Model):
    """The signed-in users one web process streams to, as of its last heartbeat.

    Written only by that process (monitor/live/presence.py); a row whose
    ``beat_at`` is stale belongs to a process that stopped beating.
    """

    process = models.CharField(max_length=200, unique=True)
    user_ids = models.JSONField(default=list)
    beat_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.process}: {len(self.user_ids)} watching"
