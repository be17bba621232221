"""monitor.live.wire: one WebSocket frame, encoded once, written to many sockets."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from monitor.events.schema import encode_event
from monitor.kafka import clients as kafka
from monitor.live.wire import DirectSocket, text_frame
from tests.support.events import photo_event
from tests.support.stack import Processes
from tests.support.streams import slow_reader


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_it_encodes_unmasked_text_frames_of_every_length_class(size: int) -> None:
    payload = b"x" * size
    frame = text_frame(payload)
    assert frame[0] == 0x81  # FIN, text
    assert frame[1] & 0x80 == 0  # server frames are not masked
    length = frame[1] & 0x7F
    if size < 126:
        assert length == size and frame[2:] == payload
    elif size < 65536:
        assert length == 126 and int.from_bytes(frame[2:4], "big") == size
        assert frame[4:] == payload
    else:
        assert length == 127 and int.from_bytes(frame[2:10], "big") == size
        assert frame[10:] == payload


class FakeTransport:
    """The parts of a Twisted TCP transport DirectSocket uses, on a real socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self.connected = True
        self.disconnecting = False
        self.dataBuffer = b""
        self.offset = 0
        self._tempDataLen = 0
        self.queued: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.queued.append(data)
        self._tempDataLen += len(data)


class FakeProtocol:
    STATE_OPEN = 1
    state = 1

    def __init__(self, transport: FakeTransport) -> None:
        self.transport = transport


def test_it_sends_straight_to_the_socket_and_queues_the_rest_in_order() -> None:
    server, client = socket.socketpair()
    server.setblocking(False)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
    transport = FakeTransport(server)
    direct = DirectSocket(FakeProtocol(transport))
    frames = [text_frame(b"%05d" % n + b"x" * 1000) for n in range(500)]
    try:
        direct.write(frames[0])
        assert transport.queued == []  # the kernel took it whole: no reactor round trip
        for frame in frames[1:]:
            direct.write(frame)
        # The kernel's buffer filled: the rest waits in the transport's buffer,
        # and once anything waits there, nothing more jumps ahead of it.
        assert transport.queued and direct.buffered() == sum(map(len, transport.queued))
        sent_directly = b"".join(frames)[: -direct.buffered()]
        client.settimeout(5)
        received = b""
        while len(received) < len(sent_directly):
            received += client.recv(1 << 20)
        assert received == sent_directly
        assert b"".join(transport.queued) == b"".join(frames)[len(sent_directly) :]
    finally:
        server.close()
        client.close()


def big_event(n: int) -> bytes:
    return encode_event(photo_event(n, author_id=1, caption="c" * 8_000))


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_client_that_stops_reading_gets_a_gap_notice_and_exact_counts(
    own_broker, processes: Processes
) -> None:
    processes.env["FANOUT_CLIENT_MAX_BUFFER_BYTES"] = "65536"
    processes.start("web")
    total = 3000  # about 24 MB of frames: more than the kernel buffers hold

    async def scenario() -> tuple[int, int, list[dict]]:
        async with slow_reader(processes, "slowpoke") as slow:
            producer = kafka.make_producer(max_request_size=2**20)
            await producer.start()
            try:
                for n in range(total):
                    await producer.send(settings_topic(), big_event(n), key=b"1")
                await producer.flush()
            finally:
                await producer.stop()
            await asyncio.sleep(2)  # the server keeps writing while we do not read
            received, missed, gaps = 0, 0, []
            async with asyncio.timeout(60):
                while received + missed < total:
                    frame = json.loads(await slow.recv())
                    if frame["type"] == "events":
                        received += len(frame["events"])
                    elif frame["type"] == "gap":
                        missed += frame["missed"]
                        gaps.append(frame)
            return received, missed, gaps

    received, missed, gaps = asyncio.run(scenario())
    assert gaps, f"a client that fell behind was not told ({received} received)"
    assert {gap["reason"] for gap in gaps} == {"slow"}
    assert missed > 0 and received > 0
    assert received + missed == total
    health = httpx.get(processes.base_url + "/healthz", timeout=10)
    assert health.status_code == 200


def settings_topic() -> str:
    from django.conf import settings

    return settings.KAFKA_EVENTS_TOPIC


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_client_behind_for_too_long_is_told_what_it_missed_then_closed_with_4008(
    own_broker, processes: Processes
) -> None:
    processes.env["FANOUT_CLIENT_MAX_BUFFER_BYTES"] = "65536"
    processes.env["FANOUT_SLOW_CLOSE_SECONDS"] = "1"
    processes.start("web")

    async def scenario() -> tuple[list[int], list[int], int | None, str]:
        async with slow_reader(processes, "tortoise") as slow:
            producer = kafka.make_producer(max_request_size=2**20)
            await producer.start()
            try:
                # Enough to fill the buffers, then a steady stream for three
                # seconds while the client reads nothing.
                for n in range(1500):
                    await producer.send(settings_topic(), big_event(n), key=b"1")
                for n in range(1500, 1530):
                    await producer.send(settings_topic(), big_event(n), key=b"1")
                    await asyncio.sleep(0.1)
                await producer.flush()
            finally:
                await producer.stop()
            offsets: list[int] = []
            gaps: list[int] = []
            async with asyncio.timeout(60):
                try:
                    while True:
                        frame = json.loads(await slow.recv())
                        if frame["type"] == "events":
                            offsets += [item["offset"] for item in frame["events"]]
                        elif frame["type"] == "gap":
                            gaps.append(frame["missed"])
                except ConnectionClosed:
                    pass
            assert slow.close_code is not None
            return offsets, gaps, slow.close_code, slow.close_reason or ""

    offsets, gaps, code, reason = asyncio.run(scenario())
    assert code == 4008, f"closed with {code} {reason!r}"
    assert gaps and reason == f"too slow: {gaps[-1]} events missed"
    assert offsets == sorted(set(offsets))  # in order, none twice
    first = offsets[0]  # after the sign-up's event, on the same partition
    assert first <= 1
    # Everything up to the close was delivered or announced: the events the
    # gap notices counted are those between the delivered ones, and after the
    # last delivered one, the last notice's count.
    assert len(offsets) + sum(gaps) == offsets[-1] - first + 1 + gaps[-1]
    assert offsets[-1] - first + 1 + gaps[-1] <= 1530
    health = httpx.get(processes.base_url + "/healthz", timeout=10)
    assert health.status_code == 200
