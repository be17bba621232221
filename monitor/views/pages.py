"""The HTTP layer for pages: the feed, posting, signing up, a post and a profile.

Posting and signing up start an event's path: the form is checked here and
the feed's services store the row and its event in one transaction. The
pages render what the selectors read; the feed and a post's page are
stamped with the time of that read, so that live events newer than the page
replace its counts.
"""

from __future__ import annotations

from typing import cast

from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.paginator import Paginator
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from monitor.events.schema import format_time
from monitor.feed.forms import PostForm, SignupForm
from monitor.feed.selectors import attach_comments, is_following, post_cards, profile_counts
from monitor.feed.services import post_create, user_signup
from monitor.models import Post
from monitor.security.ratelimit import rate_limited

FEED_PAGE_SIZE = 20
PROFILE_PAGE_SIZE = 24


@login_required
def feed(request: HttpRequest) -> HttpResponse:
    """Everyone's posts, newest first, FEED_PAGE_SIZE a page, with the posting form."""
    # Before the reads: live counts newer than this replace the page's.
    rendered_at = format_time(timezone.now())
    posts = post_cards(Post.objects.all(), viewer=cast(User, request.user))
    page = Paginator(posts, FEED_PAGE_SIZE).get_page(request.GET.get("page"))
    page.object_list = attach_comments(page.object_list)
    context = {"page": page, "form": PostForm(), "rendered_at": rendered_at}
    return render(request, "monitor/feed.html", context)


def wants_json(request: HttpRequest) -> bool:
    """Whether the client asked for JSON rather than a page (``Accept``)."""
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


@login_required
@require_http_methods(["GET", "POST"])
@rate_limited("post")
def post_new(request: HttpRequest) -> HttpResponse:
    """The posting form; a valid POST stores the photo and its ``photo.posted``
    event, then answers 201 JSON or a redirect to the feed (400 on bad input)."""
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
    """The sign-up form; a valid POST makes the user, signs them in and goes to the feed."""
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


# --- A post's page and a profile ---------------------------------------------


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
