"""The analytics tables: one row per event, and the aggregates written with it.

The analytics worker writes a poll batch's rows and its aggregates in one
transaction, so the aggregates stay exact after raw events are pruned. Every
CloudEvent read is recorded, whatever its type or source; ``verified`` marks
the site's own signed events (:mod:`monitor.events.received`), the only ones
the post engagement counts.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class AnalyticsEvent(models.Model):
    """One row per event, written by the analytics consumer group.

    ``event_id`` is the row's key: the id of one of the site's own verified
    events, else a name derived from the event's source and id (see
    :func:`monitor.workers.records.event_key`), so that an event of another
    source, or a forged one reusing a real event's id, never takes its place.
    ``cloudevent_id`` is the id the envelope carried (blank in rows recorded
    before it was kept, whose ``event_id`` is it: see :attr:`envelope_id`).
    Text attributes longer than their columns are cut to fit.
    """

    event_id = models.UUIDField(unique=True)
    cloudevent_id = models.CharField("CloudEvent id", max_length=255, blank=True, default="")
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
    # The site's own event, signed with its key; rows from before: False.
    verified = models.BooleanField(default=False)

    class Meta:
        ordering = ["-time", "-id"]

    def __str__(self) -> str:
        return f"{self.type} {self.envelope_id}"

    @property
    def envelope_id(self) -> str:
        """The id the event's envelope carried."""
        return self.cloudevent_id or str(self.event_id)


class EventMinuteCount(models.Model):
    """How many events of one type from one source happened in one minute (by
    event time), verified or not."""

    minute = models.DateTimeField()
    type = models.CharField(max_length=100)
    source = models.CharField(max_length=255, default="")
    count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-minute", "type", "source"]
        constraints = [
            models.UniqueConstraint(
                fields=["minute", "type", "source"], name="minute_type_source_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M} {self.type} from {self.source}: {self.count}"


class UserDayActivity(models.Model):
    """Events per actor per day (UTC), written with the raw events: daily active
    users and the most active users, exact after raw events are pruned. Events
    with no actor are not counted here."""

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
    events: top posts by engagement over any range of days. Only the site's own
    verified events count here: a forged like adds nothing."""

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
