"""Shared fixtures: the embedded broker, a running stack, product processes
for one test, a fresh topic per test, a user, and a headless browser.

Helpers that are not fixtures live in tests/support/; the fixtures here build
on them. Every process a fixture starts is stopped by its PID at the end."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test.testcases import TransactionTestCase
from pytest_django import DjangoDbBlocker, Settings

from monitor.kafka.embedded import EmbeddedBroker, free_port
from monitor.management.processes import daphne_command, stop_processes
from tests.support.browser import headless_chromium
from tests.support.project import ROOT
from tests.support.stack import Processes, Stack, child_database_env, wait_for_http

if TYPE_CHECKING:
    from playwright.sync_api import Browser


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
    except connection.Database.Error as exc:  # type: ignore[attr-defined]  # the driver's module, which each backend sets
        where = f"{connection.settings_dict['HOST']}:{connection.settings_dict['PORT']}"
        pytest.exit(
            f"the {connection.display_name} server in DATABASE_URL ({where}) cannot be reached:"
            f" {exc}\nStart it, or unset DATABASE_URL to run the tests on SQLite.",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


# Fixtures through which a test reaches the test database (directly, or from
# the product processes it starts on it).
DATABASE_FIXTURES = {"django_db_setup", "db", "transactional_db", "django_db_blocker"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With ``EVENTSITE_DATABASE_TESTS_ONLY=1`` (``make test-postgres``), only the
    tests that reach the test database run: the others cannot see which
    database is configured, and ran already in the suite on SQLite."""
    if os.environ.get("EVENTSITE_DATABASE_TESTS_ONLY") != "1":
        return
    kept, left = [], []
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        uses_database = item.get_closest_marker("django_db") is not None
        (kept if uses_database or fixtures & DATABASE_FIXTURES else left).append(item)
    if left:
        config.hook.pytest_deselected(items=left)
        items[:] = kept


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
def _media_in_tmp(settings: Settings, media_root: Path) -> None:
    settings.MEDIA_ROOT = media_root


# Tests post, like and sign in many times a minute from one address: generous
# rate limits here and in the servers they start (which copy os.environ),
# unless a test sets its own (tests/security/test_ratelimit.py).
TEST_RATE_LIMITS = {action: (10_000, 60) for action in ("post", "like", "comment", "login")}
os.environ["EVENTSITE_RATE_LIMITS"] = ",".join(
    f"{action}={count}/{seconds}" for action, (count, seconds) in TEST_RATE_LIMITS.items()
)


@pytest.fixture(autouse=True)
def _generous_rate_limits(settings: Settings) -> None:
    settings.RATE_LIMITS = dict(TEST_RATE_LIMITS)


@pytest.fixture
def user(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_user(username="alice", password="pw-alice-123")


@pytest.fixture
def topics(settings: Settings) -> tuple[str, str]:
    """A fresh events topic and DLQ for this test, so tests never see each other's records."""
    name = f"events-{uuid.uuid4().hex[:8]}"
    settings.KAFKA_EVENTS_TOPIC = name
    settings.KAFKA_DLQ_TOPIC = f"{name}.dlq"
    return name, f"{name}.dlq"


def _flush_retrying_deadlocks() -> None:
    """Let a transactional test's flush retry when PostgreSQL picks it as a
    deadlock's victim. Its TRUNCATE locks the tables one by one while the
    stack's processes (a worker's batch, a web process's checks) may be in a
    transaction over several of them; PostgreSQL then aborts one side, and
    expects it to try again, as the product's workers do."""
    from django.core.management.base import CommandError

    original = TransactionTestCase._fixture_teardown  # type: ignore[attr-defined]  # private to Django: not in its stubs

    def _fixture_teardown(self: TransactionTestCase) -> None:
        for attempt in range(1, 6):
            try:
                original(self)
                return
            except CommandError as exc:
                if attempt == 5 or "deadlock detected" not in str(exc.__cause__):
                    raise
                time.sleep(0.2 * attempt)

    TransactionTestCase._fixture_teardown = _fixture_teardown  # type: ignore[attr-defined]  # as above; Django has no hook to wrap the flush


_flush_retrying_deadlocks()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: DjangoDbBlocker) -> Iterator[None]:
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


@pytest.fixture(scope="session")
def stack(
    django_db_setup: None,
    django_db_blocker: DjangoDbBlocker,
    kafka_broker: EmbeddedBroker,
    media_root: Path,
) -> Iterator[Stack]:
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
        wait_for_http(f"http://127.0.0.1:{port}/healthz", processes["web"], timeout=30)
        yield Stack(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", env, processes)
    finally:
        stop_processes(processes.values())


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    """A broker for one test, which the test may pause, stop and restart."""
    broker = EmbeddedBroker().start()
    yield broker
    broker.stop()


@pytest.fixture
def processes(
    own_broker: EmbeddedBroker,
    media_root: Path,
    tmp_path: Path,
    settings: Settings,
    django_db_setup: None,
) -> Iterator[Processes]:
    """Start product processes against ``own_broker`` and the test database."""
    settings.KAFKA_BOOTSTRAP_SERVERS = own_broker.bootstrap_servers
    env = {
        **os.environ,
        **child_database_env(),
        "KAFKA_BOOTSTRAP_SERVERS": own_broker.bootstrap_servers,
        # The test's topics (fresh ones, with the ``topics`` fixture).
        "KAFKA_EVENTS_TOPIC": settings.KAFKA_EVENTS_TOPIC,
        "KAFKA_DLQ_TOPIC": settings.KAFKA_DLQ_TOPIC,
        "DJANGO_MEDIA_ROOT": str(media_root),
        "OUTBOX_RELAY_AFTER_SECONDS": "2",
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    group = Processes(env, tmp_path)
    yield group
    group.stop_all()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium per test module (tests/support/browser.py)."""
    with headless_chromium() as chromium:
        yield chromium
