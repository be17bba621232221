"""One WebSocket client of the live fan-out: bounded, and told what it missed.

The hub (:mod:`monitor.live.hub`) offers each batch's frame to every client
stream. Under daphne a :class:`DirectStream` writes the frame bytes straight
to the connection's transport (see :mod:`monitor.live.wire`) and stops writing
while the client has more than ``FANOUT_CLIENT_MAX_BUFFER_BYTES`` unread;
elsewhere a :class:`ClientStream` keeps a bounded queue of frames for ASGI
``send``. A client that falls behind loses frames, but never silently: the
next frame it gets is a ``gap`` notice with the number of events it missed,
and a client that stays behind is closed with :data:`CLOSE_TOO_SLOW`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from monitor.live.filters import EventFilter
from monitor.live.wire import DirectSocket, text_frame

logger = logging.getLogger(__name__)

SendText = Callable[[str], Awaitable[None]]
# The close code for a client closed for staying behind (see DirectStream).
CLOSE_TOO_SLOW = 4008
# How long such a client has to read what is left before it is cut off.
CLOSE_FLUSH_SECONDS = 30.0
# How often a replay waiting for a client to read checks again.
REPLAY_WAIT_SECONDS = 0.02


class ClientGone(Exception):
    """The client went away (or was closed) while a replay was writing to it."""


class Frame(str):
    """A frame's JSON text, with its WebSocket wire bytes encoded at most once."""

    @property
    def wire(self) -> bytes:
        cached = self.__dict__.get("_wire")
        if cached is None:
            cached = self.__dict__["_wire"] = text_frame(self.encode())
        return cached


def gap_notice(missed: int | None, reason: str = "slow") -> str:
    """The notice of ``missed`` events that will not come (None: how many is unknown)."""
    return json.dumps({"type": "gap", "missed": missed, "reason": reason})


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
        # What this client subscribed to; None: every event.
        self.filter: EventFilter | None = None
        # After a replay, per partition, the first offset still owed (see FanoutHub).
        self.floor: dict[int, int] | None = None
        self._max_buffered = max_buffered_bytes
        self._slow_close = slow_close_seconds
        self.missed = 0
        self.delivered = 0
        self.behind_since: float | None = None

    def offer(self, frame: str, events: int) -> bool:
        """Write a frame of ``events`` events, or count them missed while the client lags.

        Returns True while the client is owed a gap notice.
        """
        socket = self.socket
        if not socket.open:
            return False
        if socket.buffered() > self._max_buffered:
            if self.behind_since is None:
                self.behind_since = time.monotonic()
            self.missed += events
            return True
        if self.missed:
            socket.write(text_frame(gap_notice(self.missed).encode()))
            self.missed = 0
            self.behind_since = None
        socket.write(frame.wire if isinstance(frame, Frame) else text_frame(frame.encode()))
        self.delivered += events
        return False

    def flush_gap(self) -> bool:
        """Tell a client that has caught up what it missed; True once nothing is owed.

        A client behind for too long is closed instead (also True).
        """
        if not self.missed or not self.socket.open:
            return True
        if self.socket.buffered() > self._max_buffered:
            assert self.behind_since is not None
            if time.monotonic() - self.behind_since < self._slow_close:
                return False
            self.close_too_slow()
            return True
        self.socket.write(text_frame(gap_notice(self.missed).encode()))
        self.missed = 0
        self.behind_since = None
        return True

    def send_now(self, text: str) -> None:
        """Write a control frame after everything written so far."""
        if self.socket.open:
            self.socket.write(text_frame(text.encode()))

    async def send_replay(self, frame: str, events: int) -> None:
        """Write a replayed frame once the client has room for it.

        A replay waits for the client instead of dropping what it cannot take;
        a client that reads nothing for ``slow_close_seconds`` is closed as
        too slow and :class:`ClientGone` raised.
        """
        waited_since = time.monotonic()
        while self.socket.open and self.socket.buffered() > self._max_buffered:
            if time.monotonic() - waited_since > self._slow_close:
                self.socket.close_after_writes(
                    CLOSE_TOO_SLOW, "too slow to take the replay", give_up_after=CLOSE_FLUSH_SECONDS
                )
                break
            await asyncio.sleep(REPLAY_WAIT_SECONDS)
        if not self.socket.open:
            raise ClientGone
        self.socket.write(frame.wire if isinstance(frame, Frame) else text_frame(frame.encode()))
        self.delivered += events

    def close_too_slow(self) -> None:
        missed, self.missed = self.missed, 0
        self.socket.write(text_frame(gap_notice(missed).encode()))
        self.socket.close_after_writes(
            CLOSE_TOO_SLOW, f"too slow: {missed} events missed", give_up_after=CLOSE_FLUSH_SECONDS
        )

    def close(self) -> None:
        pass


class ClientStream:
    """One socket's bounded queue of frames and the task that sends them in order."""

    def __init__(self, send: SendText, *, max_frames: int) -> None:
        self._send = send
        # What this client subscribed to; None: every event.
        self.filter: EventFilter | None = None
        # After a replay, per partition, the first offset still owed (see FanoutHub).
        self.floor: dict[int, int] | None = None
        self._max_frames = max_frames
        self._queue: deque[str] = deque()
        self._wake = asyncio.Event()
        self.missed = 0
        self.delivered = 0
        self._task = asyncio.create_task(self._pump())

    def offer(self, frame: str, events: int) -> bool:
        """Queue a frame of ``events`` events, or count them missed if the queue is full.

        Returns True while the client is owed a gap notice.
        """
        needed = 2 if self.missed else 1  # a gap notice goes before the frame
        if len(self._queue) + needed > self._max_frames:
            self.missed += events
            return True
        if self.missed:
            self._queue.append(gap_notice(self.missed))
            self.missed = 0
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
        self._queue.append(gap_notice(self.missed))
        self.missed = 0
        self._wake.set()
        return True

    def send_now(self, text: str) -> None:
        """Queue a control frame after everything queued so far (beyond the bound)."""
        self._queue.append(text)
        self._wake.set()

    async def send_replay(self, frame: str, events: int) -> None:
        """Queue a replayed frame once there is room for it."""
        while len(self._queue) >= self._max_frames:
            if self._task.done():
                raise ClientGone
            await asyncio.sleep(REPLAY_WAIT_SECONDS)
        self.send_now(frame)
        self.delivered += events

    async def _pump(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    await self._send(self._queue.popleft())
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the socket went away; disconnect unregisters it
            logger.debug("client stream stopped", exc_info=True)
            self._queue.clear()

    def close(self) -> None:
        self._task.cancel()
