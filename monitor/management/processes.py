"""Starting and stopping the child processes the project runs (broker, web, workers).

A child started with :func:`killed_with_parent` as its ``preexec_fn`` is
killed by the kernel (Linux) when the process that started it ends, even by
SIGKILL, so that a killed supervisor leaves no process behind holding its
ports. :func:`stop_processes` stops children by their PIDs only.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings

PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., Any] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Looked up once here: the function runs in the child between fork and exec,
# where as little as possible should happen.
PRCTL = _prctl()


def killed_with_parent(signum: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen` after which the kernel
    sends the child ``signum`` when this process ends (Linux; None elsewhere).
    SIGKILL by default; SIGTERM lets a child that supervises others stop them.

    Call it in the thread that will outlive the child (the main thread): the
    kernel ties the signal to the thread that started the child. The signal
    survives ``exec``, so it holds for the program the child runs.
    """
    prctl = PRCTL
    if prctl is None:
        return None
    parent = os.getpid()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signum))
        if os.getppid() != parent:  # the parent ended before the signal was armed
            os.kill(os.getpid(), signum)

    return arm


def exit_description(code: int) -> str:
    """``"exited with code 3"`` or ``"killed by SIGKILL"`` for a Popen return code."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


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
