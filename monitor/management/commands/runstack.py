"""Run the whole product on one machine: broker, web server and workers.

Applies migrations, starts the embedded broker unless
``KAFKA_BOOTSTRAP_SERVERS`` is set, creates the topics, then starts the web
tier (``runweb``: ``EVENTSITE_WEB_PROCESSES`` daphne processes on one
address) and the background workers as child processes and watches them. A worker
that dies is restarted; SIGINT or SIGTERM stops every child by its PID
(web and workers first, the broker last).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from monitor.kafka import clients as kafka
from monitor.kafka.embedded import EmbeddedBroker, port_is_free
from monitor.management.processes import stop_processes

RESTART_DELAY = 1.0
# A child that dies this soon after starting is broken, not unlucky.
MIN_HEALTHY_SECONDS = 5.0


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    started: float = field(default=0.0)


class Command(BaseCommand):
    help = "Run the web server, workers and (unless configured) an embedded Kafka broker."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.getenv("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.getenv("PORT", "8000")))
        parser.add_argument(
            "--broker-port",
            type=int,
            default=int(os.getenv("EMBEDDED_KAFKA_PORT", "9092")),
            help="port for the embedded broker (a free one if this is taken)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stopping = False
        signal.signal(signal.SIGINT, self._request_stop)
        signal.signal(signal.SIGTERM, self._request_stop)
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        settings.MEDIA_ROOT.mkdir(parents=True, exist_ok=True)
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("database ready")

        broker = None
        env = dict(os.environ)
        if not settings.KAFKA_BOOTSTRAP_SERVERS:
            port = int(options["broker_port"])
            broker = EmbeddedBroker(
                port if port_is_free(port) else None, log=settings.VAR_DIR / "broker.log"
            ).start()
            settings.KAFKA_BOOTSTRAP_SERVERS = broker.bootstrap_servers
            env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
            self.stdout.write(f"embedded broker (pid {broker.pid}) at {broker.bootstrap_servers}")
        try:
            asyncio.run(kafka.ensure_topics())
            children = self._children(str(options["host"]), int(options["port"]))
            for child in children:
                self._spawn(child, env)
            self.stdout.write(
                self.style.SUCCESS(
                    f"eventsite at http://{options['host']}:{options['port']}/ "
                    "(Ctrl-C stops everything)"
                )
            )
            self._watch(children, env)
        finally:
            self._stop_all(children if "children" in locals() else [])
            if broker is not None:
                broker.stop()
                self.stdout.write("embedded broker stopped")

    def _children(self, host: str, port: int) -> list[Child]:
        python = sys.executable
        manage = [python, str(settings.BASE_DIR / "manage.py")]
        return [
            Child("web", [*manage, "runweb", "--host", host, "--port", str(port)]),
            Child("analytics", [*manage, "run_analytics"]),
            Child("notifications", [*manage, "run_notifications"]),
            Child("relay", [*manage, "relay_outbox"]),
        ]

    def _spawn(self, child: Child, env: dict[str, str]) -> None:
        child.process = subprocess.Popen(
            child.argv, env=env, cwd=settings.BASE_DIR, start_new_session=True
        )
        child.started = time.monotonic()
        self.stdout.write(f"started {child.name} (pid {child.process.pid})")

    def _watch(self, children: list[Child], env: dict[str, str]) -> None:
        while not self.stopping:
            time.sleep(0.2)
            for child in children:
                assert child.process is not None
                code = child.process.poll()
                if code is None or self.stopping:
                    continue
                if time.monotonic() - child.started < MIN_HEALTHY_SECONDS:
                    raise CommandError(f"{child.name} exited at start with code {code}")
                self.stderr.write(f"{child.name} exited with code {code}; restarting")
                time.sleep(RESTART_DELAY)
                self._spawn(child, env)

    def _request_stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _stop_all(self, children: list[Child], timeout: float = 10.0) -> None:
        running = [c for c in children if c.process is not None and c.process.poll() is None]
        stop_processes([child.process for child in running if child.process], timeout)
        for child in running:
            self.stdout.write(f"stopped {child.name}")
