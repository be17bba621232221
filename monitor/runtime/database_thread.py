"""One thread for a long-running component's database work.

Django's connections belong to threads. A component that runs on an event
loop (a worker, the publisher, the notice poller, the presence heartbeat)
and hands each query to a new thread would open a connection per query;
one thread of its own keeps one connection, reused while
``DATABASE_CONN_MAX_AGE`` allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from django.db import DatabaseError, close_old_connections, connection

P = ParamSpec("P")
T = TypeVar("T")


class DatabaseThread:
    """Runs functions on one thread, started on first use; :meth:`close` ends
    the thread's connection, then the thread (a later call starts a new one)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``function(*args, **kwargs)`` on the thread, once a connection too old
        (``DATABASE_CONN_MAX_AGE``) or found unusable has been replaced."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=self.name)
        call = functools.partial(_with_fresh_connection, function, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def close(self) -> None:
        """Close the thread's connection (on that thread: ``connection`` is per
        thread), then let the thread end. Never raises for a lost connection."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        with contextlib.suppress(DatabaseError):
            await asyncio.get_running_loop().run_in_executor(executor, connection.close)
        executor.shutdown(wait=False)


def _with_fresh_connection(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    close_old_connections()
    return function(*args, **kwargs)
