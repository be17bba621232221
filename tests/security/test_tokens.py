"""API tokens: making, showing once, revoking; the settings page, the admin,
and POST /api/posts/ signed in by token or by session with CSRF."""

from __future__ import annotations

import hashlib
import re

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from monitor.models import ApiToken, OutboxEvent, Post
from monitor.security.tokens import (
    bearer_from_header,
    bearer_from_subprotocols,
    token_create,
    token_revoke,
    user_for_token,
)
from tests.support.images import jpeg_bytes

pytestmark = pytest.mark.django_db

TOKEN_SHOWN = re.compile(r'id="new-token"[^>]*value="(es_[A-Za-z0-9_-]+)"')


@pytest.fixture
def ana() -> User:
    return User.objects.create_user(username="ana", password="pw-ana-123456")


@pytest.fixture
def ana_client(ana: User) -> Client:
    client = Client()
    client.force_login(ana)
    return client


def photo(name: str = "p.jpg", content: bytes | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, jpeg_bytes() if content is None else content, "image/jpeg")


# --- the tokens themselves -----------------------------------------------------


def test_it_stores_only_a_digest_of_the_token(ana: User) -> None:
    row, token = token_create(user=ana, name="  my script  ")
    assert token.startswith("es_") and len(token) >= 40
    stored = ApiToken.objects.get(pk=row.pk)
    assert stored.digest == hashlib.sha256(token.encode()).hexdigest()
    assert token not in {stored.digest, stored.prefix, stored.name}
    assert token.startswith(stored.prefix) and stored.name == "my script"


def test_a_token_signs_its_user_in_until_revoked(ana: User) -> None:
    row, token = token_create(user=ana, name="tail")
    found = user_for_token(token)
    assert found is not None and found[0] == ana and found[1].pk == row.pk
    assert ApiToken.objects.get(pk=row.pk).last_used is not None
    assert user_for_token(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert user_for_token("not-a-token") is None
    token_revoke(token=row)
    assert user_for_token(token) is None


def test_a_token_of_a_deactivated_user_signs_nobody_in(ana: User) -> None:
    _, token = token_create(user=ana, name="tail")
    ana.is_active = False
    ana.save()
    assert user_for_token(token) is None


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer es_abc", "es_abc"),
        ("bearer   es_abc  ", "es_abc"),
        ("Basic dXNlcjpwdw==", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_it_reads_a_bearer_header(header: str | None, token: str | None) -> None:
    assert bearer_from_header(header) == token


def test_it_reads_a_bearer_subprotocol() -> None:
    assert bearer_from_subprotocols(["eventsite", "bearer.es_xyz"]) == "es_xyz"
    assert bearer_from_subprotocols(["eventsite"]) is None


# --- the settings page -----------------------------------------------------------


def test_the_page_shows_a_new_token_once(ana_client: Client) -> None:
    response = ana_client.post(reverse("tokens"), {"name": "backup script"})
    assert response.status_code == 201
    assert "no-store" in response["Cache-Control"]
    token = TOKEN_SHOWN.search(response.content.decode()).group(1)
    assert user_for_token(token) is not None
    later = ana_client.get(reverse("tokens")).content.decode()
    assert token not in later
    assert "backup script" in later and token[:10] in later


def test_the_page_refuses_a_nameless_token(ana_client: Client) -> None:
    response = ana_client.post(reverse("tokens"), {"name": ""})
    assert response.status_code == 400
    assert "Name the token" in response.content.decode()
    assert not ApiToken.objects.exists()


def test_a_user_revokes_only_their_own_tokens(ana: User, ana_client: Client) -> None:
    mine, _ = token_create(user=ana, name="mine")
    bob = User.objects.create_user(username="bob", password="pw-bob-123456")
    theirs, _ = token_create(user=bob, name="theirs")
    response = ana_client.post(reverse("token_revoke", args=[theirs.pk]))
    assert response.status_code == 404
    assert ApiToken.objects.get(pk=theirs.pk).revoked is None
    response = ana_client.post(reverse("token_revoke", args=[mine.pk]))
    assert response.status_code == 302
    assert ApiToken.objects.get(pk=mine.pk).revoked is not None
    assert "theirs" not in ana_client.get(reverse("tokens")).content.decode()


def test_the_page_needs_a_signed_in_user() -> None:
    response = Client().get(reverse("tokens"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# --- the admin ----------------------------------------------------------------------


def test_staff_revoke_anyones_tokens_and_make_them_in_the_admin(ana: User) -> None:
    admin = User.objects.create_superuser(username="root", password="pw-root-123456")
    client = Client()
    client.force_login(admin)
    row, token = token_create(user=ana, name="ana's")
    listing = client.get(reverse("admin:monitor_apitoken_changelist")).content.decode()
    assert "ana&#x27;s" in listing and token not in listing
    response = client.post(
        reverse("admin:monitor_apitoken_changelist"),
        {"action": "revoke", "_selected_action": [row.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert user_for_token(token) is None
    response = client.post(
        reverse("admin:monitor_apitoken_add"),
        {"user": ana.pk, "name": "made by staff"},
        follow=True,
    )
    assert response.status_code == 200
    shown = re.search(r"(es_[A-Za-z0-9_-]{40,})", response.content.decode()).group(1)
    found = user_for_token(shown)
    assert found is not None and found[0] == ana and found[1].name == "made by staff"


# --- POST /api/posts/ ------------------------------------------------------------------


def test_a_program_posts_with_a_token(ana: User) -> None:
    _, token = token_create(user=ana, name="uploader")
    response = Client().post(
        "/api/posts/",
        {"photo": photo(), "caption": "from a script"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.content
    body = response.json()
    post = Post.objects.get(pk=body["id"])
    assert post.author == ana and post.caption == "from a script"
    assert OutboxEvent.objects.filter(event_id=body["event_id"], event_type="photo.posted").exists()
    assert response["Location"] == f"/posts/{post.pk}/"
    assert body["photo_url"].startswith("http://testserver/media/")


def test_a_session_posts_with_its_csrf_token(ana: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(ana)
    refused = client.post("/api/posts/", {"photo": photo(), "caption": "no csrf"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "csrf_failed"
    assert not Post.objects.exists()
    client.get(reverse("tokens"))  # any page sets the CSRF cookie
    csrf = client.cookies["csrftoken"].value
    response = client.post(
        "/api/posts/", {"photo": photo(), "caption": "with csrf"}, headers={"X-CSRFToken": csrf}
    )
    assert response.status_code == 201, response.content
    assert Post.objects.get().caption == "with csrf"


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "unauthenticated"),
        ("Bearer es_wrong", "invalid_token"),
        ("Basic eDp5", "invalid_token"),
    ],
)
def test_the_api_refuses_without_a_valid_token(authorization: str | None, code: str) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = Client().post("/api/posts/", {"photo": photo(), "caption": "x"}, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert not Post.objects.exists() and not OutboxEvent.objects.exists()


def test_a_revoked_token_cannot_post(ana: User) -> None:
    row, token = token_create(user=ana, name="old")
    token_revoke(token=row)
    response = Client().post(
        "/api/posts/",
        {"photo": photo(), "caption": "x"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 401 and not Post.objects.exists()


def test_the_api_answers_bad_input_in_json(ana: User) -> None:
    _, token = token_create(user=ana, name="uploader")
    auth = {"Authorization": f"Bearer {token}"}
    response = Client().post(
        "/api/posts/", {"photo": photo("x.jpg", b"<html>not an image"), "caption": ""}, headers=auth
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and error["message"]
    assert set(error["fields"]) == {"photo", "caption"}
    assert not Post.objects.exists() and not OutboxEvent.objects.exists()
    response = Client().get("/api/posts/", headers=auth)
    assert response.status_code == 405 and response["Allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_the_api_shares_the_post_rate_limit(ana: User, settings) -> None:  # type: ignore[no-untyped-def]
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "post": (2, 60)}
    _, token = token_create(user=ana, name="uploader")
    auth = {"Authorization": f"Bearer {token}"}
    answers = [
        Client().post("/api/posts/", {"photo": photo(), "caption": f"n{n}"}, headers=auth)
        for n in range(3)
    ]
    assert [answer.status_code for answer in answers] == [201, 201, 429]
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limited" and int(refused["Retry-After"]) >= 1
    assert Post.objects.count() == 2
