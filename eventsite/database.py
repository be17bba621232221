"""The database setting, from ``DATABASE_URL``: SQLite under ``var/`` when it
is unset (the embedded default), any database Django supports otherwise."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dj_database_url

from .env import envint


def database_from_environment(var_dir: Path) -> dict[str, Any]:
    """``DATABASES["default"]``, with this project's SQLite options and test database."""
    if not os.getenv("DATABASE_URL"):
        var_dir.mkdir(parents=True, exist_ok=True)
    database: dict[str, Any] = dict(
        dj_database_url.parse(
            os.getenv("DATABASE_URL", f"sqlite:///{var_dir / 'eventsite.sqlite3'}"),
            # Web requests run on a pool of long-lived threads (eventsite/serving.py),
            # each keeping its connection this long.
            conn_max_age=envint("DATABASE_CONN_MAX_AGE", 60),
            conn_health_checks=True,
        )
    )
    if database["ENGINE"] == "django.db.backends.sqlite3":
        # Django's backend, with the process's threads taking turns to write
        # (eventsite/sqlite3/base.py).
        database["ENGINE"] = "eventsite.sqlite3"
        # WAL lets the web process read while a worker writes; the timeout turns
        # short lock waits into waits instead of "database is locked" errors.
        database["OPTIONS"] = {
            "timeout": envint("SQLITE_BUSY_TIMEOUT_SECONDS", 20),
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
        # Tests run servers in other processes, so the test database is a file,
        # one per test run so that two runs never share it.
        database["TEST"] = {
            "NAME": os.getenv("EVENTSITE_TEST_DB", str(var_dir / f"test-{os.getpid()}.sqlite3"))
        }
    elif os.getenv("EVENTSITE_TEST_DB"):
        # On a database server the test database is test_<NAME> unless this names
        # another, so that two test runs against one server never share it.
        database["TEST"] = {"NAME": os.environ["EVENTSITE_TEST_DB"]}
    return database
