"""Rate limits on posting, liking, commenting and signing in.

Each action has a limit, at most N requests every S seconds
(``settings.RATE_LIMITS``), applied separately to each key of a request: the
signed-in user (``user:<pk>``) and the client address (``addr:<ip>``, IPv6
addresses grouped by /64), plus any keys the caller adds (the sign-in view
adds the username tried). A request over the limit of any of its keys is
refused before the view does anything, with 429 and ``Retry-After``.

Counts are shared by every web process: one row per key and fixed window
(``RateCounter``), raised by a single atomic upsert that stops at the limit
(``INSERT ... ON CONFLICT DO UPDATE ... WHERE ... RETURNING``; SQLite 3.35+
or PostgreSQL), so concurrent requests can never both take the last place.
Rows of ended windows are deleted now and then, a bounded batch at a time.

In an event's path this comes first: a limited view is refused before it
writes anything, so a refused request emits no event.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Concatenate, ParamSpec

from django.conf import settings
from django.db import connections, router, transaction
from django.db.backends.utils import CursorWrapper
from django.db.models import Field
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from monitor.models import RateCounter
from monitor.security.client_address import address_key, client_address

logger = logging.getLogger(__name__)

P = ParamSpec("P")
View = Callable[Concatenate[HttpRequest, P], HttpResponse]

# What the message calls each action's requests.
ACTION_NOUNS = {
    "post": "posts",
    "like": "likes",
    "comment": "comments",
    "login": "sign-in attempts",
}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Requests that also delete ended windows, and how many rows each deletes at
# most: enough to keep up with new windows, never a long write.
PRUNE_CHANCE = 0.02
PRUNE_BATCH = 500
KEY_MAX_LENGTH = RateCounter._meta.get_field("key").max_length or 200


def clock() -> float:
    """Now, in Unix seconds; the only clock this module reads."""
    return time.time()


@dataclass(frozen=True)
class Refusal:
    """A request refused for going over ``limit`` requests every ``seconds``
    on ``key``; the window ends in ``retry_after`` seconds (at least 1)."""

    action: str
    key: str
    limit: int
    seconds: int
    retry_after: int

    @property
    def message(self) -> str:
        noun = ACTION_NOUNS.get(self.action, f"{self.action} requests")
        return (
            f"Too many {noun}: at most {self.limit} every {self.seconds} seconds. "
            f"Try again in {self.retry_after} seconds."
        )

    def response(self, request: HttpRequest) -> HttpResponse:
        """429 with ``Retry-After``: JSON for API clients, a page for browsers."""
        response: HttpResponse
        if _wants_json(request):
            error = {
                "code": "rate_limited",
                "message": self.message,
                "retry_after": self.retry_after,
            }
            response = JsonResponse({"error": error}, status=429)
        else:
            context = {"message": self.message, "back": _back_url(request)}
            response = render(request, "monitor/rate_limited.html", context, status=429)
        response["Retry-After"] = str(self.retry_after)
        return response


def hit(
    request: HttpRequest,
    action: str,
    *,
    extra_keys: Sequence[str] = (),
    now: float | None = None,
) -> Refusal | None:
    """Count one request of ``action`` on each of its keys (the user's, the
    address's, then ``extra_keys``); None if it is within every limit, else
    the Refusal of the first key over its limit. All keys are counted in one
    transaction (one write, one turn of SQLite's writers), and a refused
    request is counted on none of them, so a client that keeps trying gets in
    again as soon as the window ends. Actions without a limit in
    ``settings.RATE_LIMITS`` are neither counted nor limited.

    Call it before the request changes anything, outside any transaction
    (the count is committed at once, whatever the request does next).
    """
    rate = settings.RATE_LIMITS.get(action)
    if rate is None:
        return None
    limit, seconds = rate
    at = clock() if now is None else now
    keys = [f"{action}/{subject}" for subject in [*request_keys(request), *extra_keys]]
    alias = router.db_for_write(RateCounter)
    # A transaction, so that on SQLite the write takes its turn (eventsite/sqlite3).
    with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
        for key in keys:
            retry_after = _count(cursor, key, limit=limit, seconds=seconds, now=at)
            if retry_after is not None:
                transaction.set_rollback(True, using=alias)
                logger.info(
                    "rate limited %s: over %d every %ds, retry in %ds",
                    key,
                    limit,
                    seconds,
                    retry_after,
                )
                return Refusal(action, key, limit, seconds, retry_after)
    if random.random() < PRUNE_CHANCE:
        prune_expired(now=at)
    return None


def rate_limited(action: str) -> Callable[[View[P]], View[P]]:
    """Decorate a function view so that its POSTs (any unsafe method) count
    as ``action`` (see ``hit``); over the limit, the view does not run and the
    client is answered 429. Put it below decorators that check the method or
    sign-in, so that requests they refuse are not counted."""

    def decorate(view: View[P]) -> View[P]:
        def limited(request: HttpRequest, /, *args: P.args, **kwargs: P.kwargs) -> HttpResponse:
            if request.method not in SAFE_METHODS:
                refusal = hit(request, action)
                if refusal is not None:
                    return refusal.response(request)
            return view(request, *args, **kwargs)

        functools.update_wrapper(limited, view)
        return limited

    return decorate


def request_keys(request: HttpRequest) -> list[str]:
    """The keys a request counts on: its signed-in user's, then its address's."""
    keys = []
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        keys.append(f"user:{user.pk}")
    keys.append(address_key(client_address(request)))
    return keys


def prune_expired(*, now: float | None = None) -> int:
    """Delete at most PRUNE_BATCH counters whose window has ended; returns how many."""
    at = int(clock() if now is None else now)
    ended = RateCounter.objects.filter(expires__lte=at).values("pk")[:PRUNE_BATCH]
    deleted, _ = RateCounter.objects.filter(pk__in=ended).delete()
    return deleted


def _count(cursor: CursorWrapper, key: str, *, limit: int, seconds: int, now: float) -> int | None:
    """Take a place in ``key``'s current window: None if there was one, else
    the seconds until the window ends."""
    window_start = int(now // seconds) * seconds
    expires = window_start + seconds
    quote = cursor.db.ops.quote_name
    table = quote(RateCounter._meta.db_table)
    key_column, start, end, hits = (
        quote(_column(name)) for name in ("key", "window_start", "expires", "hits")
    )
    # One statement: a new window starts at 1; an existing one goes up by 1
    # only while below the limit, and no row comes back once it is full.
    sql = (
        f"INSERT INTO {table} ({key_column}, {start}, {end}, {hits}) VALUES (%s, %s, %s, 1) "
        f"ON CONFLICT ({key_column}, {start}) DO UPDATE SET {hits} = {table}.{hits} + 1 "
        f"WHERE {table}.{hits} < %s RETURNING {hits}"
    )
    cursor.execute(sql, [_stored_key(key), window_start, expires, limit])
    taken = cursor.fetchone() is not None
    return None if taken else max(1, math.ceil(expires - now))


def _column(name: str) -> str:
    field = RateCounter._meta.get_field(name)
    assert isinstance(field, Field) and field.column is not None
    return field.column


def _stored_key(key: str) -> str:
    """``key``, or for one too long for the column its start and a digest."""
    if len(key) <= KEY_MAX_LENGTH:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{key[: KEY_MAX_LENGTH - len(digest) - 1]}#{digest}"


def _wants_json(request: HttpRequest) -> bool:
    """As ``monitor.views.wants_json``, and every request under /api/."""
    accept = request.headers.get("Accept", "")
    asks = "application/json" in accept and "text/html" not in accept
    return asks or request.path.startswith("/api/")


def _back_url(request: HttpRequest) -> str:
    """The page the request came from, if it is on this site; else the feed.
    (Not the form's ``next`` field: reading the form may mean reading an upload.)"""
    referer = request.headers.get("Referer", "")
    safe = url_has_allowed_host_and_scheme(
        referer, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return referer if referer and safe else reverse("feed")
