"""Rate limits (monitor/security/ratelimit.py): the settings, the limited views
through Django's test client, and one count shared by many processes on SQLite
and PostgreSQL."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import ImproperlyConfigured
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, RequestFactory
from django.urls import reverse

from eventsite.env import envrates
from monitor.feed.services import post_create
from monitor.models import Comment, Like, OutboxEvent, Post, RateCounter
from monitor.security import ratelimit
from monitor.security.ratelimit import hit, prune_expired
from tests.support.images import jpeg_bytes
from tests.support.postgres import connect_or_skip
from tests.support.project import ROOT

JSON = {"Accept": "application/json"}
DEFAULTS = {"post": (10, 60), "like": (120, 60), "comment": (30, 60), "login": (10, 300)}
# A moment that starts a window of every length used here (60 s and 300 s).
WINDOW_START = 1_800_000_000
ADDRESS_A, ADDRESS_B, ADDRESS_C = "203.0.113.10", "198.51.100.20", "192.0.2.30"
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/test"


# --- Settings -----------------------------------------------------------------


def test_it_uses_the_defaults_when_the_variable_is_unset(monkeypatch) -> None:
    monkeypatch.delenv("EVENTSITE_RATE_LIMITS", raising=False)
    assert envrates("EVENTSITE_RATE_LIMITS", DEFAULTS) == DEFAULTS


def test_each_action_overrides_its_own_default(monkeypatch) -> None:
    monkeypatch.setenv("EVENTSITE_RATE_LIMITS", " post=5/30 , login = 3/900,")
    assert envrates("EVENTSITE_RATE_LIMITS", DEFAULTS) == {
        **DEFAULTS,
        "post": (5, 30),
        "login": (3, 900),
    }


def test_off_lifts_one_limit_or_all(monkeypatch) -> None:
    monkeypatch.setenv("EVENTSITE_RATE_LIMITS", "like=off,comment=OFF")
    assert envrates("EVENTSITE_RATE_LIMITS", DEFAULTS) == {
        "post": (10, 60),
        "login": (10, 300),
    }
    monkeypatch.setenv("EVENTSITE_RATE_LIMITS", " Off ")
    assert envrates("EVENTSITE_RATE_LIMITS", DEFAULTS) == {}


@pytest.mark.parametrize(
    "value, complaint",
    [
        ("post=10", "'post=10' must be post=N/S"),
        ("post=0/60", "both whole numbers above 0"),
        ("post=10/0", "both whole numbers above 0"),
        ("post=-1/60", "must be post=N/S"),
        ("post=ten/60", "must be post=N/S"),
        ("post=1/60/2", "must be post=N/S"),
        ("post", "'post' must be post=N/S"),
        ("psot=1/60", "unknown action 'psot' (known: comment, like, login, post)"),
        ("=1/60", "unknown action ''"),
        ("post=1/60,post=2/60", "'post' is given twice"),
    ],
)
def test_bad_limits_are_refused_with_a_clear_message(monkeypatch, value, complaint) -> None:
    monkeypatch.setenv("EVENTSITE_RATE_LIMITS", value)
    with pytest.raises(ImproperlyConfigured) as refused:
        envrates("EVENTSITE_RATE_LIMITS", DEFAULTS)
    assert str(refused.value).startswith("EVENTSITE_RATE_LIMITS: ")
    assert complaint in str(refused.value)


# --- Counting ---------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = WINDOW_START + 1.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    """The limiter's clock, moved by the test; no pruning by chance."""
    frozen = Clock()
    monkeypatch.setattr(ratelimit, "clock", frozen)
    monkeypatch.setattr(ratelimit, "PRUNE_CHANCE", 0.0)
    return frozen


@pytest.fixture
def limits(settings, clock) -> dict[str, tuple[int, int]]:
    settings.RATE_LIMITS = {"post": (2, 60), "like": (3, 60), "comment": (2, 60), "login": (3, 300)}
    settings.TRUSTED_PROXIES = []
    return settings.RATE_LIMITS


def request_from(remote: str) -> Any:
    return RequestFactory().post("/posts/new/", REMOTE_ADDR=remote)


def anonymous_request(address: str = ADDRESS_A) -> Any:
    request = request_from(address)
    request.user = AnonymousUser()
    return request


@pytest.mark.django_db
def test_it_allows_the_limit_and_refuses_the_rest_until_the_window_ends(limits, clock) -> None:
    results = [hit(anonymous_request(), "post") for _ in range(5)]
    assert results[:2] == [None, None]
    refusal = results[2]
    assert refusal is not None and results[3:] == [refusal, refusal]
    assert (refusal.key, refusal.limit, refusal.seconds) == (f"post/addr:{ADDRESS_A}", 2, 60)
    assert refusal.retry_after == 59
    assert refusal.message == (
        "Too many posts: at most 2 every 60 seconds. Try again in 59 seconds."
    )
    # Refused requests are not counted: the row holds the limit.
    assert RateCounter.objects.get().hits == 2

    clock.now = WINDOW_START + 59.5
    later = hit(anonymous_request(), "post")
    assert later is not None and later.retry_after == 1
    clock.now = WINDOW_START + 60
    assert hit(anonymous_request(), "post") is None
    assert hit(anonymous_request(), "post") is None
    assert hit(anonymous_request(), "post") is not None


@pytest.mark.django_db
def test_actions_and_addresses_count_apart(limits) -> None:
    for _ in range(2):
        assert hit(anonymous_request(), "post") is None
    assert hit(anonymous_request(), "post") is not None
    assert hit(anonymous_request(ADDRESS_B), "post") is None
    assert hit(anonymous_request(), "comment") is None


@pytest.mark.django_db
def test_a_request_refused_on_one_key_is_counted_on_none(limits, django_user_model) -> None:
    ana, ben = (
        django_user_model.objects.create_user(name, password="pw") for name in ("ana", "ben")
    )
    for _ in range(2):  # ben fills the address's window
        request = request_from(ADDRESS_A)
        request.user = ben
        assert hit(request, "post") is None
    request = request_from(ADDRESS_A)
    request.user = ana
    refusal = hit(request, "post")
    assert refusal is not None and refusal.key == f"post/addr:{ADDRESS_A}"
    assert not RateCounter.objects.filter(key=f"post/user:{ana.pk}").exists()
    request = request_from(ADDRESS_B)
    request.user = ana
    assert hit(request, "post") is None  # ana's own count was untouched: 1 of 2
    assert RateCounter.objects.get(key=f"post/user:{ana.pk}").hits == 1


@pytest.mark.django_db
def test_unlimited_actions_are_not_counted(limits, settings) -> None:
    assert hit(anonymous_request(), "follow") is None
    settings.RATE_LIMITS = {}
    for _ in range(5):
        assert hit(anonymous_request(), "post") is None
    assert not RateCounter.objects.exists()


@pytest.mark.django_db
def test_an_overlong_key_is_stored_as_a_digest(limits) -> None:
    name = "x" * 500
    for _ in range(3):
        assert hit(anonymous_request(), "login", extra_keys=[f"login:{name}"]) is None
    refusal = hit(anonymous_request(ADDRESS_B), "login", extra_keys=[f"login:{name}"])
    assert refusal is not None and refusal.key == f"login/login:{name}"
    keys = list(RateCounter.objects.values_list("key", flat=True))
    assert all(len(key) <= 200 for key in keys)
    assert sum(1 for key in keys if key.startswith("login/login:xxx")) == 1


@pytest.mark.django_db
def test_ended_windows_are_deleted_a_batch_at_a_time(limits, clock, monkeypatch) -> None:
    for address in (ADDRESS_A, ADDRESS_B, ADDRESS_C):
        hit(anonymous_request(address), "post")  # windows ending at +60
    hit(anonymous_request(), "login")  # a window ending at +300
    monkeypatch.setattr(ratelimit, "PRUNE_BATCH", 2)

    assert prune_expired(now=WINDOW_START + 59) == 0
    assert prune_expired(now=WINDOW_START + 60) == 2
    assert prune_expired(now=WINDOW_START + 60) == 1
    assert list(RateCounter.objects.values_list("key", flat=True)) == [f"login/addr:{ADDRESS_A}"]

    # Requests prune too, now and then (here: every time).
    monkeypatch.setattr(ratelimit, "PRUNE_CHANCE", 1.0)
    clock.now = WINDOW_START + 300
    assert hit(anonymous_request(ADDRESS_B), "post") is None
    assert list(RateCounter.objects.values_list("key", flat=True)) == [f"post/addr:{ADDRESS_B}"]


# --- The limited views --------------------------------------------------------


@pytest.fixture
def bob(django_user_model: Any) -> User:
    return django_user_model.objects.create_user(username="bob", password="pw-bob-123")


@pytest.fixture
def carol(django_user_model: Any) -> User:
    return django_user_model.objects.create_user(username="carol", password="pw-carol-123")


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def upload(client: Client, address: str, **headers: str) -> Any:
    photo = SimpleUploadedFile("p.jpg", jpeg_bytes(), "image/jpeg")
    data = {"caption": "harbour", "photo": photo}
    return client.post(reverse("post_new"), data, headers=headers, REMOTE_ADDR=address)


class Unchanged:
    """Counts the rows a refused request must not add."""

    MODELS = (Post, Like, Comment, OutboxEvent)

    def __init__(self) -> None:
        self.before = self.counts()

    def counts(self) -> dict[str, int]:
        return {model.__name__: model.objects.count() for model in self.MODELS}

    def check(self) -> None:
        assert self.counts() == self.before


def assert_json_refusal(response: Any, noun: str, limit: int, seconds: int) -> None:
    assert response.status_code == 429
    assert response["Content-Type"] == "application/json"
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= seconds
    error = json.loads(response.content)["error"]
    assert error["code"] == "rate_limited"
    assert error["retry_after"] == retry_after
    assert error["message"] == (
        f"Too many {noun}: at most {limit} every {seconds} seconds. "
        f"Try again in {retry_after} seconds."
    )


def assert_page_refusal(response: Any, noun: str) -> None:
    assert response.status_code == 429
    assert response["Content-Type"].startswith("text/html")
    assert int(response["Retry-After"]) >= 1
    assert "monitor/rate_limited.html" in [template.name for template in response.templates]
    assert f"Too many {noun}: at most" in response.content.decode()


@pytest.mark.django_db
def test_posting_is_refused_past_the_limit_and_adds_nothing(limits, user, caplog) -> None:
    alice = signed_in(user)
    assert [upload(alice, ADDRESS_A, **JSON).status_code for _ in range(2)] == [201, 201]
    unchanged = Unchanged()

    with caplog.at_level(logging.INFO, logger="monitor.security.ratelimit"):
        refused = upload(alice, ADDRESS_A, **JSON)
    assert_json_refusal(refused, "posts", 2, 60)
    assert refused["Retry-After"] == "59"
    assert f"rate limited post/user:{user.pk}" in caplog.text
    assert_page_refusal(upload(alice, ADDRESS_A), "posts")
    unchanged.check()


@pytest.mark.django_db
def test_only_posts_count_not_the_form(limits, user) -> None:
    alice = signed_in(user)
    for _ in range(5):
        assert alice.get(reverse("post_new"), REMOTE_ADDR=ADDRESS_A).status_code == 200
    assert upload(alice, ADDRESS_A, **JSON).status_code == 201


@pytest.mark.django_db
def test_a_new_window_lets_posts_through_again(limits, clock, user) -> None:
    alice = signed_in(user)
    for _ in range(2):
        assert upload(alice, ADDRESS_A, **JSON).status_code == 201
    assert upload(alice, ADDRESS_A, **JSON).status_code == 429
    clock.now = WINDOW_START + 60
    assert upload(alice, ADDRESS_A, **JSON).status_code == 201


def like(client: Client, post: Post, address: str, **headers: str) -> Any:
    return client.post(reverse("post_like", args=[post.pk]), headers=headers, REMOTE_ADDR=address)


def unlike(client: Client, post: Post, address: str) -> Any:
    url = reverse("post_unlike", args=[post.pk])
    return client.post(url, headers=JSON, REMOTE_ADDR=address)


@pytest.fixture
def photo(bob: User) -> Post:
    photo = SimpleUploadedFile("p.jpg", jpeg_bytes(), "image/jpeg")
    return post_create(author=bob, photo=photo, caption="harbour")


@pytest.mark.django_db
def test_likes_are_limited_per_user_and_per_address(limits, user, bob, carol, photo) -> None:
    alice = signed_in(user)
    # Liking and unliking share one limit.
    statuses = [
        like(alice, photo, ADDRESS_A, **JSON).status_code,
        unlike(alice, photo, ADDRESS_A).status_code,
        like(alice, photo, ADDRESS_A, **JSON).status_code,
    ]
    assert statuses == [200, 200, 200]
    unchanged = Unchanged()

    assert_json_refusal(unlike(alice, photo, ADDRESS_A), "likes", 3, 60)
    assert Like.objects.filter(user=user, post=photo).exists()  # the unlike did not happen
    assert_page_refusal(like(alice, photo, ADDRESS_A), "likes")
    # The same user from another address: still over their own limit.
    assert like(alice, photo, ADDRESS_C, **JSON).status_code == 429
    # Another user from the same address: over the address's limit.
    assert like(signed_in(carol), photo, ADDRESS_A, **JSON).status_code == 429
    unchanged.check()
    # Another user from another address is not affected.
    assert like(signed_in(bob), photo, ADDRESS_B, **JSON).status_code == 200


@pytest.mark.django_db
def test_comments_are_limited_and_a_refused_one_adds_nothing(limits, user, photo) -> None:
    alice = signed_in(user)
    url = reverse("post_comment", args=[photo.pk])

    def comment(**headers: str) -> Any:
        return alice.post(url, {"text": "nice"}, headers=headers, REMOTE_ADDR=ADDRESS_A)

    assert [comment(**JSON).status_code for _ in range(2)] == [201, 201]
    unchanged = Unchanged()
    assert_json_refusal(comment(**JSON), "comments", 2, 60)
    page = comment(Referer=f"http://testserver/posts/{photo.pk}/")
    assert_page_refusal(page, "comments")
    assert f'href="http://testserver/posts/{photo.pk}/"' in page.content.decode()
    unchanged.check()


@pytest.mark.django_db
def test_requests_under_api_are_answered_json(limits, user) -> None:
    request = request_from(ADDRESS_A)
    request.path = request.path_info = "/api/posts/"
    request.user = user
    for _ in range(2):
        assert hit(request, "post") is None
    refusal = hit(request, "post")
    assert refusal is not None
    response = refusal.response(request)
    assert_json_refusal(response, "posts", 2, 60)


def sign_in(client: Client, username: str, password: str, address: str) -> Any:
    data = {"username": username, "password": password}
    return client.post(reverse("login"), data, REMOTE_ADDR=address)


@pytest.mark.django_db
def test_sign_in_attempts_are_limited_per_address_and_per_username(
    limits, clock, user, bob
) -> None:
    client = Client()
    for _ in range(5):  # the page itself is not counted
        assert client.get(reverse("login"), REMOTE_ADDR=ADDRESS_A).status_code == 200
    for _ in range(3):
        assert sign_in(client, "alice", "wrong", ADDRESS_A).status_code == 200
    # Now even the right password is refused, before it is checked.
    refused = sign_in(client, "alice", "pw-alice-123", ADDRESS_A)
    assert_page_refusal(refused, "sign-in attempts")
    assert "_auth_user_id" not in client.session
    # The same name (in any case) from another address is refused.
    assert sign_in(Client(), " ALICE", "pw-alice-123", ADDRESS_B).status_code == 429
    # Another name from that address is over the address's limit.
    assert sign_in(Client(), "bob", "pw-bob-123", ADDRESS_A).status_code == 429
    # Another name from another address signs in.
    assert sign_in(Client(), "bob", "pw-bob-123", ADDRESS_C).status_code == 302

    json_refusal = Client().post(
        reverse("login"),
        {"username": "alice", "password": "x"},
        headers=JSON,
        REMOTE_ADDR=ADDRESS_A,
    )
    assert_json_refusal(json_refusal, "sign-in attempts", 3, 300)

    clock.now = WINDOW_START + 300
    assert sign_in(client, "alice", "pw-alice-123", ADDRESS_A).status_code == 302
    assert client.session["_auth_user_id"] == str(user.pk)


# --- One count across processes -------------------------------------------------

CREATE_TABLE = """
import django
django.setup()
from django.db import connection
from monitor.models import RateCounter
with connection.schema_editor() as editor:
    editor.create_model(RateCounter)
"""

HAMMER = """
import sys
import django
django.setup()
from django.contrib.auth.models import AnonymousUser
from django.test import RequestFactory
from monitor.security.ratelimit import hit

request = RequestFactory().post("/posts/new/", REMOTE_ADDR="198.51.100.77")
request.user = AnonymousUser()
attempts, now = int(sys.argv[1]), float(sys.argv[2])
hit(request, "comment", now=now)  # connect before the start
print("ready", flush=True)
sys.stdin.readline()
allowed = sum(hit(request, "post", now=now) is None for _ in range(attempts))
print(allowed, flush=True)
"""

PROCESSES, ATTEMPTS, LIMIT = 4, 40, 70


def hammer(database_url: str) -> tuple[int, list[int]]:
    """Start PROCESSES processes that each try ATTEMPTS posts in one window at
    once; returns the limit and how many each was allowed."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "EVENTSITE_RATE_LIMITS": f"post={LIMIT}/3600,comment=1000/3600",
        "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "eventsite.settings",
    }
    done = subprocess.run(
        [sys.executable, "-c", CREATE_TABLE], cwd=ROOT, env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    now = str(WINDOW_START + 7.0)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", HAMMER, str(ATTEMPTS), now],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        for worker in workers:  # all at once
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        allowed = []
        for worker in workers:
            out, _ = worker.communicate(timeout=90)
            assert worker.returncode == 0
            allowed.append(int(out.strip()))
        return LIMIT, allowed
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def test_processes_sharing_a_sqlite_file_allow_exactly_the_limit(tmp_path: Path) -> None:
    limit, allowed = hammer(f"sqlite:///{tmp_path / 'counts.sqlite3'}")
    assert sum(allowed) == limit, allowed


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    """A schema of its own in the ``test`` database, dropped afterwards."""
    connection = connect_or_skip(POSTGRES_URL, timeout=3)
    schema = f"ratelimit_{uuid.uuid4().hex[:12]}"
    with connection:
        connection.execute(f"CREATE SCHEMA {schema}")
        try:
            yield schema
        finally:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")


def test_processes_sharing_postgresql_allow_exactly_the_limit(postgres_schema: str) -> None:
    url = f"{POSTGRES_URL}?options=-c%20search_path%3D{postgres_schema}"
    limit, allowed = hammer(url)
    assert sum(allowed) == limit, allowed
    with psycopg.connect(POSTGRES_URL) as connection:
        table = f"{postgres_schema}.{RateCounter._meta.db_table}"
        rows = connection.execute(f"SELECT key, hits FROM {table}").fetchall()
    assert ("post/addr:198.51.100.77", limit) in rows
