"""Each web process's one notice poller: stored notices to their recipients' sockets.

The notifications worker stores a notice once per event and recipient; this
is how it reaches the recipient's open ``/ws/notices/`` sockets
(:mod:`monitor.live.notice_socket`). While any socket is connected, the
process's :class:`NoticePoller` asks the database every ``NOTICES_POLL_MS``,
in one query on the Notice index (recipient, id), for the notices after the
last it saw addressed to the users connected to this process, and hands each
to its recipient's sockets only, in id order. No channel layer is involved:
every process polls for its own connections.

A notice is handed to a socket at most once (see :class:`PollCursor`), even
when notices commit out of id order.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, Max

from monitor.events.schema import format_time
from monitor.live.protocol import notice_frame
from monitor.models import Notice
from monitor.runtime.backoff import Backoff
from monitor.runtime.database_thread import DatabaseThread

logger = logging.getLogger(__name__)

# Most new notices one poll fetches; more are fetched by the next poll, at once.
POLL_LIMIT = 500
# Ids are handed out when a row is inserted, but concurrent transactions (two
# notification workers on PostgreSQL) can commit out of id order. Each poll
# therefore looks again at the ids it passed in the last few seconds, and
# sends only those it has not sent yet.
REORDER_SECONDS = 2.0
# How long a connection waits for its process's poller to reach the database.
START_TIMEOUT_SECONDS = 10.0
# The longest wait between two tries to start polling.
START_RETRY_MAX_SECONDS = 5.0

# Runs a function (and its arguments) away from the event loop; its result.
InDatabase = Callable[..., Awaitable[Any]]


class NoticeRecipient(Protocol):
    """A socket notices are delivered to: its user's, in the order stored."""

    @property
    def user_id(self) -> int | None: ...

    async def deliver(self, notice_id: int, frame: str) -> None: ...


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


def highest_notice_id() -> int:
    """The id of the newest notice of anyone (0: none)."""
    highest: int | None = Notice.objects.aggregate(highest=Max("id"))["highest"]
    return highest or 0


def notices_after(
    recipients: Sequence[int], after: int, limit: int
) -> tuple[list[Notice], dict[int, int]]:
    """The first ``limit`` notices to ``recipients`` with an id above ``after``, in id
    order, and the unread count of each recipient among them (asked only when
    there are any)."""
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
        notice_frame(count, notice_json(notice))
        for notice, count in zip(notices, counts, strict=True)
    ]


class NoticePoller:
    """This process's one poller. Call it from one event loop only.

    Sockets join with :meth:`add` and leave with :meth:`remove`; the polling
    task runs while any is connected.
    """

    def __init__(self) -> None:
        self.sockets: dict[int, set[NoticeRecipient]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None

    async def add(self, socket: NoticeRecipient) -> None:
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

    def remove(self, socket: NoticeRecipient) -> None:
        user_id = socket.user_id or 0
        sockets = self.sockets.get(user_id)
        if sockets is None:
            return
        sockets.discard(socket)
        if not sockets:
            del self.sockets[user_id]

    @property
    def running(self) -> bool:
        return self._task is not None

    async def _run(self, ready: asyncio.Event) -> None:
        """Poll while anyone is connected. The task forgets itself, with no await
        between the last check and that, so a socket that joins later starts a
        new one."""
        database = DatabaseThread("notices-db")
        loop = asyncio.get_running_loop()
        interval = settings.NOTICES_POLL_MS / 1000
        try:
            floor = await self._start(database.run, interval)
            if floor is None:
                return
            cursor = PollCursor(floor)
            ready.set()
            while self.sockets:
                started = loop.time()
                try:
                    fetched = await self.poll_once(cursor, database.run, now=started)
                except DatabaseError as exc:
                    logger.warning("notice poll failed: %s", exc)
                    fetched = 0
                if fetched < POLL_LIMIT:
                    await asyncio.sleep(max(0.0, started + interval - loop.time()))
        finally:
            if self._task is asyncio.current_task():
                self._task = self._ready = None
            await database.close()

    async def _start(self, in_database: InDatabase, interval: float) -> int | None:
        """The newest notice id when polling starts, retried with backoff while the
        database fails; None if every socket left meanwhile."""
        backoff = Backoff(interval, max(interval, START_RETRY_MAX_SECONDS))
        while True:
            try:
                highest: int = await in_database(highest_notice_id)
                return highest
            except DatabaseError as exc:
                logger.warning("notice poller cannot start yet: %s", exc)
            if not self.sockets:
                return None
            await asyncio.sleep(backoff.next())

    async def poll_once(self, cursor: PollCursor, in_database: InDatabase, *, now: float) -> int:
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
