"""The embedded broker's front door: the address clients use, in front of the broker.

:class:`BrokerFront` listens where clients connect (the broker advertises
that address in its metadata, so every connection comes through here) and
copies each connection's bytes to the broker and back, one upstream
connection per client connection. It reads only the framing: each Kafka
request is a 4-byte length and a body that starts with its API key and
correlation id, and each response starts with the correlation id it answers.

That is enough to **hold writes** (:meth:`BrokerFront.hold_writes`): while
held, a connection's first Produce request, and everything the client sends
after it on that connection (the broker answers in order), waits here
instead of reaching the broker, and :meth:`BrokerFront.writes_settled` says
when every Produce already forwarded has been answered. The broker then
takes no new record, so what it holds can be compared with what the
consumer groups committed without a race. :meth:`BrokerFront.drop_all`
closes every connection, and what was held with it: those requests never
reached the broker, so no client was told they were written, and clients
send them again on a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import deque
from collections.abc import AsyncIterator

logger = logging.getLogger(__name__)

PRODUCE = 0  # the API key of a Produce request
MAX_FRAME_BYTES = 512 * 1024 * 1024
_HEADER = struct.Struct(">hhi")  # api key, api version, correlation id
_LENGTH = struct.Struct(">i")


class FrameError(Exception):
    """Bytes that are not Kafka framing."""


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """One length-prefixed frame, length included; raises IncompleteReadError at the end."""
    head = await reader.readexactly(4)
    (length,) = _LENGTH.unpack(head)
    if not 0 <= length <= MAX_FRAME_BYTES:
        raise FrameError(f"frame of {length} bytes")
    return head + await reader.readexactly(length)


class _Connection:
    """One client connection and its upstream connection to the broker."""

    def __init__(self, front: BrokerFront, client: asyncio.StreamWriter) -> None:
        self.front = front
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        # Correlation ids of forwarded requests not yet answered, and which were Produce.
        self.unanswered: deque[tuple[int, bool]] = deque()
        self.tasks: list[asyncio.Task[None]] = []

    @property
    def produce_unanswered(self) -> bool:
        return any(produce for _, produce in self.unanswered)

    async def run(self, client_reader: asyncio.StreamReader) -> None:
        front = self.front
        try:
            up_reader, self.upstream = await asyncio.open_connection(
                front.broker_host, front.broker_port
            )
        except OSError as exc:
            logger.debug("front: broker not reachable: %r", exc)
            self.close()
            return
        self.tasks = [
            asyncio.create_task(self._requests(client_reader)),
            asyncio.create_task(self._responses(up_reader)),
        ]
        try:
            await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.close()

    async def _requests(self, reader: asyncio.StreamReader) -> None:
        assert self.upstream is not None
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, FrameError):
            while True:
                frame = await read_frame(reader)
                if len(frame) < 4 + _HEADER.size:
                    raise FrameError("request too short")
                api_key, _, correlation = _HEADER.unpack_from(frame, 4)
                if api_key == PRODUCE:
                    await self.front._writes_open.wait()
                self.unanswered.append((correlation, api_key == PRODUCE))
                self.upstream.write(frame)
                await self.upstream.drain()

    async def _responses(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, FrameError):
            while True:
                frame = await read_frame(reader)
                (correlation,) = _LENGTH.unpack_from(frame, 4)
                # Answers come in request order; requests that get none (a Produce
                # with acks=0) are passed over by the next answer.
                while self.unanswered:
                    answered, _ = self.unanswered.popleft()
                    if answered == correlation:
                        break
                if not self.front._writes_open.is_set() and self.front._all_settled():
                    self.front._settled.set()
                self.client.write(frame)
                await self.client.drain()

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.close()
        self.unanswered.clear()
        self.front._connections.discard(self)
        if self.front._all_settled():
            self.front._settled.set()


class BrokerFront:
    """Clients' address (``host:port``) in front of a broker at ``broker_host:broker_port``."""

    def __init__(self, host: str, port: int, broker_host: str, broker_port: int) -> None:
        self.host, self.port = host, port
        self.broker_host, self.broker_port = broker_host, broker_port
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._writes_open = asyncio.Event()
        self._writes_open.set()
        self._settled = asyncio.Event()
        self._settled.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, reuse_address=True
        )

    async def stop(self) -> None:
        """Stop listening and close every connection; returns once all are closed."""
        if self._server is not None:
            self._server.close()
        self.drop_all()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5.0)
        if self._server is not None:
            await self._server.wait_closed()

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(self, writer)
        self._connections.add(connection)
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            await connection.run(reader)
        finally:
            self._handlers.discard(handler)

    def _all_settled(self) -> bool:
        return not any(connection.produce_unanswered for connection in self._connections)

    @contextlib.asynccontextmanager
    async def hold_writes(self) -> AsyncIterator[None]:
        """While inside, no Produce request reaches the broker (see the module's text)."""
        self._writes_open.clear()
        try:
            yield
        finally:
            self._writes_open.set()

    async def writes_settled(self, timeout: float) -> bool:
        """Whether, within ``timeout`` seconds, every Produce request forwarded to the
        broker was answered (call it while writes are held)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._all_settled():
            self._settled.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), min(remaining, 0.05))
        return True

    def drop_all(self) -> None:
        """Close every connection, with what it held (clients connect again)."""
        for connection in list(self._connections):
            connection.close()
