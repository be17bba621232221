"""The HTTP layer for programs: JSON answers, signed in by a token or a session.

A program's post enters the event's path here: ``POST /api/posts/`` hands
the photo to the feed's services, which store it and emit its event.

A request signs in with ``Authorization: Bearer <token>`` (see
:mod:`monitor.security.tokens`), which needs no CSRF token: a page on another site
cannot make a browser send it. Without one, the session cookie counts, and
then the CSRF token must come with the request (the ``X-CSRFToken`` header
or the ``csrfmiddlewaretoken`` field), as for any form on the site.

Every error is JSON: ``{"error": {"code": "...", "message": "..."}}``, with
``fields`` for a form's errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from monitor.feed.forms import PostForm
from monitor.feed.services import post_publish
from monitor.security import ratelimit
from monitor.security.tokens import bearer_from_header, user_for_token

ApiView = Callable[..., HttpResponse]


def api_error(status: int, code: str, message: str, **extra: Any) -> JsonResponse:
    response = JsonResponse({"error": {"code": code, "message": message, **extra}}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="eventsite"'
    return response


class _CsrfCheck(CsrfViewMiddleware):
    """Django's CSRF check, keeping the reason a request fails (``reason``)
    instead of rendering Django's failure page."""

    reason: str | None = None

    def _reject(self, request: HttpRequest, reason: str) -> HttpResponse:
        self.reason = reason
        return HttpResponseForbidden(reason)


def _csrf_refusal(request: HttpRequest) -> str | None:
    """Why the session request fails the CSRF check, or None if it passes."""
    check = _CsrfCheck(lambda request: HttpResponse())
    check.process_request(request)
    check.process_view(request, lambda request: HttpResponse(), (), {})
    return check.reason


def _sign_in(request: HttpRequest) -> JsonResponse | None:
    """Sign the request in by its bearer token, or keep its session's user after
    the CSRF check; None once signed in, else the 401 or 403 to answer."""
    header = request.headers.get("Authorization")
    if header is not None:
        token = bearer_from_header(header)
        found = user_for_token(token) if token else None
        if found is None:
            return api_error(401, "invalid_token", "the token is not valid, or was revoked")
        request.user = found[0]
        return None
    if not request.user.is_authenticated:
        return api_error(401, "unauthenticated", "send Authorization: Bearer <token>, or sign in")
    reason = _csrf_refusal(request)
    if reason is not None:
        return api_error(403, "csrf_failed", f"CSRF check failed: {reason}")
    return None


def api_view(methods: tuple[str, ...]) -> Callable[[ApiView], ApiView]:
    """An API endpoint answering ``methods``: signs the request in by token or
    session (with CSRF), or answers 401/403/405 in JSON."""

    def decorate(view: ApiView) -> ApiView:
        @csrf_exempt  # checked below, for session requests only
        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                response = api_error(405, "method_not_allowed", f"use {' or '.join(methods)} here")
                response["Allow"] = ", ".join(methods)
                return response
            refusal = _sign_in(request)
            if refusal is not None:
                return refusal
            return view(request, *args, **kwargs)

        checked.__name__ = view.__name__
        checked.__doc__ = view.__doc__
        return checked

    return decorate


@api_view(("POST",))
def posts(request: HttpRequest) -> HttpResponse:
    """``POST /api/posts/``: multipart ``photo`` and ``caption``; 201 with the
    post's id and its ``photo.posted`` event's id (429 over the ``post`` rate
    limit, shared with the site's own form)."""
    refusal = ratelimit.hit(request, "post")
    if refusal is not None:
        return refusal.response(request)
    form = PostForm(request.POST, request.FILES)
    if not form.is_valid():
        fields = {
            name: [e["message"] for e in errors]
            for name, errors in form.errors.get_json_data().items()
        }
        first = next(iter(fields.values()))[0]
        return api_error(400, "invalid", first, fields=fields)
    assert not isinstance(request.user, AnonymousUser)
    post, event = post_publish(
        author=request.user,
        photo=form.cleaned_data["photo"],
        caption=form.cleaned_data["caption"],
    )
    url = reverse("post_detail", args=[post.pk])
    response = JsonResponse(
        {
            "id": post.pk,
            "event_id": event["id"],
            "url": request.build_absolute_uri(url),
            "photo_url": request.build_absolute_uri(post.photo.url),
            "thumbnail_url": request.build_absolute_uri(post.thumbnail.url),
            "caption": post.caption,
        },
        status=201,
    )
    response["Location"] = url
    return response
