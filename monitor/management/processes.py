"""Stopping the child processes the project starts (web, workers, benchmarks)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterable

from django.conf import settings


def daphne_command(*listen: str, application: str = "eventsite.asgi:application") -> list[str]:
    """The command that serves ``application`` with daphne as the product runs it
    (``listen``: where, e.g. ``--fd 3`` or ``-b 127.0.0.1 -p 8000``)."""
    return [
        sys.executable,
        "-m",
        "daphne",
        *listen,
        # WebSocket heartbeats: a ping every WS_PING_SECONDS; a connection that
        # answers none for WS_PING_TIMEOUT_SECONDS is closed.
        "--ping-interval",
        str(settings.WS_PING_SECONDS),
        "--ping-timeout",
        str(settings.WS_PING_TIMEOUT_SECONDS),
        # Larger client messages are refused by daphne itself (close code 1009).
        "--websocket-max-message-size",
        str(settings.WS_MAX_MESSAGE_BYTES),
        application,
    ]


def stop_processes(processes: Iterable[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """SIGTERM each process still running, then SIGKILL any still running after
    ``timeout`` (one deadline for all); only these PIDs. A process frozen with
    SIGSTOP is continued first, so that it can see the SIGTERM."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGCONT)
        process.terminate()
    deadline = time.monotonic() + timeout
    for process in running:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
