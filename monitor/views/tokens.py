"""The HTTP layer for API tokens: the page where a user makes and revokes
their own (/settings/tokens/); monitor.security.tokens keeps them."""

from __future__ import annotations

from typing import cast

from django import forms
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from monitor.models import ApiToken
from monitor.security.tokens import token_create, token_revoke

MAX_ACTIVE_TOKENS = 50


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        error_messages={"required": "Name the token after the program that will use it."},
    )


@never_cache  # the page that shows a new token must not be kept anywhere
@login_required
@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    """The user's tokens; a valid POST makes one and shows it, this once (201).
    Past MAX_ACTIVE_TOKENS active tokens, a new one is refused (400)."""
    user = cast(User, request.user)
    form = TokenForm(request.POST or None)
    made: str | None = None
    status = 200
    if request.method == "POST":
        active = ApiToken.objects.filter(user=user, revoked__isnull=True).count()
        if active >= MAX_ACTIVE_TOKENS:
            form.add_error(None, f"You have {active} active tokens: revoke one first.")
        if form.is_valid():
            row, made = token_create(user=user, name=form.cleaned_data["name"])
            status = 201
            form = TokenForm()
        else:
            status = 400
    rows = ApiToken.objects.filter(user=user).order_by("revoked", "-created")
    context = {"form": form, "rows": rows, "made": made}
    return render(request, "monitor/tokens.html", context, status=status)


@login_required
@require_POST
def token_revoke_view(request: HttpRequest, token_id: int) -> HttpResponse:
    """Revoke one of the user's own tokens (404 for anyone else's)."""
    row = get_object_or_404(ApiToken, pk=token_id, user=request.user)  # only one's own
    token_revoke(token=row)
    return redirect("tokens")
