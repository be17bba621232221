"""Serve the site with several daphne processes sharing one listening socket.

Python runs one process on one core at a time, so a machine with N cores
serves best with N web processes. This command binds the address once and
starts ``--processes`` daphne processes on that socket (``daphne --fd``);
the kernel hands each new connection to whichever process accepts it first,
so a busy process takes fewer. Each process has its own live Kafka reader
and fan-out hub, so a WebSocket client receives every event whichever
process it landed on.

SIGINT or SIGTERM stops every daphne by its PID. If one exits on its own,
the others are stopped too and the command exits with its code (1 if it was
killed by a signal), so that whatever supervises the web tier (``runstack``,
a container runtime) restarts it whole. On Linux the daphne processes are
killed by the kernel if this process is killed outright, so none is left
holding the port.

Without ``KAFKA_BOOTSTRAP_SERVERS`` it uses the broker of the stack running
from ``VAR_DIR`` (:mod:`monitor.management.running_stack`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from monitor.management.processes import (
    daphne_command,
    exit_description,
    killed_with_parent,
    stop_processes,
)
from monitor.management.running_stack import use_running_broker

STOP_TIMEOUT = 10.0


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.set_inheritable(True)
    return sock


class Command(BaseCommand):
    help = "Serve HTTP and WebSockets with several daphne processes on one address."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.getenv("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.getenv("PORT", "8000")))
        parser.add_argument("--processes", type=int, default=settings.WEB_PROCESSES)
        parser.add_argument("--application", default="eventsite.asgi:application")

    def handle(self, *args: Any, **options: Any) -> None:
        count = int(options["processes"])
        if count < 1:
            raise CommandError("--processes must be at least 1")
        use_running_broker()
        try:
            sock = listening_socket(str(options["host"]), int(options["port"]))
        except OSError as exc:
            raise CommandError(
                f"cannot listen on {options['host']}:{options['port']}: {exc}"
            ) from exc
        self.stopping = False
        signal.signal(signal.SIGINT, self._request_stop)
        signal.signal(signal.SIGTERM, self._request_stop)
        fd = sock.fileno()
        argv = daphne_command("--fd", str(fd), application=str(options["application"]))
        children: list[subprocess.Popen[bytes]] = []
        code = 0
        try:
            for _ in range(count):
                children.append(
                    subprocess.Popen(argv, pass_fds=[fd], preexec_fn=killed_with_parent())
                )
                self.stdout.write(f"started daphne (pid {children[-1].pid})")
            self.stdout.write(
                f"web: {count} daphne process(es) on {options['host']}:{options['port']}"
            )
            sock.close()  # the children hold it now
            while not self.stopping:
                time.sleep(0.2)
                exited = [child for child in children if child.poll() is not None]
                if exited:
                    how = exit_description(exited[0].returncode)
                    self.stderr.write(f"web: daphne pid {exited[0].pid} {how}")
                    code = exited[0].returncode if exited[0].returncode > 0 else 1
                    break
        finally:
            sock.close()
            stop_processes(children, STOP_TIMEOUT)
        if code:
            sys.exit(code)

    def _request_stop(self, signum: int, frame: object) -> None:
        self.stopping = True
