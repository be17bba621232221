"""One encoded WebSocket frame, written to many sockets.

Server-to-client WebSocket frames are not masked, so the bytes of a batch's
frame are the same for every client: the hub builds them once and writes
them to each connection's transport, skipping the per-message work of
Channels, daphne and autobahn. Under daphne, the ASGI ``send`` callable is
bound to the connection's Twisted protocol, which :func:`direct_socket`
finds. Elsewhere (test communicators, another server) it returns None and the
caller sends through ASGI as usual.

:class:`DirectSocketMiddleware` goes outermost, before any middleware that
wraps ``send`` (Channels' sessions do), and offers the socket to the
consumer in ``scope["extensions"]``.

Frames are written whole, as autobahn writes its own (the welcome, pongs,
pings, the close), so the two never interleave inside a frame. When nothing
is waiting in the transport's buffer, a frame goes straight to the socket
with one ``send``: Twisted's own ``write`` would instead register the socket
for writability, wait for the next reactor turn, send, and unregister it
again, which costs about three system calls and two reactor round trips per
frame and socket, the largest cost of fanning one frame out to a thousand
clients. Whatever ``send`` does not take goes to the transport's buffer, so
Twisted writes the rest, in order, as usual.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import struct
from typing import Any

logger = logging.getLogger(__name__)

OPCODE_TEXT = 0x1
OPCODE_CLOSE = 0x8
FIN = 0x80


def text_frame(payload: bytes, opcode: int = OPCODE_TEXT) -> bytes:
    """A complete, unfragmented, unmasked frame carrying ``payload`` (text by default)."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", FIN | opcode, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", FIN | opcode, 126, length)
    else:
        header = struct.pack("!BBQ", FIN | opcode, 127, length)
    return header + payload


class Frame(str):
    """A frame's JSON text, with its WebSocket wire bytes encoded at most once
    (on first use), however many sockets it is written to."""

    @property
    def wire(self) -> bytes:
        cached: bytes | None = self.__dict__.get("_wire")
        if cached is None:
            cached = self.__dict__["_wire"] = text_frame(self.encode())
        return cached


def wire_bytes(frame: str) -> bytes:
    """The wire bytes of ``frame``: cached for a :class:`Frame`, encoded now otherwise."""
    return frame.wire if isinstance(frame, Frame) else text_frame(frame.encode())


def close_frame(code: int, reason: str) -> bytes:
    """A close frame with ``code`` and ``reason`` (cut to fit the 125-byte limit)."""
    encoded = reason.encode()[:123].decode(errors="ignore").encode()
    return text_frame(struct.pack("!H", code) + encoded, OPCODE_CLOSE)


class DirectSocket:
    """Write access to a daphne WebSocket connection's transport."""

    __slots__ = ("protocol", "transport", "_state_open")

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.transport = protocol.transport
        self._state_open = protocol.STATE_OPEN

    @property
    def open(self) -> bool:
        return self.protocol.state == self._state_open and not self.transport.disconnecting

    def buffered(self) -> int:
        """Bytes written but not yet taken by the kernel: how far behind the client is."""
        transport = self.transport
        pending: int = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        return pending

    def write(self, frame: bytes) -> None:
        transport = self.transport
        if (
            transport._tempDataLen == 0
            and transport.offset == len(transport.dataBuffer)
            and transport.connected
            and not transport.disconnecting
        ):
            try:
                sent = transport.socket.send(frame)
            except OSError as exc:
                # EAGAIN: the kernel's buffer is full, Twisted waits for room.
                # Anything else: Twisted's own write finds the connection lost.
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    logger.debug("direct send failed: %s", exc)
                sent = 0
            if sent == len(frame):
                return
            frame = frame[sent:]
        transport.write(frame)

    def close_after_writes(self, code: int, reason: str, *, give_up_after: float) -> None:
        """Write a close frame after everything written so far, then end the connection
        once all of it has reached the kernel: no reset, so a client that reads again
        gets it all, the close frame last. A client that does not read within
        ``give_up_after`` seconds is cut off."""
        protocol, transport = self.protocol, self.transport
        self.write(close_frame(code, reason))
        # autobahn sends nothing more, and its ping timeout no longer cuts the
        # connection (which would reset it and lose what is still unread).
        protocol.state = protocol.STATE_CLOSING
        for name in ("autoPingPendingCall", "autoPingTimeoutCall"):
            call = getattr(protocol, name, None)
            if call is not None:
                call.cancel()
                setattr(protocol, name, None)
        transport.loseConnection()
        asyncio.get_running_loop().call_later(give_up_after, self._abort)

    def _abort(self) -> None:
        if self.transport.connected:
            self.transport.abortConnection()


def direct_socket(send: Any) -> DirectSocket | None:
    """The DirectSocket behind an ASGI ``send`` from daphne, or None."""
    if not isinstance(send, functools.partial) or not send.args:
        return None
    protocol = send.args[0]
    transport = getattr(protocol, "transport", None)
    needed = (
        "dataBuffer",
        "offset",
        "_tempDataLen",
        "write",
        "socket",
        "connected",
        "disconnecting",
    )
    if not hasattr(protocol, "STATE_OPEN") or not all(hasattr(transport, n) for n in needed):
        return None
    return DirectSocket(protocol)


DIRECT_SOCKET_EXTENSION = "eventsite.direct_socket"


class DirectSocketMiddleware:
    """Offers the connection's DirectSocket, when there is one, in the scope's extensions."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        socket = direct_socket(send)
        if socket is not None:
            # A connection failed by autobahn (a message over daphne's size
            # limit, a protocol error) gets a close frame saying why (1009,
            # 1002...) rather than a bare TCP drop the client sees as 1006.
            socket.protocol.failByDrop = False
            extensions = {**scope.get("extensions", {}), DIRECT_SOCKET_EXTENSION: socket}
            scope = {**scope, "extensions": extensions}
        return await self.inner(scope, receive, send)
