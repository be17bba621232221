"""API tokens: how programs sign in, over HTTP and WebSockets.

A token is ``es_`` and 43 URL-safe characters (256 random bits). Only its
SHA-256 digest is stored: a token has far too much entropy to be guessed from
its digest, so a slow password hash would only cost time on every request.
The token is shown once, when made, and never again.

Programs send it as ``Authorization: Bearer <token>``. Browsers cannot set
headers on a WebSocket, so the stream also takes it as a subprotocol:
``new WebSocket(url, ["eventsite", "bearer.<token>"])``; the server then
answers with the ``eventsite`` subprotocol (never echoing the token).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import timedelta

from django.contrib.auth.models import User
from django.utils import timezone

from monitor.models import ApiToken

TOKEN_PREFIX = "es_"
SUBPROTOCOL = "eventsite"
BEARER_SUBPROTOCOL_PREFIX = "bearer."
# Writing last_used on every request would make each API call a write:
# once a minute is as precise as anyone reads it.
LAST_USED_PRECISION = timedelta(minutes=1)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_create(*, user: User, name: str) -> tuple[ApiToken, str]:
    """Make a token for ``user``; returns the row and the token (shown only now)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken.objects.create(
        user=user, name=name.strip()[:100], prefix=token[:10], digest=digest(token)
    )
    return row, token


def token_revoke(*, token: ApiToken) -> None:
    """Revoke ``token``: it signs nobody in from now on, and the sockets it
    opened are closed (see monitor.live.socket_auth). Revoking twice is a no-op."""
    if token.revoked is None:
        token.revoked = timezone.now()
        token.save(update_fields=["revoked"])


def user_for_token(token: str) -> tuple[User, ApiToken] | None:
    """The active user and token row for ``token``, or None if it is unknown,
    revoked, or its user is inactive."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
        return None
    row = (
        ApiToken.objects.select_related("user")
        .filter(digest=digest(token), revoked__isnull=True)
        .first()
    )
    if row is None or not row.user.is_active:
        return None
    now = timezone.now()
    if row.last_used is None or now - row.last_used > LAST_USED_PRECISION:
        ApiToken.objects.filter(pk=row.pk).update(last_used=now)
    return row.user, row


def bearer_from_header(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def bearer_from_subprotocols(offered: Iterable[str]) -> str | None:
    """The token offered as a ``bearer.<token>`` WebSocket subprotocol, or None."""
    for protocol in offered:
        if protocol.startswith(BEARER_SUBPROTOCOL_PREFIX):
            return protocol[len(BEARER_SUBPROTOCOL_PREFIX) :]
    return None


def active_token_ids(ids: Iterable[int]) -> set[int]:
    """Which of the token ids ``ids`` are still active (not revoked, user active)."""
    return set(
        ApiToken.objects.filter(
            pk__in=list(ids), revoked__isnull=True, user__is_active=True
        ).values_list("pk", flat=True)
    )
