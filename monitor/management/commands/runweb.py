"""Serve the site with several daphne processes sharing one listening socket.

Python runs one process on one core at a time, so a machine with N cores
serves best with N web processes. This command binds the address once and
starts ``--processes`` daphne processes on that socket (``daphne --fd``);
the kernel hands each new connection to whichever process accepts it first,
so a busy process takes fewer. Each process has its own live Kafka reader
and fan-out hub, so a WebSocket client receives every event whichever
process it landed on.

SIGINT or SIGTERM stops every daphne by its PID. If one exits on its own,
the others are stopped too and the command exits with its code, so that
whatever supervises the web tier (``runstack``, a container runtime)
restarts it whole.
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

from monitor.management.processes import daphne_command, stop_processes

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
                children.append(subprocess.Popen(argv, pass_fds=[fd]))
                self.stdout.write(f"started daphne (pid {children[-1].pid})")
            self.stdout.write(
                f"web: {count} daphne process(es) on {options['host']}:{options['port']}"
            )
            sock.close()  # the children hold it now
            while not self.stopping:
                time.sleep(0.2)
                exited = [child for child in children if child.poll() is not None]
                if exited:
                    code = exited[0].returncode or 1
                    self.stderr.write(f"web: daphne pid {exited[0].pid} exited with code {code}")
                    break
        finally:
            sock.close()
            stop_processes(children, STOP_TIMEOUT)
        if code:
            sys.exit(code)

    def _request_stop(self, signum: int, frame: object) -> None:
        self.stopping = True
