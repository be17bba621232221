"""monitor.live.delivery under daphne: a client that stops reading altogether.

Real clients (the ``websockets`` library with reading paused, on a socket
with a small receive buffer) against a real daphne: whether it fell behind
(the kernel's buffers full, events missed) or only stopped answering pings,
once it reads again it gets its gap notice and then close code 4008, never a
bare drop (1006), even past the time the server used to give it.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from django.conf import settings as django_settings
from websockets.exceptions import ConnectionClosed

from monitor.events.schema import encode_event
from monitor.kafka import clients as kafka
from tests.support.events import photo_event
from tests.support.stack import Processes
from tests.support.streams import slow_reader

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


async def produce_for(seconds: float, per_second: float, caption_bytes: int) -> int:
    """Photo events at a steady rate for ``seconds``; returns how many."""
    producer = kafka.make_producer(max_request_size=2**20)
    await producer.start()
    sent = 0
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            event = photo_event(sent, author_id=1, caption="c" * caption_bytes)
            await producer.send(django_settings.KAFKA_EVENTS_TOPIC, encode_event(event), key=b"1")
            sent += 1
            await asyncio.sleep(max(0.0, started + sent / per_second - time.monotonic()))
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def never_reading(processes: Processes, username: str, **load: Any) -> dict[str, Any]:
    """Connect, take the welcome, read nothing while events flow, then read all.

    Returns what was read: events, gap notices, the close code and reason."""

    async def scenario() -> dict[str, Any]:
        # Its own pings would time out while it does not read.
        async with slow_reader(processes, username, ping_interval=None) as client:
            produced = await produce_for(**load)
            received, gaps = 0, []
            try:
                async with asyncio.timeout(60):
                    while True:
                        frame = json.loads(await client.recv())
                        if frame["type"] == "events":
                            received += len(frame["events"])
                        elif frame["type"] == "gap":
                            gaps.append(frame)
            except ConnectionClosed:
                pass
            return {
                "produced": produced,
                "received": received,
                "gaps": gaps,
                "code": client.close_code,
                "reason": client.close_reason,
            }

    return asyncio.run(scenario())


def test_a_client_that_falls_behind_and_reads_again_after_35_s_gets_its_gap_and_4008(
    own_broker: Any, processes: Processes
) -> None:
    processes.env["FANOUT_CLIENT_MAX_BUFFER_BYTES"] = "65536"
    processes.env["FANOUT_SLOW_CLOSE_SECONDS"] = "1"
    processes.start("web")

    # 8 KB events at 200 a second fill the buffers within a second; the client
    # reads again 35 s later, past the 30 s after which it used to be cut off.
    read = never_reading(processes, "never-reads", seconds=35, per_second=200, caption_bytes=8_000)

    assert read["code"] == 4008, read
    assert [gap["reason"] for gap in read["gaps"]] == ["slow"]
    missed = read["gaps"][0]["missed"]
    assert missed > 0 and read["reason"] == f"too slow: {missed} events missed"
    # Closed long before the end: what came after the close is not counted.
    assert read["received"] + missed < read["produced"]


def test_a_client_that_answers_no_ping_is_closed_with_4008_not_dropped(
    own_broker: Any, processes: Processes, settings: Any
) -> None:
    settings.WS_PING_SECONDS = 1  # passed to daphne by processes.start
    settings.WS_PING_TIMEOUT_SECONDS = 2
    processes.start("web")

    # Small events, few: the client never falls behind; it only answers no ping.
    read = never_reading(processes, "no-pong", seconds=8, per_second=20, caption_bytes=100)

    assert read["code"] == 4008, read
    assert read["gaps"] == [{"type": "gap", "missed": 0, "reason": "slow"}]
    assert read["reason"] == "too slow: 0 events missed (answered no ping)"
    assert 0 < read["received"] < read["produced"]
