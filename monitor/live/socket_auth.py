"""Who a WebSocket connection belongs to, and for how long.

A connection signs in one of two ways:

- **a token** (see :mod:`monitor.security.tokens`), in an ``Authorization: Bearer``
  header or a ``bearer.<token>`` subprotocol. Cookies are then ignored, and
  any Origin (or none, as programs send) is accepted: the token is the
  credential, and a page on another site cannot send one it does not have;
- **the session cookie**, only from an allowed Origin: the site itself (the
  Origin's host is the Host the request came to, and an allowed host) or one
  listed in ``CSRF_TRUSTED_ORIGINS``. A cookie with a foreign or missing
  Origin is refused (close code 4403): otherwise any page a signed-in user
  visits could open the stream with their cookie (cross-site WebSocket
  hijacking).

Each web process keeps the credential of each signed-in socket it serves and
checks them all in one round of queries every ``SOCKET_AUTH_CHECK_MS``: a
socket whose session was logged out (or expired), whose token was revoked or
whose user was deactivated gets an error frame and close code 4401.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import DatabaseError
from django.http.cookie import parse_cookie
from django.http.request import split_domain_port, validate_host
from django.utils import timezone

from monitor.live.json_socket import JsonSocket
from monitor.live.protocol import CLOSE_FORBIDDEN_ORIGIN, CLOSE_UNAUTHENTICATED
from monitor.security.tokens import (
    SUBPROTOCOL,
    active_token_ids,
    bearer_from_header,
    bearer_from_subprotocols,
    user_for_token,
)

logger = logging.getLogger(__name__)

AUTH_SCOPE_KEY = "eventsite.auth"


class Credential(NamedTuple):
    kind: str  # "session" or "token"
    key: str | int  # the session key or the token's id
    user_id: int


def origin_allowed(origin: str | None, host: str | None) -> bool:
    """Whether a browser page at ``origin`` may use the session cookie on a
    request that came to ``host`` (the Host header)."""
    if not origin or origin == "null":
        return False
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or not host:
        return False
    if parts.netloc.lower() != host.lower():
        return False
    domain, _port = split_domain_port(host)
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)


class StreamAuthMiddleware:
    """Sets ``scope["user"]`` and ``scope[AUTH_SCOPE_KEY]`` (the credential, or
    why there is none: ``bad_token``, ``origin``, ``anonymous``)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.with_session = AuthMiddlewareStack(inner)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        headers = {name.lower(): value.decode("latin-1") for name, value in scope["headers"]}
        token = bearer_from_header(headers.get(b"authorization")) or bearer_from_subprotocols(
            scope.get("subprotocols") or []
        )
        if token is not None:
            found = await database_sync_to_async(user_for_token)(token)
            if found is None:
                return await self.inner(_as(scope, AnonymousUser(), "bad_token"), receive, send)
            user, row = found
            credential = Credential("token", row.pk, user.pk)
            return await self.inner(_as(scope, user, credential), receive, send)
        session_key = parse_cookie(headers.get(b"cookie", "")).get(settings.SESSION_COOKIE_NAME)
        if session_key is None:
            return await self.inner(_as(scope, AnonymousUser(), "anonymous"), receive, send)
        if not origin_allowed(headers.get(b"origin"), headers.get(b"host")):
            return await self.inner(_as(scope, AnonymousUser(), "origin"), receive, send)
        scope = {**scope, AUTH_SCOPE_KEY: "session"}
        return await self.with_session(scope, receive, send)


def _as(scope: dict[str, Any], user: Any, auth: Credential | str) -> dict[str, Any]:
    return {**scope, "user": user, AUTH_SCOPE_KEY: auth}


REFUSALS = {
    "bad_token": ("invalid_token", "the token is not valid, or was revoked", CLOSE_UNAUTHENTICATED),
    "origin": (
        "origin_not_allowed",
        "a session cookie is accepted only from the site's own pages; programs use a token",
        CLOSE_FORBIDDEN_ORIGIN,
    ),
    "anonymous": (
        "unauthenticated",
        "sign in first (a session from the site, or Authorization: Bearer <token>)",
        CLOSE_UNAUTHENTICATED,
    ),
}


async def accept_signed_in(socket: JsonSocket) -> AbstractBaseUser | None:
    """Accept the connection and return its signed-in user, now watched for
    sign-out (see :data:`sockets`); a refused one is told why in an error frame
    and closed with its code (None is returned)."""
    scope = socket.scope
    offered = scope.get("subprotocols") or []
    await socket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    user = scope.get("user")
    auth = scope.get(AUTH_SCOPE_KEY, "anonymous")
    if auth == "session" and user is not None and user.is_authenticated:
        key = parse_cookie(_header(scope, b"cookie")).get(settings.SESSION_COOKIE_NAME, "")
        auth = Credential("session", key, user.pk)
    if not isinstance(auth, Credential):
        code, message, close_code = REFUSALS.get(auth, REFUSALS["anonymous"])
        await socket.send_error(code, message)
        await socket.close(code=close_code)
        return None
    sockets.add(socket, auth)
    signed_in: AbstractBaseUser = user
    return signed_in


def _header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return ""


def still_valid(credentials: set[Credential]) -> set[Credential]:
    """Which of ``credentials`` still sign their user in: the session exists and
    has not expired, the token is active, the user is active."""
    from django.contrib.sessions.models import Session

    sessions = {c.key for c in credentials if c.kind == "session"}
    tokens = {int(c.key) for c in credentials if c.kind == "token"}
    live_sessions: set[Any] = set()
    if sessions:
        if settings.SESSION_ENGINE in (
            "django.contrib.sessions.backends.db",
            "django.contrib.sessions.backends.cached_db",
        ):
            live_sessions = set(
                Session.objects.filter(
                    session_key__in=sessions, expire_date__gt=timezone.now()
                ).values_list("session_key", flat=True)
            )
        else:
            from importlib import import_module

            store = import_module(settings.SESSION_ENGINE).SessionStore
            live_sessions = {key for key in sessions if store().exists(key)}
    live_tokens = active_token_ids(tokens) if tokens else set()
    active_users = set(
        get_user_model()
        .objects.filter(pk__in={c.user_id for c in credentials}, is_active=True)
        .values_list("pk", flat=True)
    )
    return {
        c
        for c in credentials
        if c.user_id in active_users
        and (c.key in live_sessions if c.kind == "session" else c.key in live_tokens)
    }


class SignedInSockets:
    """The signed-in sockets of this process, closed when their credential ends."""

    def __init__(self) -> None:
        self.credentials: dict[JsonSocket, Credential] = {}
        self.task: asyncio.Task[None] | None = None

    def add(self, socket: JsonSocket, credential: Credential) -> None:
        self.credentials[socket] = credential
        loop = asyncio.get_running_loop()
        # One watcher per process, on the serving loop (a test's loop may have
        # ended with a watcher still pending on it).
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.task = loop.create_task(self._watch())

    def remove(self, socket: JsonSocket) -> None:
        self.credentials.pop(socket, None)

    async def _watch(self) -> None:
        while self.credentials:
            await asyncio.sleep(settings.SOCKET_AUTH_CHECK_MS / 1000)
            await self.check()

    async def check(self) -> None:
        """Close every socket whose credential no longer signs its user in."""
        watched = dict(self.credentials)
        if not watched:
            return
        try:
            valid = await database_sync_to_async(still_valid)(set(watched.values()))
        except DatabaseError as exc:
            logger.warning("cannot check socket sign-ins: %s", exc)
            return
        for socket, credential in watched.items():
            if credential not in valid and self.credentials.pop(socket, None) is not None:
                logger.info("closing a socket of user %s: signed out", credential.user_id)
                await _sign_out(socket)


async def _sign_out(socket: JsonSocket) -> None:
    try:
        await socket.send_error("signed_out", "this session was signed out")
        await socket.close(code=CLOSE_UNAUTHENTICATED)
    except Exception:  # noqa: BLE001 - already closing: its disconnect follows
        logger.debug("socket already closing", exc_info=True)


sockets = SignedInSockets()
