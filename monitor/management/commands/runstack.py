"""Run the whole product on one machine: broker, web server and workers.

Applies migrations, starts the embedded broker (``runbroker``, which rolls it
over before it holds too much) unless ``KAFKA_BOOTSTRAP_SERVERS`` is set,
creates the topics, then starts the web
tier (``runweb``: ``EVENTSITE_WEB_PROCESSES`` daphne processes on one
address), the analytics and notifications workers and the outbox relay as
child processes, and supervises them (:mod:`monitor.management.supervision`):
a part that dies is started again with backoff (the embedded broker on the
same port, empty, and the topics created again), and a part that cannot
start at all stops everything with an error.

While it runs, ``VAR_DIR/stack.json`` says where the broker and the site are
(:mod:`monitor.management.running_stack`), for the commands run from another
terminal. SIGINT or SIGTERM stops every child by its PID (web and workers
first, the broker last) and removes that record. On Linux the children are
killed by the kernel if this process is killed outright, so none outlives it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka.errors import KafkaError
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from monitor.kafka import clients as kafka
from monitor.kafka.embedded import free_port, port_is_free, wait_until_listening
from monitor.management.processes import killed_with_parent, stop_processes
from monitor.management.running_stack import (
    PartState,
    StackRecord,
    connectable_url,
    remove_record,
    running_stack,
    write_record,
)
from monitor.management.supervision import CannotStart, Part, Supervisor

TOPICS_TIMEOUT_SECONDS = 15.0
CHECK_INTERVAL_SECONDS = 0.2
BROKER_START_SECONDS = 30.0
EMBEDDED_LIVE_FETCH_WAIT_MS = 50


class TopicsMissing(Exception):
    """The broker did not create the topics in time."""


def can_listen(host: str, port: int) -> bool:
    """True if a server could listen on ``host:port`` now (as runweb will)."""
    try:
        socket.create_server(
            (host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET
        ).close()
    except OSError:
        return False
    return True


class Command(BaseCommand):
    help = "Run the web server, workers and (unless configured) an embedded Kafka broker."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.getenv("HOST", "127.0.0.1"))
        parser.add_argument(
            "--port",
            type=int,
            default=int(os.getenv("PORT", "8000")),
            help="the site's port (0: a free one)",
        )
        parser.add_argument(
            "--broker-port",
            type=int,
            default=int(os.getenv("EMBEDDED_KAFKA_PORT", "9092")),
            help="port for the embedded broker (a free one if this is taken)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        host = str(options["host"])
        port = int(options["port"]) or free_port(host)
        self._refuse_what_is_in_the_way(host, port)
        self.stopping = False
        signal.signal(signal.SIGINT, self._request_stop)
        signal.signal(signal.SIGTERM, self._request_stop)
        settings.MEDIA_ROOT.mkdir(parents=True, exist_ok=True)
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("database ready")

        env = dict(os.environ)
        broker = self._embedded_broker(int(options["broker_port"]))
        parts = self._parts(broker, env, host, port)
        self.record = StackRecord(
            pid=os.getpid(),
            url=connectable_url(host, port),
            bootstrap_servers=broker or kafka.bootstrap_servers(),
            embedded_broker=broker is not None,
            started_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        )
        supervisor = Supervisor(parts, announce=self.stdout.write, changed=self._write_record)
        try:
            if broker is None:
                self._create_topics()
            supervisor.start_all(lambda: self.stopping)
            self.stdout.write(
                self.style.SUCCESS(f"eventsite at {self.record.url}/ (Ctrl-C stops everything)")
            )
            while not self.stopping:
                time.sleep(CHECK_INTERVAL_SECONDS)
                supervisor.check()
        except (CannotStart, TopicsMissing) as exc:
            raise CommandError(str(exc)) from None
        finally:
            remove_record(os.getpid())
            supervisor.stop_all()

    def _refuse_what_is_in_the_way(self, host: str, port: int) -> None:
        """Raise CommandError if a stack already runs from VAR_DIR, or if the
        site's address is taken: both would only fail later, less clearly."""
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        other = running_stack()
        if other is not None:
            raise CommandError(
                f"eventsite is already running from {settings.VAR_DIR} "
                f"(pid {other.pid}, {other.url}); stop it first"
            )
        if not can_listen(host, port):
            raise CommandError(
                f"cannot serve on {host}:{port}: the address is in use "
                "(PORT=9000 make run serves on another port)"
            )

    def _embedded_broker(self, port: int) -> str | None:
        """The address of the embedded broker to start (``runbroker``), unless
        KAFKA_BOOTSTRAP_SERVERS names one; the settings and the children's
        environment then name it."""
        if settings.KAFKA_BOOTSTRAP_SERVERS:
            return None
        address = f"127.0.0.1:{port if port_is_free(port) else free_port()}"
        settings.KAFKA_BOOTSTRAP_SERVERS = address
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = address
        return address

    def _parts(self, broker: str | None, env: dict[str, str], host: str, port: int) -> list[Part]:
        env = {**env, "KAFKA_BOOTSTRAP_SERVERS": str(settings.KAFKA_BOOTSTRAP_SERVERS)}
        if broker is not None:
            # Each fetch costs the embedded broker CPU even when there is nothing
            # to read: live readers wait longer for data (docs/PERFORMANCE.md, "Soak").
            env.setdefault("KAFKA_LIVE_FETCH_WAIT_MS", str(EMBEDDED_LIVE_FETCH_WAIT_MS))
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]

        def child(*argv: str) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [*manage, *argv],
                env=env,
                cwd=settings.BASE_DIR,
                # Its own session: a terminal's Ctrl-C reaches this supervisor,
                # which stops the children in order.
                start_new_session=True,
                preexec_fn=killed_with_parent(),
            )

        parts = [
            Part("web", lambda: child("runweb", "--host", host, "--port", str(port))),
            Part("analytics", lambda: child("run_analytics")),
            Part("notifications", lambda: child("run_notifications")),
            Part("relay", lambda: child("relay_outbox")),
        ]
        if broker is None:
            return parts

        host_part, _, port_part = broker.rpartition(":")

        def start_broker() -> subprocess.Popen[bytes]:
            process = child("runbroker", "--host", host_part, "--port", port_part)
            try:
                wait_until_listening(process, host_part, int(port_part), BROKER_START_SECONDS)
                self._create_topics()
            except BaseException:
                stop_processes([process], timeout=5.0)
                raise
            return process

        return [Part("broker", start_broker, stop_rank=0), *parts]

    def _create_topics(self) -> None:
        """Create the topics the broker lacks (all of them, after a restart)."""
        try:
            asyncio.run(asyncio.wait_for(kafka.ensure_topics(), TOPICS_TIMEOUT_SECONDS))
        except (KafkaError, OSError, TimeoutError) as exc:
            raise TopicsMissing(
                f"could not create the topics on {settings.KAFKA_BOOTSTRAP_SERVERS}: "
                f"{exc or type(exc).__name__}"
            ) from exc

    def _write_record(self, parts: Sequence[Part]) -> None:
        self.record.parts = {
            part.name: PartState(
                pid=None if part.restart_due is not None else part.pid,
                state="restarting" if part.restart_due is not None else "running",
                restarts=part.restarts,
                last_exit=part.last_exit,
            )
            for part in parts
        }
        write_record(self.record)

    def _request_stop(self, signum: int, frame: object) -> None:
        self.stopping = True
