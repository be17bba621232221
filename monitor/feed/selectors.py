"""What users touch, the reads: the feed, a post and a profile.

Reads only, no events: each function returns querysets or rows for the
pages, with counts as subqueries so that a page costs a fixed number of
queries. The writes are in :mod:`monitor.feed.services`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import (
    Count,
    Exists,
    F,
    IntegerField,
    Model,
    OuterRef,
    QuerySet,
    Subquery,
    Window,
)
from django.db.models.functions import Coalesce, RowNumber

from monitor.models import Comment, Follow, Like, Post

# Comments shown under each post in the feed; the post's page shows them all.
FEED_COMMENTS = 3


def _count_per_post(model: type[Model]) -> Coalesce:
    rows = (
        model._default_manager.filter(post=OuterRef("pk"))
        .order_by()
        .values("post")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(rows, output_field=IntegerField()), 0)


def post_cards(posts: QuerySet[Post], *, viewer: User) -> QuerySet[Post]:
    """``posts`` with what a post's card shows: the author, ``like_count``,
    ``comment_count`` and ``liked`` (whether ``viewer`` likes it).

    Counts are subqueries rather than joins, so a post with many likes and
    many comments costs no more rows.
    """
    return posts.select_related("author").annotate(
        like_count=_count_per_post(Like),
        comment_count=_count_per_post(Comment),
        liked=Exists(Like.objects.filter(post=OuterRef("pk"), user=viewer)),
    )


def attach_comments(posts: Iterable[Post], *, latest: int | None = FEED_COMMENTS) -> list[Post]:
    """Set ``shown_comments`` on each post: its ``latest`` comments (all when
    None), oldest first, with their authors; one query for all the posts."""
    posts = list(posts)
    by_post: dict[int, list[Comment]] = {post.pk: [] for post in posts}
    comments = Comment.objects.filter(post__in=list(by_post)).select_related("author")
    if latest is None:
        for comment in comments.order_by("created_at", "id"):
            by_post[comment.post_id].append(comment)
    else:
        # Newest first, at most ``latest`` per post, in one query.
        newest_first = [F("created_at").desc(), F("id").desc()]
        ranked = comments.annotate(
            rank=Window(RowNumber(), partition_by=[F("post_id")], order_by=newest_first)
        ).filter(rank__lte=latest)
        for comment in ranked:
            by_post[comment.post_id].append(comment)
        for shown in by_post.values():
            shown.sort(key=lambda comment: (comment.created_at, comment.pk))
    for post in posts:
        post.shown_comments = by_post[post.pk]  # type: ignore[attr-defined]  # for the templates
    return posts


def profile_counts(user: User) -> dict[str, Any]:
    """The counts a profile shows: ``posts``, ``followers`` and ``following``."""
    return {
        "posts": Post.objects.filter(author=user).count(),
        "followers": Follow.objects.filter(followee=user).count(),
        "following": Follow.objects.filter(follower=user).count(),
    }


def is_following(follower: User | AnonymousUser, followee: User) -> bool:
    """Whether ``follower`` follows ``followee``; False for someone not signed in."""
    if not follower.is_authenticated:
        return False
    return Follow.objects.filter(follower_id=follower.pk, followee=followee).exists()
