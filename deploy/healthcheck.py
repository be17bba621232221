"""Container health checks for docker-compose.yml (run from the project directory).

``python -m deploy.healthcheck http URL``
    GET ``URL`` (a web container's own ``/healthz``) with a ``Host`` header that
    ``DJANGO_ALLOWED_HOSTS`` accepts; healthy if it answers 200, which ``/healthz``
    does only while the database, the broker and the outbox are well.

``python -m deploy.healthcheck dependencies``
    Load the settings, open a database connection and ask a broker for its
    metadata, with the same clients and settings as the workers; healthy if
    both answer. For the processes that have no HTTP port.

The exit status is what Docker expects: 0 healthy, 1 unhealthy (the reason on
stderr). The slim image has no curl, hence Python.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import urllib.error
import urllib.request

HEALTHY, UNHEALTHY = 0, 1


def allowed_host(allowed_hosts: str) -> str:
    """A ``Host`` value that the comma-separated ``allowed_hosts`` accepts.

    The first named host; a domain pattern (``.example.com``) gives its domain.
    ``localhost`` if there is no name (empty, or only ``*``, which accepts anything).
    """
    for entry in allowed_hosts.split(","):
        host = entry.strip().lstrip("*").lstrip(".")
        if host:
            return host
    return "localhost"


def check_http(url: str, timeout: float) -> str | None:
    """None if ``url`` answers 200, else why not."""
    host = allowed_host(os.environ.get("DJANGO_ALLOWED_HOSTS", ""))
    request = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
            body = response.read(2048)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(2048)
    except OSError as exc:  # refused, timed out, reset
        return f"{url}: {exc}"
    if status != 200:
        return f"{url} answered {status}: {body.decode(errors='replace')}"
    return None


def check_dependencies(timeout: float) -> str | None:
    """None if the database and a Kafka broker answer, else why not."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eventsite.settings")
    import django

    django.setup()
    from django.db import connection

    from monitor.kafka import clients as kafka

    try:
        connection.ensure_connection()
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return f"database: {type(exc).__name__}: {exc}"
    finally:
        connection.close()
    try:
        asyncio.run(kafka.probe_broker(timeout=timeout))
    except Exception as exc:  # noqa: BLE001
        return f"broker: {type(exc).__name__}: {exc}"
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.healthcheck",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per check")
    checks = parser.add_subparsers(dest="check", required=True)
    http = checks.add_parser("http", help="GET a URL; healthy on 200")
    http.add_argument("url")
    checks.add_parser("dependencies", help="reach the database and a Kafka broker")
    return parser


def main(argv: list[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    if options.check == "http":
        problem = check_http(options.url, options.timeout)
    else:
        problem = check_dependencies(options.timeout)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return UNHEALTHY
    return HEALTHY


if __name__ == "__main__":
    sys.exit(main())
