"""The event pipeline's own tables: events waiting in the outbox to be
published, and records a consumer group could not process.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone


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
