"""The two kinds of :class:`~monitor.live.client.LiveClient`: bounded, and told what they missed.

The hub (:mod:`monitor.live.hub`) offers each batch's frame to every client.
Under daphne a :class:`DirectStream` writes the frame bytes straight to the
connection's transport (see :mod:`monitor.live.wire`) and stops writing
while the client has more than ``FANOUT_CLIENT_MAX_BUFFER_BYTES`` unread;
elsewhere a :class:`ClientStream` keeps a bounded queue of frames for ASGI
``send``. A client that falls behind loses frames, but never silently: the
next frame it gets is a ``gap`` notice with the number of events it missed,
and a client that stays behind is closed with :data:`CLOSE_TOO_SLOW`.

A client that reads nothing at all is too slow as well, whether or not it
fell behind: it answers no ping either, and once daphne's ping timeout
passes it gets its gap notice and ``4008`` like any other, rather than the
bare TCP drop (``1006``) the WebSocket layer would give it. The notice and
the close frame go after everything it has not read yet, and the connection
is kept for ``CLOSE_FLUSH_SECONDS`` while they wait in the buffers (the
kernel's and the transport's, full while it does not read), so that a
client that reads again within that time reads them last.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from aiokafka import TopicPartition

from monitor.live.client import ClientGone
from monitor.live.filters import EventFilter
from monitor.live.protocol import CLOSE_TOO_SLOW, gap_frame
from monitor.live.wire import DirectSocket, text_frame, wire_bytes

logger = logging.getLogger(__name__)

SendText = Callable[[str], Awaitable[None]]
CloseSocket = Callable[[int], Awaitable[None]]
# How long a client closed as too slow has to read what is left before it is cut off:
# what it holds meanwhile is bounded (FANOUT_CLIENT_MAX_BUFFER_BYTES and the
# kernel's buffers), and a client paused for minutes still reads why it was closed.
CLOSE_FLUSH_SECONDS = 300.0
# How often a replay waiting for a client to read checks again.
REPLAY_WAIT_SECONDS = 0.02


class DirectStream:
    """A daphne socket written to directly; bounded by what the client has not read.

    A client that stays behind for ``slow_close_seconds`` is closed with
    :data:`CLOSE_TOO_SLOW`: a gap notice and a close frame go after what it
    has not read yet, and the connection ends once that is written, so a
    client that reads again finds out exactly what happened.
    """

    def __init__(
        self, socket: DirectSocket, *, max_buffered_bytes: int, slow_close_seconds: float
    ) -> None:
        self.socket = socket
        self.filter: EventFilter | None = None
        self.floor: dict[TopicPartition, int] | None = None
        self._max_buffered = max_buffered_bytes
        self._slow_close = slow_close_seconds
        self.missed = 0
        self.delivered = 0
        self.behind_since: float | None = None
        # autobahn would drop a connection that answers no ping (1006, and
        # whatever the client has not read is lost): this one is closed as too
        # slow instead. Set on the instance: autobahn looks the method up each
        # time it arms the timeout.
        socket.protocol.onAutoPingTimeout = self._ping_unanswered

    def _ping_unanswered(self) -> None:
        """A ping's timeout passed. daphne pings on its own schedule and each ping
        arms a timeout of its own, so more may still be armed once the socket
        is closing: those do nothing (the close has its own limit)."""
        self.socket.protocol.autoPingTimeoutCall = None
        if self.socket.open:
            logger.info("live client answered no ping: closed as too slow")
            self.close_too_slow(why="answered no ping")

    def _behind(self) -> bool:
        return self.socket.buffered() > self._max_buffered

    def offer(self, frame: str, events: int) -> bool:
        """Write a frame of ``events`` events, or count them missed while the client
        lags; True while the client is owed a gap notice."""
        if not self.socket.open:
            return False
        if self._behind():
            if self.behind_since is None:
                self.behind_since = time.monotonic()
            self.missed += events
            return True
        if self.missed:  # checked here first: this runs per client per frame
            self.announce_missed()
        self.socket.write(wire_bytes(frame))
        self.delivered += events
        return False

    def flush_gap(self) -> bool:
        """Tell a client that has caught up what it missed; True once nothing is owed.

        A client behind for too long is closed instead (also True).
        """
        if not self.missed or not self.socket.open:
            return True
        if self._behind():
            assert self.behind_since is not None
            if time.monotonic() - self.behind_since < self._slow_close:
                return False
            self.close_too_slow()
            return True
        self.announce_missed()
        return True

    def announce_missed(self) -> None:
        if self.missed and self.socket.open:
            self.socket.write(text_frame(gap_frame(self.missed).encode()))
            self.missed = 0
            self.behind_since = None

    def send_now(self, text: str) -> None:
        if self.socket.open:
            self.socket.write(text_frame(text.encode()))

    async def send_replay(self, frame: str, events: int) -> None:
        """Write a replayed frame once the client has room for it.

        A client that reads nothing for ``slow_close_seconds`` meanwhile is
        closed as too slow and :class:`ClientGone` raised.
        """
        waited_since = time.monotonic()
        while self.socket.open and self._behind():
            if time.monotonic() - waited_since > self._slow_close:
                self._close_after_writes(CLOSE_TOO_SLOW, "too slow to take the replay")
                break
            await asyncio.sleep(REPLAY_WAIT_SECONDS)
        if not self.socket.open:
            raise ClientGone
        self.socket.write(wire_bytes(frame))
        self.delivered += events

    def close_too_slow(self, why: str = "") -> None:
        """The gap notice (even of 0 events), then a close with 4008 whose reason
        repeats the count; both after everything written so far."""
        missed, self.missed = self.missed, 0
        self.socket.write(text_frame(gap_frame(missed).encode()))
        reason = f"too slow: {missed} events missed" + (f" ({why})" if why else "")
        self._close_after_writes(CLOSE_TOO_SLOW, reason)

    def close_with(self, code: int, reason: str) -> None:
        """After what was written (and a gap notice, if any is owed), close with
        ``code``; nothing once the socket is closing."""
        if self.socket.open:
            self.announce_missed()
            self._close_after_writes(code, reason)

    def _close_after_writes(self, code: int, reason: str) -> None:
        # daphne's HTTP channel stays registered as the transport's producer,
        # and Twisted, once a full buffer has drained, resumes a paused
        # producer instead of ending the connection: unregistered, the
        # connection ends once the close frame is written, as it should.
        self.socket.transport.unregisterProducer()
        self.socket.close_after_writes(code, reason, give_up_after=CLOSE_FLUSH_SECONDS)

    def close(self) -> None:
        """Nothing to stop: the connection itself is daphne's."""


class ClientStream:
    """One socket's bounded queue of frames and the task that sends them in order."""

    def __init__(
        self, send: SendText, *, max_frames: int, close: CloseSocket | None = None
    ) -> None:
        self._send = send
        self._close = close
        self._close_code: int | None = None
        self.filter: EventFilter | None = None
        self.floor: dict[TopicPartition, int] | None = None
        self._max_frames = max_frames
        self._queue: deque[str] = deque()
        self._wake = asyncio.Event()
        self.missed = 0
        self.delivered = 0
        self._task = asyncio.create_task(self._pump())

    def offer(self, frame: str, events: int) -> bool:
        """Queue a frame of ``events`` events, or count them missed if the queue is
        full; True while the client is owed a gap notice."""
        needed = 2 if self.missed else 1  # a gap notice goes before the frame
        if len(self._queue) + needed > self._max_frames:
            self.missed += events
            return True
        self.announce_missed()
        self._queue.append(frame)
        self.delivered += events
        self._wake.set()
        return False

    def flush_gap(self) -> bool:
        """Queue the gap notice once there is room; True once nothing is owed."""
        if not self.missed:
            return True
        if len(self._queue) >= self._max_frames:
            return False
        self.announce_missed()
        return True

    def announce_missed(self) -> None:
        if self.missed:
            self.send_now(gap_frame(self.missed))
            self.missed = 0

    def send_now(self, text: str) -> None:
        self._queue.append(text)
        self._wake.set()

    async def send_replay(self, frame: str, events: int) -> None:
        while len(self._queue) >= self._max_frames:
            if self._task.done():
                raise ClientGone
            await asyncio.sleep(REPLAY_WAIT_SECONDS)
        self.send_now(frame)
        self.delivered += events

    def close_with(self, code: int, reason: str) -> None:
        """Send what is queued (and a gap notice, if any is owed), then close with
        ``code`` (ASGI carries no reason); idempotent."""
        if self._close is None or self._close_code is not None:
            return
        self.announce_missed()
        self._close_code = code
        self._wake.set()

    async def _pump(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    await self._send(self._queue.popleft())
                if self._close_code is not None and self._close is not None:
                    await self._close(self._close_code)
                    return
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the socket went away; disconnect unregisters it
            logger.debug("client stream stopped", exc_info=True)
            self._queue.clear()

    def close(self) -> None:
        self._task.cancel()
