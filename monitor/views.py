from __future__ import annotations

import time
from typing import cast

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.paginator import Paginator
from django.db import IntegrityError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from . import kafka, outbox
from .events import EVENT_TYPES
from .forms import PostForm, SignupForm
from .models import Post
from .services import post_create, user_signup


@login_required
def feed(request: HttpRequest) -> HttpResponse:
    posts = Post.objects.select_related("author")
    page = Paginator(posts, 20).get_page(request.GET.get("page"))
    return render(request, "monitor/feed.html", {"page": page, "form": PostForm()})


def wants_json(request: HttpRequest) -> bool:
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


@login_required
@require_http_methods(["GET", "POST"])
def post_new(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return render(request, "monitor/post_form.html", {"form": PostForm()})
    form = PostForm(request.POST, request.FILES)
    if not form.is_valid():
        if wants_json(request):
            return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
        return render(request, "monitor/post_form.html", {"form": form}, status=400)
    post = post_create(
        author=cast(User, request.user),  # login_required
        photo=form.cleaned_data["photo"],
        caption=form.cleaned_data["caption"],
    )
    if wants_json(request):
        return JsonResponse({"id": post.pk}, status=201)
    return redirect("feed")


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    form = SignupForm(request.POST or None)
    if request.method == "POST":
        if not form.is_valid():
            return render(request, "registration/signup.html", {"form": form}, status=400)
        try:
            user = user_signup(
                username=form.cleaned_data["username"], password=form.cleaned_data["password"]
            )
        except IntegrityError:  # someone took the name since the form checked it
            form.add_error("username", "That username is taken.")
            return render(request, "registration/signup.html", {"form": form}, status=400)
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("feed")
    return render(request, "registration/signup.html", {"form": form})


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "monitor/dashboard.html", {"event_types": sorted(EVENT_TYPES)})


def _check_database() -> dict:
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


async def healthz(request: HttpRequest) -> JsonResponse:
    """JSON state of the database, the broker and the outbox; 503 unless all are up."""
    report: dict = {}
    try:
        report["database"] = await sync_to_async(_check_database)()
        report["outbox"] = await sync_to_async(outbox.backlog)()
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        report["database"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    started = time.perf_counter()
    try:
        await kafka.probe_broker(timeout=3.0)
        report["broker"] = {
            "ok": True,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        }
    except (TimeoutError, Exception) as exc:  # noqa: BLE001
        report["broker"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}".strip()}
    outbox_state = report.get("outbox")
    if outbox_state is not None:
        outbox_state["max_age_seconds"] = settings.OUTBOX_MAX_AGE_SECONDS
        outbox_state["ok"] = (
            outbox_state["oldest_unsent_age_seconds"] <= settings.OUTBOX_MAX_AGE_SECONDS
        )
    healthy = (
        report["database"]["ok"]
        and report["broker"]["ok"]
        and bool(outbox_state and outbox_state["ok"])
    )
    report["status"] = "ok" if healthy else "unavailable"
    return JsonResponse(report, status=200 if healthy else 503)
