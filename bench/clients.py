"""Many WebSocket clients of /ws/events/ in one process, cheap enough not to be the bottleneck.

Each client is a minimal RFC 6455 client on an asyncio protocol (the
``websockets`` library costs about 1.5x the CPU per frame, and on two cores
every microsecond the clients spend is taken from the server). It speaks
what the stream needs: the upgrade handshake with a session cookie and an
Origin, unmasked server frames (fragmented or not), ping/pong, and close.

Every events frame is checked, not just counted: per partition the offsets
a client sees must strictly increase (no duplicate, no reordering), and at
the end of each scenario every client's count must equal the events it is
owed, apart from events a ``gap`` frame told it about. All clients receive
the same frames (the hub encodes each batch once), so a frame's digest
(its events, positions and event times) is parsed once and shared.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

import psutil

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006


class ClientFailure(AssertionError):
    """A client saw something the protocol does not allow, or missed what it was owed."""


@dataclass(slots=True)
class FrameDigest:
    """What one server frame says, parsed once for every client that receives it."""

    kind: str
    count: int = 0
    # (partition, first offset, last offset) for each partition in the frame
    runs: list[tuple[int, int, int]] = field(default_factory=list)
    # Each event's envelope ``time``, as epoch seconds.
    times: list[float] = field(default_factory=list)
    missed: int = 0
    message: dict | None = None
    error: str | None = None
    # When the first and the last measured client read this frame.
    first_seen: float = 0.0
    last_seen: float = 0.0


def epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def digest_frame(payload: bytes) -> FrameDigest:
    message = json.loads(payload)
    kind = message.get("type")
    if kind == "events":
        items = message["events"]
        last: dict[int, tuple[int, int]] = {}
        error = None
        for item in items:
            partition, offset = item["partition"], item["offset"]
            first, previous = last.get(partition, (offset, offset - 1))
            if offset <= previous:
                error = f"offsets not increasing in a frame: p{partition} {previous} then {offset}"
            last[partition] = (first, offset)
        return FrameDigest(
            "events",
            count=len(items),
            runs=[(p, first, final) for p, (first, final) in last.items()],
            times=[epoch(item["event"]["time"]) for item in items],
            error=error,
        )
    if kind == "gap":
        return FrameDigest("gap", missed=int(message["missed"]))
    return FrameDigest(str(kind), message=message)


class DigestCache:
    """Recently seen frames and their digests; bounded, oldest dropped first.

    A frame is known by its length, its first 256 bytes and its last 64: the
    head holds the first event's partition and offset, which no other frame
    of the same web process has. So a 100 KB frame costs each client a few
    small slices, not a hash and a comparison of the whole frame. Each web
    process batches events its own way, so its clients get a cache of their
    own (see :meth:`ClientPool.connect`).
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._entries: OrderedDict[bytes, FrameDigest] = OrderedDict()
        self.parsed = 0
        # Frames first seen while tracing is on, for the latency breakdown.
        self.traced: list[FrameDigest] | None = None

    def get(self, data: bytes | bytearray, start: int, end: int, now: float) -> FrameDigest:
        head, tail = data[start : start + 256], data[max(start, end - 64) : end]
        key = b":".join((b"%d" % (end - start), head, tail))
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = digest_frame(bytes(data[start:end]))
            entry.first_seen = now
            self.parsed += 1
            if self.traced is not None and entry.kind == "events":
                self.traced.append(entry)
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return entry


class LatencyHistogram:
    """Latencies in 0.1 ms buckets up to 60 s; percentiles without keeping samples."""

    RESOLUTION = 10_000  # buckets per second
    LIMIT = 60 * RESOLUTION

    def __init__(self) -> None:
        self.buckets = [0] * (self.LIMIT + 1)
        self.count = 0

    def add_many(self, now: float, times: Iterable[float]) -> None:
        buckets, resolution, limit = self.buckets, self.RESOLUTION, self.LIMIT
        n = 0
        for moment in times:
            index = int((now - moment) * resolution)
            buckets[0 if index < 0 else limit if index > limit else index] += 1
            n += 1
        self.count += n

    @classmethod
    def merged(cls, *histograms: LatencyHistogram) -> LatencyHistogram:
        total = cls()
        for histogram in histograms:
            total.buckets = [a + b for a, b in zip(total.buckets, histogram.buckets, strict=True)]
            total.count += histogram.count
        return total

    def percentile(self, fraction: float) -> float:
        """The latency in milliseconds below which ``fraction`` of samples fall."""
        if not self.count:
            return float("nan")
        wanted = fraction * self.count
        seen = 0
        for index, count in enumerate(self.buckets):
            seen += count
            if seen >= wanted:
                return (index + 0.5) * 1000 / self.RESOLUTION
        return self.LIMIT * 1000 / self.RESOLUTION


def _mask(payload: bytes) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    stream = (key * (n // 4 + 1))[:n]
    masked = int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")
    return key + masked.to_bytes(n, "little")


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked, unfragmented frame from client to server."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return header + _mask(payload)


class StreamClient(asyncio.Protocol):
    """One /ws/events/ connection and what it received."""

    def __init__(self, pool: ClientPool, key: int) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.cache = pool.cache
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._fragment_opcode = OP_TEXT
        self._handshake_key = base64.b64encode(os.urandom(16))
        self._open = False
        loop = asyncio.get_running_loop()
        self.welcome: asyncio.Future[dict] = loop.create_future()
        self.closed: asyncio.Future[int] = loop.create_future()
        self.received = 0
        self.frames = 0
        self.missed = 0
        self.gap_frames = 0
        self.last_offsets: dict[int, int] = {}
        self.problems: list[str] = []
        self.other_frames: list[dict] = []
        self.record_latency = True
        self.paused = False
        self.closed_at = 0.0
        self.resumed_at = 0.0
        self.received_at_resume = 0

    # --- asyncio.Protocol -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no asyncio.Transport subclass; they have its methods.
        self.transport = cast(asyncio.Transport, transport)
        pool = self.pool
        request = (
            f"GET {pool.path} HTTP/1.1\r\n"
            f"Host: {pool.host}:{pool.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self._handshake_key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            f"Origin: {pool.origin}\r\n"
            f"Cookie: sessionid={pool.session_id}\r\n\r\n"
        )
        self.transport.write(request.encode())

    def data_received(self, data: bytes) -> None:
        # Whole frames are read straight from ``data``; only a partial frame
        # left at the end is copied into the buffer for the next read.
        buffer = self._buffer
        if buffer or not self._open:
            buffer += data
            if not self._open and not self._handshake():
                return
            view: bytes | bytearray = buffer
        else:
            view = data
        now = 0.0
        pos, size = 0, len(view)
        while size - pos >= 2:
            first, second = view[pos], view[pos + 1]
            if second & 0x80:
                self._fail("the server sent a masked frame")
                return
            length = second & 0x7F
            header = 2
            if length == 126:
                if size - pos < 4:
                    break
                length, header = int.from_bytes(view[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, header = int.from_bytes(view[pos + 2 : pos + 10], "big"), 10
            start, end = pos + header, pos + header + length
            if end > size:
                break
            pos = end
            opcode = first & 0x0F
            if opcode == OP_TEXT and first & 0x80:
                if not now:
                    now = time.time()
                self._on_message(view, start, end, now)
                continue
            payload = bytes(view[start:end])
            if not first & 0x80:  # a fragment; the message continues
                if opcode != OP_CONTINUATION:
                    self._fragment_opcode = opcode
                self._fragments.append(payload)
                continue
            if opcode == OP_CONTINUATION:
                self._fragments.append(payload)
                payload, opcode = b"".join(self._fragments), self._fragment_opcode
                self._fragments = []
            if opcode == OP_TEXT:
                self._on_message(payload, 0, len(payload), now or time.time())
            elif opcode == OP_PING:
                self.transport.write(client_frame(OP_PONG, payload))  # type: ignore[union-attr]
            elif opcode == OP_CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else CLOSE_NO_STATUS
                self._on_close(code, answer=True)
                return
            elif opcode == OP_BINARY:
                self.problems.append("the server sent a binary frame")
        if view is buffer:
            del buffer[:pos]
        elif pos < size:
            buffer += memoryview(data)[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_close(CLOSE_ABNORMAL, answer=False)

    # --- protocol details -------------------------------------------------
    def _handshake(self) -> bool:
        """Consume the HTTP response; True once the socket is a WebSocket."""
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self._buffer[:end]).decode("latin-1")
        del self._buffer[: end + 4]
        status_line, *header_lines = head.split("\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in header_lines)
        }
        expected = base64.b64encode(hashlib.sha1(self._handshake_key + WS_GUID).digest()).decode()
        if status_line.split(" ")[1:2] != ["101"]:
            self._fail(f"handshake refused: {status_line}")
            return False
        if headers.get("sec-websocket-accept") != expected:
            self._fail("handshake: wrong Sec-WebSocket-Accept")
            return False
        self._open = True
        return True

    def _on_message(self, data: bytes | bytearray, start: int, end: int, now: float) -> None:
        digest = self.cache.get(data, start, end, now)
        self.frames += 1
        if digest.kind == "events":
            last_offsets = self.last_offsets
            for partition, first, last in digest.runs:
                previous = last_offsets.get(partition, -1)
                if first <= previous:
                    self.problems.append(
                        f"p{partition}: offset {first} after {previous} (duplicate or reordered)"
                    )
                last_offsets[partition] = last
            if digest.error:
                self.problems.append(digest.error)
            self.received += digest.count
            histogram = self.pool.histogram
            if histogram is not None and self.record_latency:
                histogram.add_many(now, digest.times)
                digest.last_seen = now
        elif digest.kind == "gap":
            self.missed += digest.missed
            self.gap_frames += 1
        elif digest.kind == "welcome":
            if not self.welcome.done():
                self.welcome.set_result(digest.message or {})
        else:
            self.other_frames.append(digest.message or {})
            if digest.kind == "error":
                self.problems.append(f"error frame: {digest.message}")

    def _on_close(self, code: int, *, answer: bool) -> None:
        if answer and self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(OP_CLOSE, code.to_bytes(2, "big")))
            self.transport.close()
        if not self.closed.done():
            self.closed.set_result(code)
            self.closed_at = time.monotonic()
        if not self.welcome.done():
            self.welcome.set_exception(
                ConnectionError(f"closed with code {code} before the welcome")
            )

    def _fail(self, reason: str) -> None:
        self.problems.append(reason)
        if not self.welcome.done():
            self.welcome.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()

    # --- what a scenario does with a client --------------------------------
    def pause(self) -> None:
        """Stop reading: the kernel buffers fill, then the server must cope."""
        assert self.transport is not None
        self.transport.pause_reading()
        self.paused = True

    def resume(self) -> None:
        assert self.transport is not None
        self.received_at_resume = self.received
        self.resumed_at = time.monotonic()
        self.transport.resume_reading()
        self.paused = False

    async def close(self, timeout: float = 5.0) -> None:
        if self.transport is None:
            return
        if not self.closed.done() and not self.transport.is_closing():
            self.transport.write(client_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
            try:
                await asyncio.wait_for(asyncio.shield(self.closed), timeout)
            except TimeoutError:
                pass
        self.transport.close()


class ClientPool:
    """N clients of one server, all on one session cookie."""

    def __init__(self, *, host: str, port: int, session_id: str, origin: str) -> None:
        self.host = host
        self.port = port
        self.path = "/ws/events/"
        self.session_id = session_id
        self.origin = origin
        self.cache = DigestCache()
        self.caches = [self.cache]
        self.histogram: LatencyHistogram | None = None
        self.clients: list[StreamClient] = []

    async def connect(self, count: int, *, concurrency: int = 50, timeout: float = 120.0) -> None:
        """Open ``count`` more connections; return once each got its welcome frame."""
        loop = asyncio.get_running_loop()
        limit = asyncio.Semaphore(concurrency)

        async def one(key: int) -> None:
            async with limit:
                _, client = await loop.create_connection(
                    lambda: StreamClient(self, key), self.host, self.port
                )
                self.clients.append(client)  # so that close() finds it, welcomed or not
                await asyncio.wait_for(client.welcome, 30)

        start = len(self.clients)
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(one(start + i) for i in range(count)))
        self._cache_per_server_process()

    def _cache_per_server_process(self) -> None:
        """Give the clients of each web process their own DigestCache.

        Two web processes batch the same events differently, and two of their
        frames can agree in length, head and tail while differing inside.
        The kernel's table of connections says which process holds the
        server end of each client's connection.
        """
        owners = {
            conn.raddr.port: conn.pid
            for conn in psutil.net_connections(kind="tcp")
            if conn.laddr and conn.laddr.port == self.port and conn.raddr
        }
        caches: dict[int | None, DigestCache] = {}
        for client in self.clients:
            assert client.transport is not None
            owner = owners.get(client.transport.get_extra_info("sockname")[1])
            client.cache = caches.setdefault(owner, DigestCache())
        self.caches = list(caches.values())

    def start_latency(self) -> LatencyHistogram:
        """Record each event's latency at each client (those with ``record_latency``)."""
        self.histogram = LatencyHistogram()
        for cache in self.caches:
            cache.traced = []
        return self.histogram

    def stop_latency(self) -> Breakdown:
        """Stop recording; what the frames recorded say about where the time went."""
        self.histogram = None
        frames: list[FrameDigest] = []
        for cache in self.caches:
            frames += cache.traced or []
            cache.traced = None
        return Breakdown.of(frames)

    def total_received(self) -> int:
        return sum(client.received for client in self.clients)

    def min_received(self) -> int:
        return min(client.received for client in self.clients if not client.paused)

    async def wait_received(
        self, owed: int, timeout: float, clients: list[StreamClient] | None = None
    ) -> None:
        """Wait until every client has received (or been told it missed) ``owed`` events."""
        watched = list(clients if clients is not None else self.clients)
        deadline = time.monotonic() + timeout
        while True:
            behind = [c for c in watched if c.received + c.missed < owed and not c.closed.done()]
            if not behind:
                return
            if time.monotonic() > deadline:
                worst = min(behind, key=lambda c: c.received + c.missed)
                raise ClientFailure(
                    f"{len(behind)} of {len(watched)} clients still short after {timeout:.0f}s:"
                    f" worst has {worst.received} events + {worst.missed} missed of {owed}"
                )
            await asyncio.sleep(0.02)

    def check_counts(
        self, owed: int, clients: list[StreamClient] | None = None, *, allow_gaps: bool = False
    ) -> None:
        """Fail loudly unless every client got exactly the ``owed`` events, in order."""
        watched = list(clients if clients is not None else self.clients)
        failures = []
        for client in watched:
            if client.problems:
                failures.append(f"client {client.key}: {client.problems[:3]}")
            if client.closed.done():
                failures.append(f"client {client.key}: closed with code {client.closed.result()}")
            accounted = client.received + (client.missed if allow_gaps else 0)
            if accounted != owed or (client.missed and not allow_gaps):
                failures.append(
                    f"client {client.key}: {client.received} events, {client.missed} missed"
                    f" (gap frames: {client.gap_frames}), owed {owed}"
                )
        if failures:
            raise ClientFailure(
                f"{len(failures)} problems among {len(watched)} clients: " + "; ".join(failures[:5])
            )

    async def close(self) -> None:
        await asyncio.gather(*(client.close() for client in self.clients), return_exceptions=True)
        self.clients = []


@dataclass
class Breakdown:
    """Where latency went: to the first client that read a frame (Kafka, the live
    reader, the hub's tick, the first writes), then the spread until the last
    measured client read it (writing to every socket and every client reading)."""

    frames: int
    events_per_frame: float
    first_client: LatencyHistogram
    spread_p50_ms: float
    spread_p99_ms: float

    @classmethod
    def of(cls, frames: list[FrameDigest]) -> Breakdown:
        first = LatencyHistogram()
        spreads = sorted(frame.last_seen - frame.first_seen for frame in frames if frame.last_seen)
        for frame in frames:
            first.add_many(frame.first_seen, frame.times)
        spreads = spreads or [float("nan")]
        return cls(
            frames=len(frames),
            events_per_frame=first.count / max(len(frames), 1),
            first_client=first,
            spread_p50_ms=spreads[len(spreads) // 2] * 1000,
            spread_p99_ms=spreads[int(0.99 * (len(spreads) - 1))] * 1000,
        )


class LoopLag:
    """How late this process's event loop runs timers: a busy client loop shows here."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.samples = []
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval)
            self.samples.append(loop.time() - before - self.interval)

    def stop(self) -> dict[str, float]:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        samples = sorted(self.samples) or [0.0]
        return {
            "p99_ms": samples[int(0.99 * (len(samples) - 1))] * 1000,
            "max_ms": samples[-1] * 1000,
        }
