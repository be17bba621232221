"""The social feed's tables: posts, likes, comments, follows, and the notices
they cause.

The services in :mod:`monitor.feed` write the first four, each change in the
transaction that emits its event; the notifications worker writes notices,
at most one per event and recipient.
"""

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
