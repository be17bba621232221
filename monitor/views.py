from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import cast

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import IntegrityError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from . import kafka, outbox, overview, rates
from .events import EVENT_TYPES, Event, format_time
from .forms import CommentForm, PostForm, SignupForm
from .models import Comment, Follow, Like, Notice, Post
from .notifications import notice_link
from .ratelimit import rate_limited
from .selectors import attach_comments, is_following, post_cards, profile_counts
from .services import (
    comment_add,
    comment_delete,
    follow,
    like_photo,
    post_create,
    post_delete,
    unfollow,
    unlike_photo,
    user_signup,
)

View = Callable[[HttpRequest], HttpResponse]


@login_required
def feed(request: HttpRequest) -> HttpResponse:
    # Before the reads: live counts newer than this replace the page's.
    rendered_at = format_time(timezone.now())
    posts = post_cards(Post.objects.all(), viewer=cast(User, request.user))
    page = Paginator(posts, 20).get_page(request.GET.get("page"))
    page.object_list = attach_comments(page.object_list)
    context = {"page": page, "form": PostForm(), "rendered_at": rendered_at}
    return render(request, "monitor/feed.html", context)


def wants_json(request: HttpRequest) -> bool:
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


@login_required
@require_http_methods(["GET", "POST"])
@rate_limited("post")
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
    return render(request, "monitor/dashboard.html", {"event_types": sorted(EVENT_TYPES)})


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


# --- The social feed: a post's page, profiles, and actions on posts and users ---

PROFILE_PAGE_SIZE = 24


@login_required
def post_detail(request: HttpRequest, post_id: int) -> HttpResponse:
    """One post with all its comments, updated live like the feed."""
    rendered_at = format_time(timezone.now())
    posts = post_cards(Post.objects.all(), viewer=cast(User, request.user))
    post = get_object_or_404(posts, pk=post_id)
    attach_comments([post], latest=None)
    return render(request, "monitor/post_detail.html", {"post": post, "rendered_at": rendered_at})


@login_required
def profile(request: HttpRequest, username: str) -> HttpResponse:
    """A user's photos, newest first, their counts, and a follow button for others."""
    owner = get_object_or_404(User, username=username)
    posts = post_cards(Post.objects.filter(author=owner), viewer=cast(User, request.user))
    page = Paginator(posts, PROFILE_PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "owner": owner,
        "page": page,
        "counts": profile_counts(owner),
        "following": is_following(request.user, owner),
    }
    return render(request, "monitor/profile.html", context)


NOT_FOUND = {
    Post.DoesNotExist: "That post does not exist (it may have been deleted).",
    Comment.DoesNotExist: "That comment does not exist (it may have been deleted).",
    User.DoesNotExist: "There is no user by that name.",
}

ActionView = Callable[..., HttpResponse]


def social_action(view: ActionView) -> ActionView:
    """A signed-in user's action: POST only (with CSRF), answered with JSON
    when ``Accept: application/json`` asks for it and with a redirect back
    otherwise. A missing object is 404, someone else's post or comment 403,
    bad input 400, each with a message (JSON ``{"error": ...}``)."""

    @functools.wraps(view)
    def checked(request: HttpRequest, **kwargs: object) -> HttpResponse:
        if request.method != "POST":
            response = _refuse(request, 405, "This address takes only POST requests.")
            response["Allow"] = "POST"
            return response
        if not request.user.is_authenticated:
            if wants_json(request):
                return JsonResponse({"error": "Sign in first."}, status=401)
            return redirect_to_login(reverse("feed"))
        try:
            return view(request, **kwargs)
        except ObjectDoesNotExist as exc:
            return _refuse(request, 404, NOT_FOUND.get(type(exc), "Not found."))
        except PermissionDenied as exc:
            return _refuse(request, 403, str(exc) or "That is not yours to change.")
        except ValidationError as exc:
            return _refuse(request, 400, " ".join(exc.messages))

    return checked


def _back_url(request: HttpRequest, fallback: str) -> str:
    """The page the form came from (its ``next`` field), if it is on this site."""
    candidate = request.POST.get("next", "")
    safe = url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return candidate if candidate and safe else fallback


def _refuse(request: HttpRequest, status: int, message: str) -> HttpResponse:
    if wants_json(request):
        return JsonResponse({"error": message}, status=status)
    back = _back_url(request, reverse("feed"))
    context = {"message": message, "back": back}
    return render(request, "monitor/action_error.html", context, status=status)


def _done(
    request: HttpRequest,
    answer: dict[str, object],
    *,
    fallback: str,
    anchor: str = "",
    status: int = 200,
) -> HttpResponse:
    if wants_json(request):
        return JsonResponse(answer, status=status)
    url = _back_url(request, fallback)
    return redirect(f"{url}#{anchor}" if anchor and "#" not in url else url)


def _like_answer(request: HttpRequest, post_id: int, *, like: bool) -> HttpResponse:
    user = cast(User, request.user)
    post = Post.objects.get(pk=post_id)
    action = like_photo if like else unlike_photo
    event = action(user=user, post=post)
    at, count = _counted(event, "like_count", lambda: Like.objects.filter(post=post).count())
    answer = {"post_id": post.pk, "liked": like, "like_count": count, "at": at}
    return _done(request, answer, fallback=reverse("feed"), anchor=f"post-{post.pk}")


def _counted(event: Event | None, field: str, count: Callable[[], int]) -> tuple[str, int]:
    """The time and count an answer carries: its event's, or now's when nothing
    changed. Pages keep the count with the latest time, from answers and events."""
    if event is not None:
        return event["time"], event["data"][field]
    at = format_time(timezone.now())  # before counting, as a page does
    return at, count()


@social_action
@rate_limited("like")
def post_like(request: HttpRequest, post_id: int) -> HttpResponse:
    return _like_answer(request, post_id, like=True)


@social_action
@rate_limited("like")
def post_unlike(request: HttpRequest, post_id: int) -> HttpResponse:
    return _like_answer(request, post_id, like=False)


@social_action
@rate_limited("comment")
def post_comment(request: HttpRequest, post_id: int) -> HttpResponse:
    post = Post.objects.get(pk=post_id)
    form = CommentForm(request.POST)
    if not form.is_valid():
        raise ValidationError([str(error) for error in form.errors["text"]])
    event = comment_add(author=cast(User, request.user), post=post, text=form.cleaned_data["text"])
    data = event["data"]
    answer = {
        "post_id": post.pk,
        "comment": {
            "id": data["comment_id"],
            "post_id": post.pk,
            "user_id": data["user_id"],
            "username": data["username"],
            "text": data["text"],
        },
        "comment_count": data["comment_count"],
        "at": event["time"],
    }
    anchor = f"comment-{data['comment_id']}"
    return _done(request, answer, fallback=reverse("feed"), anchor=anchor, status=201)


@social_action
def comment_remove(request: HttpRequest, comment_id: int) -> HttpResponse:
    comment = Comment.objects.get(pk=comment_id)
    event = comment_delete(user=cast(User, request.user), comment=comment)
    data = event["data"]
    answer = {
        "post_id": data["post_id"],
        "comment_id": data["comment_id"],
        "comment_count": data["comment_count"],
        "at": event["time"],
    }
    return _done(request, answer, fallback=reverse("feed"), anchor=f"post-{data['post_id']}")


@social_action
def post_remove(request: HttpRequest, post_id: int) -> HttpResponse:
    post = Post.objects.get(pk=post_id)
    post_delete(user=cast(User, request.user), post=post)
    answer = {"post_id": post_id, "deleted": True}
    if wants_json(request):
        return JsonResponse(answer)
    # Back to where the form was, unless that was the deleted post's own page.
    back = _back_url(request, reverse("feed"))
    if back.startswith(reverse("post_detail", args=[post_id])):
        back = reverse("feed")
    return redirect(back)


def _follow_answer(request: HttpRequest, username: str, *, follows: bool) -> HttpResponse:
    followee = User.objects.get(username=username)
    action = follow if follows else unfollow
    action(follower=cast(User, request.user), followee=followee)
    answer = {
        "username": followee.get_username(),
        "following": follows,
        "follower_count": Follow.objects.filter(followee=followee).count(),
    }
    return _done(request, answer, fallback=reverse("profile", args=[followee.get_username()]))


@social_action
def user_follow(request: HttpRequest, username: str) -> HttpResponse:
    return _follow_answer(request, username, follows=True)


@social_action
def user_unfollow(request: HttpRequest, username: str) -> HttpResponse:
    return _follow_answer(request, username, follows=False)


# --- Notices ----------------------------------------------------------------

NOTICES_PER_PAGE = 50


@login_required
@require_GET
@never_cache
def notices(request: HttpRequest) -> HttpResponse:
    """The signed-in user's notices, newest first; the ones shown are read from now on."""
    user = cast(User, request.user)
    page = Paginator(Notice.objects.filter(recipient=user), NOTICES_PER_PAGE).get_page(
        request.GET.get("page")
    )
    shown = list(page.object_list)  # as they were: the unread ones are shown as new
    unread_shown = [notice.pk for notice in shown if notice.read_at is None]
    if unread_shown:
        Notice.objects.filter(recipient=user, pk__in=unread_shown).update(read_at=timezone.now())
    context = {
        "page": page,
        "rows": [(notice, notice_link(notice)) for notice in shown],
        "unread": Notice.objects.filter(recipient=user, read_at__isnull=True).count(),
    }
    return render(request, "monitor/notices.html", context)


def _notice_id(raw: str) -> int | None:
    """The optional ``up_to`` field: a notice id, or None when it is empty."""
    if not raw:
        return None
    if not raw.isdecimal() or len(raw) > 18:
        raise ValidationError("up_to must be a notice id (a positive whole number).")
    return int(raw)


@social_action
def notices_read(request: HttpRequest) -> HttpResponse:
    """Mark the signed-in user's notices read: all of them, or only those up to
    the id in ``up_to`` (the newest one the user has seen). Answers the number
    marked and the number still unread."""
    user = cast(User, request.user)
    up_to = _notice_id(request.POST.get("up_to", ""))
    unread = Notice.objects.filter(recipient=user, read_at__isnull=True)
    marked = (unread if up_to is None else unread.filter(pk__lte=up_to)).update(
        read_at=timezone.now()
    )
    answer: dict[str, object] = {"marked": marked, "unread": unread.count()}
    return _done(request, answer, fallback=reverse("notices"))
