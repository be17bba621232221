"""The HTTP layer for operators: the dashboard page, its data, and the health check.

The dashboard's JSON is what monitor.dashboard reads of the event's path
(topics, consumer groups and their lag, dead letters, rates); ``/healthz``
says whether an event can travel it now: the database, the outbox backlog,
the broker, and the live reader of the web process that answers (how far
behind the topic it is; not ok when stalled or too far behind, see
:mod:`monitor.live.reader_watch`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from monitor.dashboard import overview, rates
from monitor.events import outbox
from monitor.events.schema import EVENT_TYPES
from monitor.kafka import clients as kafka
from monitor.live import hub as fanout

View = Callable[[HttpRequest], HttpResponse]
BROKER_PROBE_SECONDS = 3.0

DASHBOARD_FORBIDDEN = "The dashboard is for staff only; ask an administrator for access."


def dashboard_access(*, api: bool) -> Callable[[View], View]:
    """Let signed-in users in, only staff while ``DASHBOARD_STAFF_ONLY`` is on.

    Pages send anonymous users to the login page and answer others 403 with a
    page that says why; ``api`` views answer JSON ``{"error": ...}`` instead
    (401 for anonymous users).
    """

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def checked(request: HttpRequest) -> HttpResponse:
            if not request.user.is_authenticated:
                if api:
                    return JsonResponse({"error": "sign in to see the dashboard"}, status=401)
                return redirect_to_login(request.get_full_path())
            if settings.DASHBOARD_STAFF_ONLY and not request.user.is_staff:
                if api:
                    return JsonResponse({"error": DASHBOARD_FORBIDDEN}, status=403)
                return render(
                    request,
                    "monitor/dashboard_forbidden.html",
                    {"message": DASHBOARD_FORBIDDEN},
                    status=403,
                )
            return view(request)

        return checked

    return decorate


@dashboard_access(api=False)
def dashboard(request: HttpRequest) -> HttpResponse:
    """The page, with what its script starts from: the event types seen so far
    (with how many of each analytics recorded), the site's own types and
    source, and the topic the site watches."""
    page = {
        "seen_types": rates.seen_types(),
        "site_types": sorted(EVENT_TYPES),
        "site_source": settings.EVENT_SOURCE,
        "events_topic": settings.KAFKA_EVENTS_TOPIC,
    }
    return render(request, "monitor/dashboard.html", {"page": page})


@require_GET
@never_cache
@dashboard_access(api=True)
def dashboard_state(request: HttpRequest) -> HttpResponse:
    """Topics, consumer groups, dead letters and watchers (JSON, polled by /dashboard/)."""
    return JsonResponse(overview.dashboard_state())


@require_GET
@never_cache
@dashboard_access(api=True)
def dashboard_rates(request: HttpRequest) -> HttpResponse:
    """Events per second per type over ``?minutes=`` (5, 15 or 60; 15 if absent), and counters."""
    windows = sorted(rates.RATE_BUCKET_SECONDS)
    raw = request.GET.get("minutes", "15")
    if raw not in {str(minutes) for minutes in windows}:
        allowed = ", ".join(map(str, windows))
        return JsonResponse({"error": f"minutes must be one of {allowed}, not {raw!r}"}, status=400)
    return JsonResponse(rates.event_rates(minutes=int(raw)))


def _check_database() -> dict[str, Any]:
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"ok": True, "latency_ms": _milliseconds_since(started)}


def _database_report() -> dict[str, Any]:
    """``database`` and ``outbox`` (read through the database); only ``database``,
    not ok, when either read fails."""
    try:
        return {"database": _check_database(), "outbox": dict(outbox.backlog())}
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return {"database": {"ok": False, "error": f"{type(exc).__name__}: {exc}"}}


async def _broker_report() -> dict[str, Any]:
    started = time.perf_counter()
    try:
        await kafka.probe_broker(timeout=BROKER_PROBE_SECONDS)
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}".strip()}
    return {"ok": True, "latency_ms": _milliseconds_since(started)}


def _outbox_verdict(backlog: dict[str, Any]) -> dict[str, Any]:
    """The backlog with its limit, ok while the oldest unsent event is within it."""
    limit = settings.OUTBOX_MAX_AGE_SECONDS
    return {
        **backlog,
        "max_age_seconds": limit,
        "ok": backlog["oldest_unsent_age_seconds"] <= limit,
    }


def _milliseconds_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


async def healthz(request: HttpRequest) -> JsonResponse:
    """JSON state of the database, the outbox, the broker and this process's live
    reader; 503 unless all are up.

    The outbox is not ok once its oldest unsent event is older than
    ``OUTBOX_MAX_AGE_SECONDS``: events are waiting on a broker or relay that is
    not keeping up, though posting still works. The live reader is ok while it
    runs within ``LIVE_READER_MAX_BEHIND_SECONDS`` of the topic's end (or does
    not run: nobody watches through this process).
    """
    report = await sync_to_async(_database_report)()
    report["broker"] = await _broker_report()
    report["live_reader"] = fanout.hub.reader_health()
    if "outbox" in report:
        report["outbox"] = _outbox_verdict(report["outbox"])
    healthy = (
        report["database"]["ok"]
        and report["broker"]["ok"]
        and report["live_reader"]["ok"]
        and bool(report.get("outbox", {}).get("ok"))
    )
    report["status"] = "ok" if healthy else "unavailable"
    return JsonResponse(report, status=200 if healthy else 503)
