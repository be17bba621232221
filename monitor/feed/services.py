"""What users touch, the writes: sign up, post, like, comment, follow, delete.

These services are where an event's path begins. Each change is saved and
its event emitted (through the outbox) in one transaction, so the event
exists exactly when the change does; nothing else in the project emits
events. Each event's data is built as its type's TypedDict
(:mod:`monitor.events.event_types`), so the type checker sees every field
written. The reads are in :mod:`monitor.feed.selectors`.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.storage import Storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from monitor.events.emit import emit_event
from monitor.events.event_types import (
    CommentAddedData,
    CommentDeletedData,
    LikeData,
    PhotoDeletedData,
    PhotoPostedData,
    UserFollowedData,
    UserSignedUpData,
    UserUnfollowedData,
)
from monitor.events.schema import Event
from monitor.feed.images import ProcessedPhoto, process_upload
from monitor.models import Comment, Follow, Like, Post

logger = logging.getLogger(__name__)


def user_signup(*, username: str, password: str) -> User:
    """Create a user and emit ``user.signed_up``."""
    with transaction.atomic():
        user = User.objects.create_user(username=username, password=password)
        emit_event(
            type="user.signed_up",
            subject=f"users/{user.pk}",
            actor=str(user.pk),
            data=UserSignedUpData(user_id=user.pk, username=user.get_username()),
        )
    return user


def post_create(*, author: User, photo: UploadedFile[Any] | ProcessedPhoto, caption: str) -> Post:
    """Store a photo post and emit ``photo.posted`` (see :func:`post_publish`)."""
    return post_publish(author=author, photo=photo, caption=caption)[0]


def post_publish(
    *, author: User, photo: UploadedFile[Any] | ProcessedPhoto, caption: str
) -> tuple[Post, Event]:
    """Store a photo post and emit ``photo.posted``; returns the post and its event.

    ``photo`` is an upload, checked and re-encoded here (raises
    ``images.PhotoRejected``), or what ``PostForm`` made of one. Only the
    re-encoded photo and its thumbnail are stored, under random names. They
    are written first, outside the transaction (which holds the database's
    write lock, so it stays short); if anything fails, both files are removed
    again so nothing is left behind.
    """
    processed = photo if isinstance(photo, ProcessedPhoto) else process_upload(photo)
    post = Post(author=author, caption=caption)
    try:
        # The models' upload_to keeps only the extension of these names.
        post.photo.save(processed.photo.filename("photo"), processed.photo.as_file(), save=False)
        thumbnail = processed.thumbnail
        post.thumbnail.save(thumbnail.filename("thumbnail"), thumbnail.as_file(), save=False)
        with transaction.atomic():
            post.save()
            event = emit_event(
                type="photo.posted",
                subject=f"posts/{post.pk}",
                actor=str(author.pk),
                data=PhotoPostedData(
                    post_id=post.pk,
                    author_id=author.pk,
                    author=author.get_username(),
                    caption=caption,
                    photo_url=post.photo.url,
                    thumbnail_url=post.thumbnail.url,
                ),
            )
    except BaseException:
        for file in (post.photo, post.thumbnail):
            if file.name:
                file.delete(save=False)
        raise
    return post, event


# --- Likes, comments, follows and deletes -----------------------------------
# Each returns the event it emitted, or None when there was nothing to change
# (a second like, an unlike without a like): no change, no event. Likes and
# comments lock the post's row first, so the counts their events carry
# (``like_count``, ``comment_count``: the post's count after the change) are
# exact and rise with the event's time; a page applies the latest one.

MAX_COMMENT_LENGTH = 1000


def _locked_post(post_id: int) -> Post:
    """The post, locked until the transaction ends (SQLite writers take turns
    anyway); raises Post.DoesNotExist once it is deleted."""
    return Post.objects.select_for_update().get(pk=post_id)


def _like_event(type: Literal["photo.liked", "photo.unliked"], *, user: User, post: Post) -> Event:
    return emit_event(
        type=type,
        subject=f"posts/{post.pk}",
        actor=str(user.pk),
        data=LikeData(
            post_id=post.pk,
            post_author_id=post.author_id,
            user_id=user.pk,
            username=user.get_username(),
            like_count=Like.objects.filter(post_id=post.pk).count(),
        ),
    )


def like_photo(*, user: User, post: Post) -> Event | None:
    """Like a post and emit ``photo.liked``; None if the user likes it already.

    Raises Post.DoesNotExist if the post was deleted.
    """
    with transaction.atomic():
        post = _locked_post(post.pk)
        _, created = Like.objects.get_or_create(user=user, post=post)
        return _like_event("photo.liked", user=user, post=post) if created else None


def unlike_photo(*, user: User, post: Post) -> Event | None:
    """Take a like back and emit ``photo.unliked``; None if there was no like."""
    with transaction.atomic():
        post = _locked_post(post.pk)
        removed, _ = Like.objects.filter(user=user, post=post).delete()
        return _like_event("photo.unliked", user=user, post=post) if removed else None


def comment_add(*, author: User, post: Post, text: str) -> Event:
    """Comment on a post and emit ``comment.added`` (its ``comment_id`` names the comment).

    Raises ValidationError for a blank comment or one over MAX_COMMENT_LENGTH
    characters, Post.DoesNotExist if the post was deleted.
    """
    text = text.strip()
    if not text:
        raise ValidationError("Write a comment.")
    if len(text) > MAX_COMMENT_LENGTH:
        raise ValidationError(f"A comment is at most {MAX_COMMENT_LENGTH:,} characters.")
    with transaction.atomic():
        post = _locked_post(post.pk)
        comment = Comment.objects.create(post=post, author=author, text=text)
        return emit_event(
            type="comment.added",
            subject=f"posts/{post.pk}",
            actor=str(author.pk),
            data=CommentAddedData(
                comment_id=comment.pk,
                post_id=post.pk,
                post_author_id=post.author_id,
                user_id=author.pk,
                username=author.get_username(),
                text=text,
                comment_count=Comment.objects.filter(post_id=post.pk).count(),
            ),
        )


def comment_delete(*, user: User, comment: Comment) -> Event:
    """Delete one's own comment and emit ``comment.deleted``.

    Raises PermissionDenied for someone else's comment (nothing changes),
    Comment.DoesNotExist if it is gone already.
    """
    with transaction.atomic():
        post = _locked_post(comment.post_id)
        comment = Comment.objects.get(pk=comment.pk)
        if comment.author_id != user.pk:
            raise PermissionDenied("You can delete only your own comments.")
        comment_id = comment.pk
        comment.delete()
        return emit_event(
            type="comment.deleted",
            subject=f"posts/{post.pk}",
            actor=str(user.pk),
            data=CommentDeletedData(
                comment_id=comment_id,
                post_id=post.pk,
                user_id=user.pk,
                comment_count=Comment.objects.filter(post_id=post.pk).count(),
            ),
        )


def post_delete(*, user: User, post: Post) -> Event:
    """Delete one's own post (its likes and comments with it) and emit ``photo.deleted``.

    The photo and thumbnail files are removed once the transaction has
    committed, so a rollback leaves the post whole. Raises PermissionDenied
    for someone else's post, Post.DoesNotExist if it is gone already.
    """
    with transaction.atomic():
        post = _locked_post(post.pk)
        if post.author_id != user.pk:
            raise PermissionDenied("You can delete only your own posts.")
        post_id = post.pk
        storage = post.photo.storage
        names = [file.name for file in (post.photo, post.thumbnail) if file.name]
        post.delete()
        event = emit_event(
            type="photo.deleted",
            subject=f"posts/{post_id}",
            actor=str(user.pk),
            data=PhotoDeletedData(post_id=post_id, author_id=user.pk),
        )
        transaction.on_commit(lambda: _delete_files(storage, names))
    return event


def _delete_files(storage: Storage, names: list[str]) -> None:
    for name in names:
        try:
            storage.delete(name)
        except OSError:
            # The post is gone either way; a stray file is only disk space.
            logger.exception("could not delete %s", name)


def follow(*, follower: User, followee: User) -> Event | None:
    """Follow a user and emit ``user.followed``; None if already following.

    Raises ValidationError for following oneself.
    """
    if follower.pk == followee.pk:
        raise ValidationError("You cannot follow yourself.")
    with transaction.atomic():
        _, created = Follow.objects.get_or_create(follower=follower, followee=followee)
        if not created:
            return None
        return emit_event(
            type="user.followed",
            subject=f"users/{followee.pk}",
            actor=str(follower.pk),
            data=UserFollowedData(
                follower_id=follower.pk,
                follower=follower.get_username(),
                followee_id=followee.pk,
                followee=followee.get_username(),
            ),
        )


def unfollow(*, follower: User, followee: User) -> Event | None:
    """Stop following a user and emit ``user.unfollowed``; None if not following."""
    with transaction.atomic():
        removed, _ = Follow.objects.filter(follower=follower, followee=followee).delete()
        if not removed:
            return None
        return emit_event(
            type="user.unfollowed",
            subject=f"users/{followee.pk}",
            actor=str(follower.pk),
            data=UserUnfollowedData(follower_id=follower.pk, followee_id=followee.pk),
        )
