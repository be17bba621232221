"""Who is watching the live stream, across every web process (the dashboard asks).

Each process keeps its watchers in memory (:class:`Presence`, touched only on
the event loop) and, while it has any, a heartbeat writes their user ids to
its :class:`~monitor.models.WatcherHeartbeat` row from a database thread, at
once when the set changes and every ``PRESENCE_HEARTBEAT_SECONDS`` otherwise.
:func:`watching_count` counts the distinct users in the rows whose heartbeat
is fresh, so the rows of a process that crashed stop counting after three
periods. The last watcher leaving stops the heartbeat and deletes the row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from monitor.models import WatcherHeartbeat
from monitor.runtime.database_thread import DatabaseThread

logger = logging.getLogger(__name__)

# A row whose heartbeat is older than this many periods no longer counts.
FRESH_PERIODS = 3


def new_process_id() -> str:
    """An id for this process's row: unique even when a host reuses a pid."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Presence:
    """This process's watchers and its heartbeat. Call it from one event loop only."""

    def __init__(self, process_id: str | None = None) -> None:
        self.process_id = process_id or new_process_id()
        self.connections: Counter[int] = Counter()  # user id -> open streams
        self._changed: asyncio.Event | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        # One thread, so the heartbeat keeps one database connection.
        self._database = DatabaseThread("presence-db")

    def joined(self, user_id: int) -> None:
        self.connections[user_id] += 1
        if self.connections[user_id] == 1:
            self._beat_soon()

    def left(self, user_id: int) -> None:
        if user_id not in self.connections:
            return
        self.connections[user_id] -= 1
        if not self.connections[user_id]:
            del self.connections[user_id]
            self._beat_soon()

    @property
    def beating(self) -> bool:
        return self._heartbeat is not None

    def _beat_soon(self) -> None:
        if self._heartbeat is None:
            self._changed = asyncio.Event()
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())
        assert self._changed is not None
        self._changed.set()

    async def _beat(self) -> None:
        """Write the watchers now, on every change and every period; stop with the last."""
        assert self._changed is not None
        period = settings.PRESENCE_HEARTBEAT_SECONDS
        try:
            while True:
                self._changed.clear()
                if not self.connections:
                    await self._in_database(forget_process, self.process_id)
                    # No connection kept open until watchers return.
                    await self._database.close()
                    if not self.connections:
                        return  # no await until the task is marked done: a join starts a new one
                    continue
                await self._in_database(record_watchers, self.process_id, sorted(self.connections))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), period)
        finally:
            self._heartbeat = None

    async def _in_database(self, function: Callable[..., Any], *args: Any) -> None:
        try:
            await self._database.run(function, *args)
        except Exception as exc:  # noqa: BLE001 - the next beat tries again; rows expire
            logger.warning("presence heartbeat failed: %s", exc)


def record_watchers(process_id: str, user_ids: list[int]) -> None:
    """Replace this process's row with ``user_ids``, stamped now."""
    WatcherHeartbeat.objects.update_or_create(
        process=process_id, defaults={"user_ids": user_ids, "beat_at": timezone.now()}
    )


def forget_process(process_id: str) -> None:
    """Delete this process's row (nothing happens if there is none)."""
    WatcherHeartbeat.objects.filter(process=process_id).delete()


def watching_count() -> int:
    """Distinct signed-in users watching in any process with a fresh heartbeat."""
    fresh_since = timezone.now() - timedelta(
        seconds=FRESH_PERIODS * settings.PRESENCE_HEARTBEAT_SECONDS
    )
    watching: set[int] = set()
    for user_ids in WatcherHeartbeat.objects.filter(beat_at__gte=fresh_since).values_list(
        "user_ids", flat=True
    ):
        watching.update(user_ids)
    return len(watching)


presence = Presence()


async def watcher_joined(user_id: int) -> None:
    """A signed-in user opened a stream in this process; never waits for the database."""
    presence.joined(user_id)


async def watcher_left(user_id: int) -> None:
    """A stream that :func:`watcher_joined` announced closed; never waits for the database."""
    presence.left(user_id)
