"""The analytics tables: one row per event, and the aggregates written with it.

The analytics worker writes a poll batch's rows and its aggregates in one
transaction, so the aggregates stay exact after raw events are pruned.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class AnalyticsEvent(models.Model):
    """One row per event id, written by the analytics consumer group."""

    event_id = models.UUIDField(unique=True)
    type = models.CharField(max_length=100, db_index=True)
    source = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    actor = models.CharField(max_length=255, db_index=True)
    time = models.DateTimeField(db_index=True)
    data = models.JSONField(default=dict)
    topic = models.CharField(max_length=249)
    partition = models.IntegerField()
    offset = models.BigIntegerField()
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-time", "-id"]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class EventMinuteCount(models.Model):
    """How many events of one type happened in one minute (by event time)."""

    minute = models.DateTimeField()
    type = models.CharField(max_length=100)
    count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-minute", "type"]
        constraints = [
            models.UniqueConstraint(fields=["minute", "type"], name="minute_count_unique")
        ]

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M} {self.type}: {self.count}"


class UserDayActivity(models.Model):
    """Events per actor per day (UTC), written with the raw events: daily active
    users and the most active users, exact after raw events are pruned."""

    day = models.DateField()
    actor = models.CharField(max_length=255)
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["day", "actor"], name="user_day_activity_unique")
        ]
        verbose_name_plural = "user day activity"

    def __str__(self) -> str:
        return f"{self.day} {self.actor}: {self.count}"


class PostDayEngagement(models.Model):
    """Likes, unlikes and comments per post per day (UTC), written with the raw
    events: top posts by engagement over any range of days."""

    day = models.DateField()
    post_id = models.BigIntegerField()  # not a key: the post may be deleted since
    likes = models.PositiveIntegerField(default=0)
    unlikes = models.PositiveIntegerField(default=0)
    comments = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["day", "post_id"], name="post_day_engagement_unique")
        ]
        verbose_name_plural = "post day engagement"

    def __str__(self) -> str:
        return f"{self.day} post {self.post_id}"


class AnalyticsHorizon(models.Model):
    """One row: raw analytics events older than ``pruned_before`` may have been
    deleted (``manage.py prune_analytics``), so events from before it are no
    longer recorded: a redelivered one could not be told from a new one."""

    pruned_before = models.DateTimeField()
    recorded_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"raw events pruned before {self.pruned_before}"
