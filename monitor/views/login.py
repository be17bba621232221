"""The HTTP layer for signing in: Django's sign-in page, with sign-in attempts
rate limited (monitor.security.ratelimit) before any password is checked."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse

from monitor.security.ratelimit import hit


class RateLimitedLoginView(LoginView):
    """Django's LoginView, whose POSTs count as action ``login`` per client
    address and per username tried (``login:<username, lowercased>``), so that
    guessing is slow from one address and against one account from many.
    Over a limit, the attempt is refused with 429 before any password check."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        username = request.POST.get("username", "").strip().lower()
        refusal = hit(request, "login", extra_keys=[f"login:{username}"] if username else [])
        if refusal is not None:
            return refusal.response(request)
        return super().post(request, *args, **kwargs)
