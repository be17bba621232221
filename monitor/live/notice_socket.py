"""Live notices at /ws/notices/: each signed-in user's own notices, as they are stored.

Server to client, JSON text frames:

- ``{"type": "welcome", "unread": 3, "notices": [...]}`` once, on connect: the
  number of unread notices and the latest ``NOTICES_ON_CONNECT``, newest first;
- ``{"type": "notice", "unread": 4, "notice": {...}}`` for each notice stored
  after the welcome, in the order they were stored; ``unread`` is the count
  with this notice;
- ``{"type": "pong"}`` and ``{"type": "error", "code": "...", "message": "..."}``.

A notice is ``{"id", "kind", "actor", "subject", "text", "created_at",
"read", "link"}``; ``text`` is plain text ("ana liked your photo"), ``link``
the page it is about (or null). Client to server:
``{"type": "ping"}``. An anonymous connection gets an error frame and close
code 4401; one refused because the database cannot be reached, 4503.

Each web process runs one :class:`NoticePoller`, started with the first
connection and stopped when the last one leaves. Every
``NOTICES_POLL_MS`` it asks the database, in one query on the Notice index
(recipient, id), for the notices after the last it saw addressed to the
users connected to this process, and sends each to its recipient's sockets
only. No channel layer is involved: every process polls for its own
connections.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.db.models import Count, Max

from monitor.events.schema import format_time
from monitor.live.event_socket import CLOSE_BROKER_UNAVAILABLE
from monitor.live.message_rate import admitted
from monitor.live.socket_auth import accept_signed_in, sockets
from monitor.models import Notice

logger = logging.getLogger(__name__)

T = TypeVar("T")

NOTICES_ON_CONNECT = 10
CLOSE_UNAVAILABLE = CLOSE_BROKER_UNAVAILABLE  # 4503: a dependency is down
MAX_CLIENT_FRAME_CHARS = 4096
# Most new notices one poll fetches; more are fetched by the next poll, at once.
POLL_LIMIT = 500
# Ids are handed out when a row is inserted, but concurrent transactions (two
# notification workers on PostgreSQL) can commit out of id order. Each poll
# therefore looks again at the ids it passed in the last few seconds, and
# sends only those it has not sent yet.
REORDER_SECONDS = 2.0
# How long a connection waits for its process's poller to reach the database.
START_TIMEOUT_SECONDS = 10.0


def notice_json(notice: Notice) -> dict[str, Any]:
    """A notice as the socket (and the page's script) sees it."""
    return {
        "id": notice.pk,
        "kind": notice.kind,
        "actor": notice.actor_name,
        "subject": notice.subject,
        "text": notice.text,
        "created_at": format_time(notice.created_at),
        "read": notice.read_at is not None,
        "link": notice.link(),
    }


def welcome_for(user_id: int) -> tuple[dict[str, Any], int]:
    """The welcome frame for ``user_id``, and the id of their newest notice (0: none)."""
    latest = list(Notice.objects.filter(recipient_id=user_id).order_by("-id")[:NOTICES_ON_CONNECT])
    unread = Notice.objects.filter(recipient_id=user_id, read_at__isnull=True).count()
    frame = {"type": "welcome", "unread": unread, "notices": [notice_json(n) for n in latest]}
    return frame, latest[0].pk if latest else 0


def highest_notice_id() -> int:
    """The id of the newest notice of anyone (0: none)."""
    close_old_connections()
    return Notice.objects.aggregate(highest=Max("id"))["highest"] or 0


def close_connection() -> None:
    """Close the calling thread's database connection. (``connection.close``
    passed to another thread would close the passing thread's.)"""
    connection.close()


def notices_after(
    recipients: Sequence[int], after: int, limit: int
) -> tuple[list[Notice], dict[int, int]]:
    """The first ``limit`` notices to ``recipients`` with an id above ``after``, in id
    order, and the unread count of each recipient among them (asked only when
    there are any)."""
    close_old_connections()
    notices = list(
        Notice.objects.filter(recipient_id__in=recipients, id__gt=after).order_by("id")[:limit]
    )
    if not notices:
        return [], {}
    concerned = {notice.recipient_id for notice in notices}
    unread = (
        Notice.objects.filter(recipient_id__in=concerned, read_at__isnull=True)
        .order_by()
        .values("recipient_id")
        .annotate(unread=Count("id"))
    )
    return notices, {row["recipient_id"]: row["unread"] for row in unread}


def notice_frames(notices: list[Notice], unread: dict[int, int]) -> list[str]:
    """One ``notice`` frame per notice, each with its recipient's unread count as
    of that notice (the later unread notices of the same batch not yet counted)."""
    remaining = dict(unread)
    counts: list[int] = []
    for notice in reversed(notices):
        counts.append(remaining.get(notice.recipient_id, 0))
        if notice.read_at is None:
            remaining[notice.recipient_id] = counts[-1] - 1
    counts.reverse()
    return [
        json.dumps({"type": "notice", "unread": count, "notice": notice_json(notice)})
        for notice, count in zip(notices, counts, strict=True)
    ]


class NoticePoller:
    """This process's one poller: notices from the database to their recipients' sockets.

    Call it from one event loop only. Sockets join with :meth:`add` and leave
    with :meth:`remove`; the polling task runs while any is connected.
    """

    def __init__(self) -> None:
        self.sockets: dict[int, set[NoticeStreamConsumer]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None

    async def add(self, socket: NoticeStreamConsumer) -> None:
        """Poll for ``socket``'s user from now on; returns once the poller knows
        where the notices stored from now on start.

        Raises ConnectionError if the database cannot be reached in time (the
        socket is then no longer polled for).
        """
        assert socket.user_id is not None
        self.sockets.setdefault(socket.user_id, set()).add(socket)
        if self._task is None or self._ready is None:
            self._ready = asyncio.Event()
            self._task = asyncio.create_task(self._run(self._ready))
        task, ready = self._task, self._ready
        if not ready.is_set():
            waiting = asyncio.ensure_future(ready.wait())
            try:
                await asyncio.wait(
                    {waiting, task}, timeout=START_TIMEOUT_SECONDS, return_when="FIRST_COMPLETED"
                )
            finally:
                waiting.cancel()
        if not ready.is_set():
            self.remove(socket)
            raise ConnectionError("the notices cannot be read from the database")

    def remove(self, socket: NoticeStreamConsumer) -> None:
        sockets = self.sockets.get(socket.user_id or 0)
        if sockets is None:
            return
        sockets.discard(socket)
        if not sockets:
            del self.sockets[socket.user_id or 0]

    @property
    def running(self) -> bool:
        return self._task is not None

    async def _run(self, ready: asyncio.Event) -> None:
        """Poll while anyone is connected. The task forgets itself, with no await
        between the last check and that, so a socket that joins later starts a
        new one."""
        database = ThreadPoolExecutor(1, thread_name_prefix="notices-db")

        async def in_database(function: Callable[..., T], *args: Any) -> T:
            call = sync_to_async(function, thread_sensitive=False, executor=database)
            return await call(*args)

        loop = asyncio.get_running_loop()
        interval = settings.NOTICES_POLL_MS / 1000
        try:
            delay = interval
            while True:
                try:
                    floor = await in_database(highest_notice_id)
                    break
                except DatabaseError as exc:
                    logger.warning("notice poller cannot start yet: %s", exc)
                if not self.sockets:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            cursor = PollCursor(floor)
            ready.set()
            while self.sockets:
                started = loop.time()
                try:
                    fetched = await self.poll_once(cursor, in_database, now=started)
                except DatabaseError as exc:
                    logger.warning("notice poll failed: %s", exc)
                    fetched = 0
                if fetched < POLL_LIMIT:
                    await asyncio.sleep(max(0.0, started + interval - loop.time()))
        finally:
            if self._task is asyncio.current_task():
                self._task = self._ready = None
            with contextlib.suppress(Exception):
                await loop.run_in_executor(database, close_connection)
            database.shutdown(wait=False)

    async def poll_once(
        self,
        cursor: PollCursor,
        in_database: Callable[..., Any],
        *,
        now: float,
    ) -> int:
        """Fetch the notices after ``cursor`` for the connected users and send each
        to its recipient's sockets; return how many new notices were fetched."""
        recipients = sorted(self.sockets)
        if not recipients:
            return 0
        after = cursor.floor(now)
        notices, unread = await in_database(
            notices_after, recipients, after, POLL_LIMIT + len(cursor.sent)
        )
        new = [notice for notice in notices if notice.pk not in cursor.sent]
        for notice, frame in zip(new, notice_frames(new, unread), strict=True):
            cursor.sent.add(notice.pk)
            for socket in list(self.sockets.get(notice.recipient_id, ())):
                await socket.deliver(notice.pk, frame)
        cursor.passed(now, max((notice.pk for notice in new), default=0))
        return len(new)


class PollCursor:
    """Where a poller is: the ids it sent lately, and the id below which it need
    not look again (the highest it had seen ``REORDER_SECONDS`` ago)."""

    def __init__(self, start: int) -> None:
        self._floor = start
        self._highest = start
        self._marks: collections.deque[tuple[float, int]] = collections.deque()
        self.sent: set[int] = set()

    def floor(self, now: float) -> int:
        """The id after which to look, as of ``now`` (the loop's time)."""
        marks = self._marks
        while marks and marks[0][0] <= now - REORDER_SECONDS:
            self._floor = marks.popleft()[1]
        if self.sent:
            self.sent = {pk for pk in self.sent if pk > self._floor}
        return self._floor

    def passed(self, now: float, highest: int) -> None:
        """Note the highest id sent by the poll at ``now``."""
        self._highest = max(self._highest, highest)
        self._marks.append((now, self._highest))


poller = NoticePoller()


class NoticeStreamConsumer(AsyncJsonWebsocketConsumer):
    user_id: int | None = None
    # The id of the newest notice the welcome accounted for; None until it is
    # sent, while the notices the poller delivers are held back.
    floor: int | None = None
    held: list[tuple[int, str]]  # (notice id, frame) delivered before the welcome was sent

    async def connect(self) -> None:
        user = await accept_signed_in(self)
        if user is None:
            return
        self.user_id = user.pk
        self.held = []
        try:
            # Joined before the welcome is read: a notice stored in between is
            # held, then sent unless the welcome already counted it.
            await poller.add(self)
            welcome, floor = await database_sync_to_async(welcome_for)(user.pk)
        except (ConnectionError, DatabaseError) as exc:
            logger.warning("notices refused: %s", exc)
            poller.remove(self)
            await self.send_error("unavailable", "notices cannot be read now; try again")
            await self.close(code=CLOSE_UNAVAILABLE)
            return
        await self.send_json(welcome)
        while self.held:
            notice_id, frame = self.held.pop(0)
            if notice_id > floor:
                await self.send(text_data=frame)
        self.floor = floor

    async def disconnect(self, code: int) -> None:
        sockets.remove(self)
        if self.user_id is not None:
            poller.remove(self)

    async def deliver(self, notice_id: int, frame: str) -> None:
        """Send one of this user's notices (an encoded ``notice`` frame)."""
        if self.floor is None:
            self.held.append((notice_id, frame))
            return
        if notice_id <= self.floor:
            return  # in the welcome already
        try:
            await self.send(text_data=frame)
        except Exception:  # noqa: BLE001 - the socket is closing; its disconnect follows
            logger.debug("notice not sent to a closing socket", exc_info=True)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not await admitted(self):
            return
        if text_data is None or len(text_data) > MAX_CLIENT_FRAME_CHARS:
            await self.send_error("malformed", "send small JSON text frames")
            return
        try:
            message = json.loads(text_data)
        except json.JSONDecodeError as exc:
            await self.send_error("malformed", f"not JSON: {exc.msg}")
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "ping":
            await self.send_json({"type": "pong"})
        else:
            await self.send_error("unknown_type", f"unknown message type {str(kind)[:64]!r}")

    async def send_error(self, code: str, message: str) -> None:
        await self.send_json({"type": "error", "code": code, "message": message})
