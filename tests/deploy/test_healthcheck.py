"""deploy/healthcheck.py, the containers' health checks: the web check asks
/healthz with a Host the site allows and is healthy only on 200; the worker
check reaches the database and the broker, and says which one it cannot."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy import healthcheck
from monitor.kafka.embedded import free_port
from tests.support.compose import healthcheck_command, service
from tests.support.dockerfile import container_env
from tests.support.environment import run


def test_the_health_check_sends_a_host_the_site_allows() -> None:
    assert healthcheck.allowed_host("events.example.com,other") == "events.example.com"
    assert healthcheck.allowed_host(" .example.com") == "example.com"
    assert healthcheck.allowed_host("*") == "localhost"
    assert healthcheck.allowed_host("") == "localhost"


class _Recorder(http.server.BaseHTTPRequestHandler):
    hosts: list[str] = []

    def do_GET(self) -> None:
        self.hosts.append(self.headers["Host"])
        status = 200 if self.path == "/healthz" else 503
        body = b'{"status": "unavailable"}' if status != 200 else b'{"status": "ok"}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Recorder.hosts = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_web_health_check_is_healthy_only_on_200(recorder: str) -> None:
    env = {"DJANGO_ALLOWED_HOSTS": ".example.com"}
    healthy = run(["-m", "deploy.healthcheck", "http", f"{recorder}/healthz"], env)
    assert healthy.returncode == 0, healthy.stderr
    assert _Recorder.hosts == ["example.com"]
    unhealthy = run(["-m", "deploy.healthcheck", "http", f"{recorder}/down"], env)
    assert unhealthy.returncode == 1
    assert "503" in unhealthy.stderr and "unavailable" in unhealthy.stderr
    closed = free_port()
    refused = run(["-m", "deploy.healthcheck", "http", f"http://127.0.0.1:{closed}/healthz"], env)
    assert refused.returncode == 1 and "unhealthy" in refused.stderr


HEALTHZ_THROUGH_DJANGO = """
import django, json
django.setup()
from django.test import Client
from deploy.healthcheck import allowed_host
import os
response = Client().get("/healthz", HTTP_HOST=allowed_host(os.environ["DJANGO_ALLOWED_HOSTS"]))
print(json.dumps([response.status_code, response.headers.get("Content-Type")]))
"""


def test_the_production_site_answers_the_web_health_check_over_plain_http(
    compose: dict[str, Any], kafka_broker: Any, tmp_path: Path
) -> None:
    # Not redirected to HTTPS, and its Host allowed: the answer is /healthz's own.
    env = {
        **container_env(compose, "web"),
        "DJANGO_ALLOWED_HOSTS": "events.example.com,.example.org",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'health.sqlite3'}",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
    }
    result = run(["-c", HEALTHZ_THROUGH_DJANGO], env)
    assert result.returncode == 0, result.stderr
    status, content_type = json.loads(result.stdout.strip().splitlines()[-1])
    assert status in (200, 503) and content_type == "application/json"


def test_the_worker_health_check_reaches_the_database_and_the_broker(
    compose: dict[str, Any], kafka_broker: Any
) -> None:
    env = {
        **container_env(compose, "analytics"),
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/test",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
    }
    (argv,) = {tuple(healthcheck_command(service(compose, n))[1:]) for n in ("analytics", "relay")}
    healthy = run(list(argv[1:]), env)
    assert healthy.returncode == 0, healthy.stderr

    closed = free_port()
    no_broker = run(list(argv[1:]), {**env, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed}"})
    assert no_broker.returncode == 1 and "broker" in no_broker.stderr
    no_database = run(
        list(argv[1:]), {**env, "DATABASE_URL": f"postgres://postgres@127.0.0.1:{closed}/test"}
    )
    assert no_database.returncode == 1 and "database" in no_database.stderr
