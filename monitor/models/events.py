"""The event pipeline's own tables: events waiting in the outbox to be
published, records consumer groups could not process (one letter per
record, a part per group), and the lives of the embedded broker.
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
    """A record one or more consumer groups could not process, as it was on the topic.

    One row per record, whichever groups refused it: ``offset`` is its
    position on the stream (the broker's offset on Apache Kafka; see
    :mod:`monitor.kafka.shift`), so a record is one letter across the
    embedded broker's roll-overs too. Each group that refused it has its
    part (:class:`DeadLetterGroup`), written in the same transaction as the
    rest of that group's batch, so a redelivered batch lists nothing twice.

    Staff re-drive a letter after a fix: its original bytes go back onto the
    events topic, for the groups whose part is not stored yet only
    (:mod:`monitor.workers.deadletters`). ``redriven_at`` is when it last
    was; a group that fails on the re-driven record again empties it, so
    the letter is pending again.
    """

    topic = models.CharField(max_length=249)
    partition = models.IntegerField()
    offset = models.BigIntegerField()
    key = models.BinaryField(null=True, blank=True)
    value = models.BinaryField(null=True, blank=True)
    # The record's headers as read, [[name, base64 of the value], ...]: a
    # re-drive puts them back, the site's signature among them.
    headers = models.JSONField(default=list, blank=True)
    size = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    redriven_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["topic", "partition", "offset"], name="dead_letter_one_per_record"
            )
        ]

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    @property
    def preview(self) -> str:
        """The start of the value as text, undecodable bytes escaped."""
        raw = bytes(self.value or b"")[:300]
        return raw.decode("utf-8", errors="backslashreplace")


class DeadLetterGroup(models.Model):
    """One consumer group's part of a dead letter: why it refused the record,
    how often, and whether it has stored it since (from a re-drive).

    Unique by letter and group, and written with ``INSERT ... ON CONFLICT DO
    NOTHING`` or a conditional ``UPDATE``, so two groups' processes listing
    the same record at once each add their own part and lose neither.
    ``failed_partition`` and ``failed_offset`` are the position of the
    record the group last refused: the letter's own, or a re-driven copy's;
    a batch read again after a crash finds that position and counts no
    second attempt.
    """

    letter = models.ForeignKey(DeadLetter, on_delete=models.CASCADE, related_name="groups")
    group = models.CharField(max_length=100)
    reason = models.TextField()
    attempts = models.PositiveIntegerField(default=1)
    failed_at = models.DateTimeField(default=timezone.now)
    failed_partition = models.IntegerField()
    failed_offset = models.BigIntegerField()
    # When the group stored a re-driven copy; from then on it skips any other.
    stored_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["group"]
        constraints = [
            models.UniqueConstraint(fields=["letter", "group"], name="dead_letter_group_unique")
        ]

    def __str__(self) -> str:
        state = "stored" if self.stored_at else self.reason[:60]
        return f"{self.group}: {state}"


class BrokerEpoch(models.Model):
    """One life of the embedded broker, which keeps everything in memory.

    When the embedded broker rolls over (``manage.py runbroker``, once the
    site's consumer groups have processed everything it holds), it starts
    again empty, as a new cluster, and its offsets start again at 0. The
    row it writes first says where the new cluster's offsets continue the
    old ones: per topic and partition, the ``bases`` added to the new
    cluster's offsets, so that positions on the live stream only grow, as
    on a Kafka broker whose retention deleted the old records. A cluster
    with no row (Apache Kafka, or a broker started afresh) has bases of 0.
    """

    cluster_id = models.CharField(max_length=200, unique=True)
    # The life this one continues exactly (a roll-over), or "" (a new start).
    follows = models.CharField(max_length=200, blank=True)
    bases = models.JSONField(default=dict)  # {topic: {partition: base}}
    # Per topic and partition, from which position on the records below the
    # bases are counted exactly (a life that ended without saying where its
    # records ended, a crash, leaves the count below the next one unknown).
    exact_from = models.JSONField(default=dict)  # {topic: {partition: position}}
    # The broker's own ends, as last seen while it ran, and whether it said
    # them as it stopped (then nothing was written after them).
    ends = models.JSONField(default=dict)  # {topic: {partition: end}}
    ended_cleanly = models.BooleanField(default=False)
    started_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.cluster_id} (after {self.follows or 'nothing'})"
