"""monitor.views: posting a photo and signing up, through Django's test client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from PIL import Image

from monitor.events.schema import parse_event
from monitor.models import OutboxEvent, Post
from tests.support.images import jpeg_bytes

pytestmark = pytest.mark.django_db

STRONG_PASSWORD = "tawny-Heron-4817"


def media_files() -> set[Path]:
    return {path for path in Path(settings.MEDIA_ROOT).rglob("*") if path.is_file()}


def photo(content: bytes | None = None, name: str = "photo.jpg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, jpeg_bytes() if content is None else content, "image/jpeg")


@pytest.fixture
def logged_in(client: Client, user: Any) -> Client:
    client.force_login(user)
    return client


def test_it_shows_the_post_form(logged_in: Client) -> None:
    response = logged_in.get(reverse("post_new"))

    assert response.status_code == 200
    assert b'name="photo"' in response.content
    assert b'name="caption"' in response.content


def test_it_stores_a_post_and_redirects_to_the_feed(
    logged_in: Client, user: Any, settings: Any
) -> None:
    content = jpeg_bytes(size=(80, 60))

    response = logged_in.post(
        reverse("post_new"), {"photo": photo(content), "caption": "Sunrise över sjön"}
    )

    assert response.status_code == 302
    assert response.url == reverse("feed")
    post = Post.objects.get()
    assert post.author == user
    assert post.caption == "Sunrise över sjön"
    stored = Path(post.photo.path)
    assert stored.is_file()
    assert stored.resolve().is_relative_to(Path(settings.MEDIA_ROOT).resolve())
    with Image.open(stored) as image:  # re-encoded, so compared by what it shows
        assert (image.format, image.size) == ("JPEG", (80, 60))
    assert stored.read_bytes() != content
    assert post.photo.name.startswith("photos/")
    assert post.photo.name.endswith(".jpg")


def test_it_saves_a_photo_posted_event_in_the_outbox(logged_in: Client, user: Any) -> None:
    logged_in.post(reverse("post_new"), {"photo": photo(), "caption": "Harbour"})

    post = Post.objects.get()
    row = OutboxEvent.objects.get()
    event = parse_event(bytes(row.payload))
    assert event["type"] == row.event_type == "photo.posted"
    assert event["id"] == str(row.event_id)
    assert row.key == event["actor"] == str(user.pk)
    assert row.topic == settings.KAFKA_EVENTS_TOPIC
    assert row.sent_at is None
    assert event["subject"] == f"posts/{post.pk}"
    assert event["data"] == {
        "post_id": post.pk,
        "author_id": user.pk,
        "author": "alice",
        "caption": "Harbour",
        "photo_url": post.photo.url,
        "thumbnail_url": post.thumbnail.url,
    }


def test_it_publishes_only_after_commit(
    logged_in: Client, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.EVENTS_PUBLISH_EAGERLY = True

    with django_capture_on_commit_callbacks() as callbacks:
        response = logged_in.post(reverse("post_new"), {"photo": photo(), "caption": "Pier"})

    assert response.status_code == 302
    assert len(callbacks) == 1


def test_it_answers_json_with_the_new_id_when_asked(logged_in: Client) -> None:
    response = logged_in.post(
        reverse("post_new"),
        {"photo": photo(), "caption": "Via fetch"},
        headers={"Accept": "application/json"},
    )

    assert response.status_code == 201
    assert response.json() == {"id": Post.objects.get().pk}


TEXT_FILE = ("x.jpg", b"just some text\n" * 20, "image/jpeg")
BROKEN_PNG = ("x.png", b"\x89PNG\r\n\x1a\n" + b"garbage!" * 64, "image/png")

# Uploads are described, not built here: an upload read by one test is empty for the next.
BAD_POSTS = [
    pytest.param(
        {"photo": TEXT_FILE, "caption": "Text"},
        b"not an image we can read",
        id="text-file-named-jpg",
    ),
    pytest.param({"photo": "JPEG", "caption": ""}, b"Write a caption.", id="empty-caption"),
    pytest.param({"photo": "JPEG", "caption": "   "}, b"Write a caption.", id="blank-caption"),
    pytest.param({"caption": "No photo"}, b"Choose a photo to post.", id="missing-photo"),
    pytest.param(
        {"photo": BROKEN_PNG, "caption": "Broken"},
        b"not an image we can read",
        id="png-header-then-garbage",
    ),
]


def with_uploads(data: dict[str, Any]) -> dict[str, Any]:
    def upload(value: Any) -> Any:
        if value == "JPEG":
            return photo()
        if isinstance(value, tuple):
            return SimpleUploadedFile(*value)
        return value

    return {key: upload(value) for key, value in data.items()}


@pytest.mark.parametrize(("data", "message"), BAD_POSTS)
def test_it_refuses_a_bad_post_and_leaves_nothing_behind(
    logged_in: Client, data: dict[str, Any], message: bytes
) -> None:
    files_before = media_files()

    response = logged_in.post(reverse("post_new"), with_uploads(data))

    assert response.status_code == 400
    assert message in response.content
    assert Post.objects.count() == 0
    assert OutboxEvent.objects.count() == 0
    assert media_files() == files_before


def test_it_refuses_a_photo_over_the_size_limit(logged_in: Client, settings: Any) -> None:
    settings.MAX_PHOTO_BYTES = 2 * 1024 * 1024
    big = jpeg_bytes(size=(4000, 4000), color="red") + b"\0" * (2 * 1024 * 1024)
    files_before = media_files()

    response = logged_in.post(reverse("post_new"), {"photo": photo(big), "caption": "Huge"})

    assert response.status_code == 400
    assert b"larger than 2 MB" in response.content
    assert Post.objects.count() == 0
    assert media_files() == files_before


@pytest.mark.parametrize(("data", "message"), BAD_POSTS)
def test_it_answers_a_bad_json_post_with_errors(
    logged_in: Client, data: dict[str, Any], message: bytes
) -> None:
    response = logged_in.post(
        reverse("post_new"), with_uploads(data), headers={"Accept": "application/json"}
    )

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    errors = response.json()["errors"]
    texts = [error["message"] for field in errors.values() for error in field]
    assert any(message.decode() in text for text in texts), errors
    assert Post.objects.count() == 0
    assert OutboxEvent.objects.count() == 0


@pytest.mark.parametrize("method", ["get", "post"])
def test_it_sends_anonymous_users_to_the_login_page(client: Client, method: str) -> None:
    response = getattr(client, method)(
        reverse("post_new"), {"photo": photo(), "caption": "Anon"} if method == "post" else {}
    )

    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next={reverse('post_new')}"
    assert Post.objects.count() == 0
    assert OutboxEvent.objects.count() == 0


def test_it_signs_up_logs_in_and_emits_user_signed_up(client: Client) -> None:
    response = client.post(reverse("signup"), {"username": "bob", "password": STRONG_PASSWORD})

    assert response.status_code == 302
    assert response.url == reverse("feed")
    bob = get_user_model().objects.get(username="bob")
    assert bob.check_password(STRONG_PASSWORD)
    assert client.session["_auth_user_id"] == str(bob.pk)
    assert client.get(reverse("feed")).status_code == 200
    row = OutboxEvent.objects.get()
    assert row.event_type == "user.signed_up"
    assert row.key == str(bob.pk)
    event = parse_event(bytes(row.payload))
    assert event["type"] == "user.signed_up"
    assert event["data"] == {"user_id": bob.pk, "username": "bob"}


@pytest.mark.parametrize(
    ("username", "password", "message"),
    [
        pytest.param("alice", STRONG_PASSWORD, b"That username is taken.", id="taken"),
        pytest.param("ALICE", STRONG_PASSWORD, b"That username is taken.", id="taken-other-case"),
        pytest.param("carol", "short", b"too short", id="too-short"),
        pytest.param("carol", "password123", b"too common", id="common"),
        pytest.param("carol", "4829301756", b"entirely numeric", id="numeric"),
        pytest.param("carol", "carol123", b"too similar", id="like-username"),
    ],
)
def test_it_refuses_a_bad_signup_and_creates_nothing(
    client: Client, user: Any, username: str, password: str, message: bytes
) -> None:
    users_before = get_user_model().objects.count()

    response = client.post(reverse("signup"), {"username": username, "password": password})

    assert response.status_code == 400
    assert message in response.content
    assert get_user_model().objects.count() == users_before
    assert OutboxEvent.objects.count() == 0
    assert "_auth_user_id" not in client.session


def test_it_rejects_a_post_without_a_csrf_token(user: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)

    response = client.post(reverse("post_new"), {"photo": photo(), "caption": "Forged"})

    assert response.status_code == 403
    assert Post.objects.count() == 0
    assert OutboxEvent.objects.count() == 0


def test_it_rejects_a_signup_without_a_csrf_token() -> None:
    client = Client(enforce_csrf_checks=True)

    response = client.post(reverse("signup"), {"username": "bob", "password": STRONG_PASSWORD})

    assert response.status_code == 403
    assert not get_user_model().objects.filter(username="bob").exists()


def test_it_accepts_a_post_with_the_csrf_token_from_the_form(user: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get(reverse("post_new"))
    token = client.cookies[settings.CSRF_COOKIE_NAME].value

    response = client.post(
        reverse("post_new"),
        {"photo": photo(), "caption": "Genuine", "csrfmiddlewaretoken": token},
    )

    assert response.status_code == 302
    assert Post.objects.count() == 1
