"""The HTTP layer for a signed-in user's actions: likes, comments, follows
and deletes, answered with JSON or a redirect back.

Each action calls one service of monitor.feed. The answer repeats the time
and count of the event the change emitted (or now's, when nothing changed),
so that a page keeps the newest count, whether from an answer or a live event.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import cast

from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme

from monitor.events.schema import Event, format_time
from monitor.feed.forms import CommentForm
from monitor.feed.services import (
    comment_add,
    comment_delete,
    follow,
    like_photo,
    post_delete,
    unfollow,
    unlike_photo,
)
from monitor.models import Comment, Follow, Like, Post
from monitor.security.ratelimit import rate_limited
from monitor.views.pages import wants_json

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


def action_done(
    request: HttpRequest,
    answer: dict[str, object],
    *,
    fallback: str,
    anchor: str = "",
    status: int = 200,
) -> HttpResponse:
    """``answer`` as JSON (with ``status``) when asked for, else a redirect back
    to the page the form came from (``fallback`` if none), at ``anchor``."""
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
    return action_done(request, answer, fallback=reverse("feed"), anchor=f"post-{post.pk}")


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
    return action_done(request, answer, fallback=reverse("feed"), anchor=anchor, status=201)


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
    return action_done(request, answer, fallback=reverse("feed"), anchor=f"post-{data['post_id']}")


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
    return action_done(request, answer, fallback=reverse("profile", args=[followee.get_username()]))


@social_action
def user_follow(request: HttpRequest, username: str) -> HttpResponse:
    return _follow_answer(request, username, follows=True)


@social_action
def user_unfollow(request: HttpRequest, username: str) -> HttpResponse:
    return _follow_answer(request, username, follows=False)
