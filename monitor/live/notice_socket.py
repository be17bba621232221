"""Live notices at /ws/notices/: each signed-in user's own notices, as they are stored.

Server to client, JSON text frames (built in :mod:`monitor.live.protocol`):

- ``{"type": "welcome", "unread": 3, "notices": [...]}`` once, on connect: the
  number of unread notices and the latest ``NOTICES_ON_CONNECT``, newest first;
- ``{"type": "notice", "unread": 4, "notice": {...}}`` for each notice stored
  after the welcome, in the order they were stored; ``unread`` is the count
  with this notice;
- ``{"type": "pong"}`` and ``{"type": "error", "code": "...", "message": "..."}``.

A notice is ``{"id", "kind", "actor", "subject", "text", "created_at",
"read", "link"}``; ``text`` is plain text ("ana liked your photo"), ``link``
the page it is about (or null). Client to server: ``{"type": "ping"}``; a
frame it cannot read is answered ``malformed``. An anonymous connection gets
an error frame and close code 4401; one refused because the database cannot
be reached, 4503.

The notices come from the process's poller (:mod:`monitor.live.notice_poller`).
A socket joins it before reading its welcome, so a notice stored in between
is held and then sent, unless the welcome already counted it: each notice
reaches the socket once, in order, after the welcome.
"""

from __future__ import annotations

import logging

from channels.db import database_sync_to_async
from django.db import DatabaseError

from monitor.live.json_socket import JsonSocket
from monitor.live.notice_poller import notice_json, poller
from monitor.live.protocol import CLOSE_UNAVAILABLE, notices_welcome_frame
from monitor.live.socket_auth import accept_signed_in, sockets
from monitor.models import Notice

logger = logging.getLogger(__name__)

NOTICES_ON_CONNECT = 10


def welcome_for(user_id: int) -> tuple[str, int]:
    """The welcome frame for ``user_id``, and the id of their newest notice (0: none)."""
    latest = list(Notice.objects.filter(recipient_id=user_id).order_by("-id")[:NOTICES_ON_CONNECT])
    unread = Notice.objects.filter(recipient_id=user_id, read_at__isnull=True).count()
    frame = notices_welcome_frame(unread, [notice_json(notice) for notice in latest])
    return frame, latest[0].pk if latest else 0


class NoticeStreamConsumer(JsonSocket):
    max_message_chars = 4096
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
            # Joined before the welcome is read: see the module's docstring.
            await poller.add(self)
            welcome, floor = await database_sync_to_async(welcome_for)(user.pk)
        except (ConnectionError, DatabaseError) as exc:
            logger.warning("notices refused: %s", exc)
            poller.remove(self)
            await self.send_error("unavailable", "notices cannot be read now; try again")
            await self.close(code=CLOSE_UNAVAILABLE)
            return
        await self.send_frame(welcome)
        while self.held:
            notice_id, frame = self.held.pop(0)
            if notice_id > floor:
                await self.send_frame(frame)
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
            await self.send_frame(frame)
        except Exception:  # noqa: BLE001 - the socket is closing; its disconnect follows
            logger.debug("notice not sent to a closing socket", exc_info=True)

    async def refuse_binary(self) -> None:
        await self.send_error("malformed", "send small JSON text frames")

    async def refuse_too_large(self) -> None:
        await self.refuse_binary()

    async def refuse_non_object(self) -> None:
        await self.refuse_unknown_type(None)
