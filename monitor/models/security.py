"""Credentials and limits: API tokens and the shared rate-limit counters."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


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
