from __future__ import annotations

import uuid
from pathlib import PurePosixPath

from django.conf import settings
from django.db import models
from django.utils import timezone


def photo_upload_path(instance: Post, filename: str) -> str:
    """A random name under photos/, keeping only a known image extension."""
    suffix = PurePosixPath(filename).suffix.lower()
    if suffix not in {".jpg", ".jpeg", ".png", ".webp", ".gif"}:
        suffix = ".img"
    return f"photos/{uuid.uuid4().hex}{suffix}"


class Post(models.Model):
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="posts"
    )
    photo = models.ImageField(upload_to=photo_upload_path)
    caption = models.CharField(max_length=2200)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.author} – {self.caption[:40]}"


class OutboxEvent(models.Model):
    """An event saved in the same transaction as the change it describes.

    ``sent_at`` is set only after the broker acknowledged the record, so a
    row with ``sent_at`` empty is an event that may not have reached Kafka
    yet; the relay publishes those again. Publishing twice is harmless:
    consumers deduplicate by ``event_id``.
    """

    event_id = models.UUIDField(unique=True)
    event_type = models.CharField(max_length=100)
    topic = models.CharField(max_length=249)
    key = models.CharField(max_length=255)
    payload = models.BinaryField()
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["created_at"],
                condition=models.Q(sent_at__isnull=True),
                name="outbox_unsent_idx",
            )
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id}"


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


class DeadLetter(models.Model):
    """A record a consumer group could not process, as it was on the topic.

    Written in the same transaction as the rest of the batch, so a record is
    listed once per group however often it is redelivered. Staff re-drive a
    dead letter after a fix: its original bytes go back onto the events topic.
    """

    group = models.CharField(max_length=100)
    topic = models.CharField(max_length=249)
    partition = models.IntegerField()
    offset = models.BigIntegerField()
    key = models.BinaryField(null=True, blank=True)
    value = models.BinaryField(null=True, blank=True)
    size = models.PositiveIntegerField(default=0)
    reason = models.TextField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    redriven_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["group", "topic", "partition", "offset"], name="dead_letter_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}: {self.reason[:60]}"

    @property
    def preview(self) -> str:
        """The start of the value as text, undecodable bytes escaped."""
        raw = bytes(self.value or b"")[:300]
        return raw.decode("utf-8", errors="backslashreplace")
