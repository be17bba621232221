from __future__ import annotations

import uuid
from pathlib import PurePosixPath

from django.conf import settings
from django.db import models
from django.urls import NoReverseMatch, reverse
from django.utils import timezone


def photo_upload_path(instance: Post, filename: str) -> str:
    """A random name under photos/, keeping only a known image extension."""
    suffix = PurePosixPath(filename).suffix.lower()
    if suffix not in {".jpg", ".jpeg", ".png", ".webp", ".gif"}:
        suffix = ".img"
    return f"photos/{uuid.uuid4().hex}{suffix}"


def thumbnail_upload_path(instance: Post, filename: str) -> str:
    return f"thumbnails/{uuid.uuid4().hex}{PurePosixPath(filename).suffix.lower() or '.img'}"


class Post(models.Model):
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="posts"
    )
    photo = models.ImageField(upload_to=photo_upload_path)
    # The feed's smaller copy; blank for posts stored before thumbnails existed.
    thumbnail = models.ImageField(upload_to=thumbnail_upload_path, blank=True)
    caption = models.CharField(max_length=2200)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.author} – {self.caption[:40]}"


class Like(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="likes"
    )
    post = models.ForeignKey(Post, on_delete=models.CASCADE, related_name="likes")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "post"], name="like_once")]

    def __str__(self) -> str:
        return f"{self.user_id} likes {self.post_id}"


class Comment(models.Model):
    post = models.ForeignKey(Post, on_delete=models.CASCADE, related_name="comments")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="comments"
    )
    text = models.CharField(max_length=1000)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.author} on {self.post_id}: {self.text[:40]}"


class Follow(models.Model):
    follower = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="following"
    )
    followee = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="followers"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["follower", "followee"], name="follow_once"),
            models.CheckConstraint(
                condition=~models.Q(follower=models.F("followee")), name="no_self_follow"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.follower_id} follows {self.followee_id}"


class Notice(models.Model):
    """What one user is told about an event that concerns them (someone liked or
    commented on their photo, or followed them); written by the notifications
    worker, at most once per event and recipient."""

    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notices"
    )
    event_id = models.UUIDField()
    kind = models.CharField(max_length=100)  # the event's type
    actor_name = models.CharField(max_length=150)  # who did it, as they were named then
    subject = models.CharField(max_length=255)  # what it is about: posts/12, users/3
    text = models.CharField(max_length=500)  # the notice, shown as text
    created_at = models.DateTimeField(db_index=True)  # the event's time
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["event_id", "recipient"], name="notice_once")
        ]
        indexes = [models.Index(fields=["recipient", "id"], name="notice_recipient_id")]

    def __str__(self) -> str:
        return f"to {self.recipient_id}: {self.text[:60]}"

    def link(self) -> str | None:
        """Where the notice leads: the post liked or commented on, or the
        follower's profile; None if the site has no such page."""
        try:
            if self.kind == "user.followed":
                return reverse("profile", kwargs={"username": self.actor_name})
            kind, _, pk = self.subject.partition("/")
            if kind == "posts" and pk.isdecimal():
                return reverse("post_detail", kwargs={"post_id": int(pk)})
        except NoReverseMatch:
            pass
        return None


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


class ApiToken(models.Model):
    """A bearer token a program signs in with (see monitor.security.tokens). Only its
    SHA-256 digest is stored; the token itself is shown once, when made."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(
        max_length=16, help_text="The token's first characters, to tell it apart."
    )
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created = models.DateTimeField(default=timezone.now)
    last_used = models.DateTimeField(null=True, blank=True)
    revoked = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["user", "revoked"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def active(self) -> bool:
        return self.revoked is None


class RateCounter(models.Model):
    """Requests counted for one key in one fixed window (monitor.security.ratelimit).

    Counted with one atomic upsert, so that every web process shares the
    count; rows whose window has ended are deleted now and then.
    """

    key = models.CharField(max_length=200)
    window_start = models.BigIntegerField(help_text="Unix time the window starts, in seconds.")
    expires = models.BigIntegerField(help_text="Unix time the window ends, in seconds.")
    hits = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["key", "window_start"], name="rate_counter_key_window")
        ]
        indexes = [models.Index(fields=["expires"], name="rate_counter_expires")]

    def __str__(self) -> str:
        return f"{self.key} @ {self.window_start}: {self.hits}"
