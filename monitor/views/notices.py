"""The HTTP layer for notices: the notices page and marking notices read.

Notices are the end of an event's path for its recipient: the notifications
worker stored them; these views only read them and mark them read.
"""

from __future__ import annotations

from typing import cast

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from monitor.models import Notice
from monitor.views.actions import action_done, social_action

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
        "rows": [(notice, notice.link()) for notice in shown],
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
    return action_done(request, answer, fallback=reverse("notices"))
