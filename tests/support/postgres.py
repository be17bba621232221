"""Reaching the PostgreSQL server from tests that need one whatever database
the suite runs on (a database or schema of their own on it).

On CI (``CI=true``) the server is required: a test that cannot reach it
fails. Elsewhere it is skipped with the reason, so a machine without
PostgreSQL can still run the rest of the suite.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import psycopg
import pytest


def postgres_server_url() -> str:
    """The PostgreSQL server of ``DATABASE_URL`` if it names one, else the local one."""
    url = os.getenv("DATABASE_URL", "")
    if urlsplit(url).scheme in ("postgres", "postgresql", "pgsql"):
        return url
    return "postgres://postgres@127.0.0.1:5432/postgres"


def connect_or_skip(url: str, *, timeout: int = 5) -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection to ``url``; fails the test on CI, and skips it
    with the reason elsewhere, when the server cannot be reached."""
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=timeout)
    except psycopg.OperationalError as exc:
        where = urlsplit(url).netloc.rpartition("@")[2]
        reason = f"PostgreSQL at {where} cannot be reached: {exc}"
        if os.getenv("CI") != "true":
            pytest.skip(reason)
        pytest.fail(f"{reason} (CI requires it)")
