"""Writes that change the social feed. Each emits its event in the same
transaction, through the outbox; nothing else in the project emits events."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from .models import Post
from .outbox import emit_event


def user_signup(*, username: str, password: str) -> User:
    """Create a user and emit ``user.signed_up``."""
    with transaction.atomic():
        user = User.objects.create_user(username=username, password=password)
        emit_event(
            type="user.signed_up",
            subject=f"users/{user.pk}",
            actor=str(user.pk),
            data={"user_id": user.pk, "username": user.get_username()},
        )
    return user


def post_create(*, author: User, photo: UploadedFile, caption: str) -> Post:
    """Store a photo post and emit ``photo.posted``.

    The image file is written first, outside the transaction (which holds
    the database's write lock, so it stays short); if the transaction
    fails, the file is removed again so nothing is left behind.
    """
    post = Post(author=author, caption=caption)
    try:
        post.photo.save(photo.name or "photo", photo, save=False)
        with transaction.atomic():
            post.save()
            emit_event(
                type="photo.posted",
                subject=f"posts/{post.pk}",
                actor=str(author.pk),
                data={
                    "post_id": post.pk,
                    "author_id": author.pk,
                    "author": author.get_username(),
                    "caption": caption,
                    "photo_url": post.photo.url,
                },
            )
    except BaseException:
        if post.photo.name:
            post.photo.delete(save=False)
        raise
    return post
