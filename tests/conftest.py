"""Shared fixtures: the embedded broker, a running stack, users and images."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest
from django.conf import settings
from PIL import Image

from monitor.events.schema import build_event
from monitor.kafka.embedded import EmbeddedBroker, free_port
from monitor.management.processes import daphne_command, stop_processes

ROOT = Path(__file__).resolve().parent.parent


def pytest_sessionstart(session: pytest.Session) -> None:
    """On a database server (``DATABASE_URL``), stop at once, with the reason,
    when it cannot be reached: a run that asked for PostgreSQL fails rather
    than quietly testing something else, or erroring in every test."""
    from django.db import connections

    connection = connections["default"]
    if connection.vendor == "sqlite":
        return
    try:
        connection.get_new_connection(connection.get_connection_params()).close()
    except connection.Database.Error as exc:
        where = f"{connection.settings_dict['HOST']}:{connection.settings_dict['PORT']}"
        pytest.exit(
            f"the {connection.display_name} server in DATABASE_URL ({where}) cannot be reached:"
            f" {exc}\nStart it, or unset DATABASE_URL to run the tests on SQLite.",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


@pytest.fixture(scope="session", autouse=True)
def kafka_broker() -> Iterator[EmbeddedBroker]:
    """One embedded broker for the whole session, on a free port."""
    broker = EmbeddedBroker().start()
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
    settings.KAFKA_BOOTSTRAP_SERVERS = broker.bootstrap_servers
    yield broker
    from monitor.events.publisher import publisher

    publisher.stop(timeout=2)
    broker.stop()


@pytest.fixture(scope="session")
def media_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(autouse=True)
def _media_in_tmp(settings, media_root: Path) -> None:
    settings.MEDIA_ROOT = media_root


# Tests post, like and sign in many times a minute from one address: generous
# rate limits here and in the servers they start (which copy os.environ),
# unless a test sets its own (tests/security/test_ratelimit.py).
TEST_RATE_LIMITS = {action: (10_000, 60) for action in ("post", "like", "comment", "login")}
os.environ["EVENTSITE_RATE_LIMITS"] = ",".join(
    f"{action}={count}/{seconds}" for action, (count, seconds) in TEST_RATE_LIMITS.items()
)


@pytest.fixture(autouse=True)
def _generous_rate_limits(settings) -> None:
    settings.RATE_LIMITS = dict(TEST_RATE_LIMITS)


def signup_event(n: int, *, at: datetime | None = None, source: str = "/test") -> dict:
    """A valid ``user.signed_up`` envelope for user ``n``."""
    return build_event(
        type="user.signed_up",
        subject=f"users/{n}",
        actor=str(n),
        data={"user_id": n, "username": f"user{n}"},
        source=source,
        time=at,
    )


def photo_event(
    n: int, *, author_id: int | None = None, caption: str | None = None, at: datetime | None = None
) -> dict:
    """A valid ``photo.posted`` envelope for post ``n`` (by user ``n`` unless ``author_id``)."""
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


def jpeg_bytes(size: tuple[int, int] = (64, 48), color: str = "teal") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user(username="alice", password="pw-alice-123")


@pytest.fixture
def topics(settings) -> tuple[str, str]:
    """A fresh events topic and DLQ for this test, so tests never see each other's records."""
    name = f"events-{uuid.uuid4().hex[:8]}"
    settings.KAFKA_EVENTS_TOPIC = name
    settings.KAFKA_DLQ_TOPIC = f"{name}.dlq"
    return name, f"{name}.dlq"


def child_database_env() -> dict[str, str]:
    """What a child process's environment needs so that Django in it uses this
    run's test database (not the one ``DATABASE_URL`` names).

    Call it once pytest-django has set the test database up (any fixture that
    depends on ``django_db_setup`` or a ``django_db`` test); ``DATABASE_URL``
    keeps its scheme, login, host, port and options, with the test database's
    name in place of its own.
    """
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        return {"DATABASE_URL": f"sqlite:///{database['NAME']}"}
    url = urlsplit(os.environ["DATABASE_URL"])
    return {"DATABASE_URL": url._replace(path="/" + quote(str(database["NAME"]))).geturl()}


def _flush_retrying_deadlocks() -> None:
    """Let a transactional test's flush retry when PostgreSQL picks it as a
    deadlock's victim. Its TRUNCATE locks the tables one by one while the
    stack's processes (a worker's batch, a web process's checks) may be in a
    transaction over several of them; PostgreSQL then aborts one side, and
    expects it to try again, as the product's workers do."""
    from django.core.management.base import CommandError
    from django.test.testcases import TransactionTestCase

    original = TransactionTestCase._fixture_teardown

    def _fixture_teardown(self: TransactionTestCase) -> None:
        for attempt in range(1, 6):
            try:
                return original(self)
            except CommandError as exc:
                if attempt == 5 or "deadlock detected" not in str(exc.__cause__):
                    raise
                time.sleep(0.2 * attempt)

    TransactionTestCase._fixture_teardown = _fixture_teardown  # type: ignore[method-assign]


_flush_retrying_deadlocks()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker) -> Iterator[None]:
    """pytest-django's test database; on PostgreSQL, before it is dropped, the
    sessions still open on it are ended. Threads of this process (the request
    pool, asgiref's executors) keep their connections for reuse, and PostgreSQL
    refuses to drop a database anyone is connected to."""
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@dataclass
class Stack:
    """Server processes running against the test database and broker."""

    base_url: str
    ws_url: str
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]]

    @property
    def origin(self) -> str:
        return self.base_url


def _wait_for_http(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@pytest.fixture(scope="session")
def stack(django_db_setup, django_db_blocker, kafka_broker, media_root) -> Iterator[Stack]:
    """daphne and the analytics worker, as the product runs them, on the test database."""
    port = free_port()
    env = {
        **os.environ,
        **child_database_env(),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
        "DJANGO_MEDIA_ROOT": str(media_root),
        "FANOUT_IDLE_STOP_SECONDS": "2",
        "LOG_LEVEL": "WARNING",
    }
    processes = {
        "web": subprocess.Popen(
            daphne_command("-b", "127.0.0.1", "-p", str(port)), cwd=ROOT, env=env
        ),
        "analytics": subprocess.Popen(
            [sys.executable, "manage.py", "run_analytics"], cwd=ROOT, env=env
        ),
    }
    try:
        _wait_for_http(f"http://127.0.0.1:{port}/healthz", processes["web"], timeout=30)
        yield Stack(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", env, processes)
    finally:
        stop_processes(processes.values())


class Processes:
    """Product processes (web, workers) started for one test, stopped by PID at the end."""

    COMMANDS = {
        "analytics": ["manage.py", "run_analytics"],
        "relay": ["manage.py", "relay_outbox", "--interval", "0.5"],
    }

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.port: int | None = None

    def start(self, name: str) -> subprocess.Popen[bytes]:
        if name == "web":
            self.port = self.port or free_port()
            argv = daphne_command("-b", "127.0.0.1", "-p", str(self.port))
        else:
            argv = [sys.executable, *self.COMMANDS[name]]
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        process = subprocess.Popen(
            argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.running[name] = process
        if name == "web":
            _wait_for_http(f"{self.base_url}/healthz", process, timeout=30)
        return process

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_all(self) -> None:
        stop_processes(self.running.values())


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    """A broker for one test, which the test may pause, stop and restart."""
    broker = EmbeddedBroker().start()
    yield broker
    broker.stop()


@pytest.fixture
def processes(own_broker, media_root, tmp_path, settings, django_db_setup) -> Iterator[Processes]:
    """Start product processes against ``own_broker`` and the test database."""
    settings.KAFKA_BOOTSTRAP_SERVERS = own_broker.bootstrap_servers
    env = {
        **os.environ,
        **child_database_env(),
        "KAFKA_BOOTSTRAP_SERVERS": own_broker.bootstrap_servers,
        "DJANGO_MEDIA_ROOT": str(media_root),
        "OUTBOX_RELAY_AFTER_SECONDS": "2",
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    group = Processes(env, tmp_path)
    yield group
    group.stop_all()


CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


class Poster:
    """A user who signed up through the real form and posts photos over HTTP."""

    def __init__(self, base_url: str, username: str) -> None:
        self.base_url = base_url
        self.client = httpx.Client(base_url=base_url, timeout=30)
        token = CSRF_FIELD.search(self.client.get("/accounts/signup/").text).group(1)
        response = self.client.post(
            "/accounts/signup/",
            data={
                "username": username,
                "password": "a-long-pass-phrase-7",
                "csrfmiddlewaretoken": token,
            },
            headers={"Referer": base_url + "/accounts/signup/"},
        )
        assert response.status_code == 302, response.text
        self.token = CSRF_FIELD.search(self.client.get("/posts/new/").text).group(1)
        self.photo = jpeg_bytes()

    def post(self, caption: str) -> int:
        """Post a photo; returns the new post's id."""
        response = self.client.post(
            "/posts/new/",
            data={"caption": caption, "csrfmiddlewaretoken": self.token},
            files={"photo": ("p.jpg", self.photo, "image/jpeg")},
            headers={"Referer": self.base_url + "/posts/new/", "Accept": "application/json"},
        )
        assert response.status_code == 201, response.text
        return int(response.json()["id"])
