"""Valid event envelopes for tests, built by the product's own ``build_event``
(so each one passes the schema): sign-ups, photos, likes and comments.

Each call makes a new envelope with a new event id; the same ``n`` gives the
same subject, actor and data, so a test can tell what it expects to see."""

from __future__ import annotations

from datetime import datetime

from monitor.events.schema import Event, build_event


def signup_event(n: int, *, at: datetime | None = None, source: str = "/test") -> Event:
    """A ``user.signed_up`` envelope for user ``n``."""
    return build_event(
        type="user.signed_up",
        subject=f"users/{n}",
        actor=str(n),
        data={"user_id": n, "username": f"user{n}"},
        source=source,
        time=at,
    )


def signups(first: int, count: int) -> list[Event]:
    """Sign-ups of users ``first`` to ``first + count - 1``, in that order."""
    return [signup_event(n) for n in range(first, first + count)]


def photo_event(
    n: int, *, author_id: int | None = None, caption: str | None = None, at: datetime | None = None
) -> Event:
    """A ``photo.posted`` envelope for post ``n`` (by user ``n`` unless ``author_id``)."""
    author = n if author_id is None else author_id
    return build_event(
        type="photo.posted",
        subject=f"posts/{n}",
        actor=str(author),
        data={
            "post_id": n,
            "author_id": author,
            "author": f"user{author}",
            "caption": f"caption {n}" if caption is None else caption,
            "photo_url": f"/media/photos/{n}.jpg",
        },
        source="/test",
        time=at,
    )


def social_event(type: str, *, actor: int, post_id: int, at: datetime, **data: object) -> Event:
    """A like, unlike or comment (``type``) on ``post_id``, whose author is user 1,
    by user ``actor``; ``data`` adds or overrides fields."""
    fields: dict[str, object] = {
        "post_id": post_id,
        "post_author_id": 1,
        "user_id": actor,
        "username": f"user{actor}",
    }
    if type == "comment.added":
        fields.update(comment_id=data.pop("comment_id", 1), text=data.pop("text", "nice"))
    return build_event(
        type=type,
        subject=f"posts/{post_id}",
        actor=str(actor),
        data={**fields, **data},
        source="/test",
        time=at,
    )


def liked(post_id: int, actor: int, at: datetime) -> Event:
    """``photo.liked``: user ``actor`` likes post ``post_id`` at ``at``."""
    return social_event("photo.liked", actor=actor, post_id=post_id, at=at)


def unliked(post_id: int, actor: int, at: datetime) -> Event:
    """``photo.unliked``: user ``actor`` takes back a like of post ``post_id``."""
    return social_event("photo.unliked", actor=actor, post_id=post_id, at=at)


def commented(post_id: int, actor: int, at: datetime, text: str = "nice") -> Event:
    """``comment.added``: user ``actor`` comments ``text`` on post ``post_id``."""
    return social_event("comment.added", actor=actor, post_id=post_id, at=at, text=text)
