"""monitor.live.hub at the unit level: the hub, client queues and frame encoding.

Clients are added to ``hub.clients`` directly: ``register`` starts a real
Kafka reader, which tests/live/test_event_socket.py exercises.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from monitor.events.schema import build_event, encode_event
from monitor.live import hub as fanout
from monitor.live.delivery import ClientStream
from monitor.live.filters import EventFilter
from monitor.live.hub import FanoutHub
from monitor.live.protocol import encode_item

TOPIC = "user-events"


@pytest.fixture(autouse=True)
def _short_tick(settings: Any) -> None:
    settings.FANOUT_TICK_MS = 5


def event_bytes(post_id: int, caption: str = "A caption") -> bytes:
    return encode_event(
        build_event(
            type="photo.posted",
            subject=f"posts/{post_id}",
            actor="1",
            data={
                "post_id": post_id,
                "author_id": 1,
                "author": "alice",
                "caption": caption,
                "photo_url": f"/media/photos/{post_id}.jpg",
            },
            source="/test",
            time=datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
        )
    )


def items(offsets: range) -> list[str]:
    return [encode_item(TOPIC, 0, offset, event_bytes(offset)) for offset in offsets]


def events_frame(batch: list[str]) -> dict[str, Any]:
    return {"type": "events", "events": [json.loads(item) for item in batch]}


def decoded(frame: str) -> dict[str, Any]:
    """A frame's JSON, without the time an events frame was cut (checked to be now)."""
    content = json.loads(frame)
    if content["type"] == "events":
        sent = content.pop("sent")
        assert abs(sent - time.time() * 1000) < 60_000
    return content


class Recorder:
    """A send coroutine that keeps every frame it was given."""

    def __init__(self) -> None:
        self.frames: list[str] = []

    async def __call__(self, frame: str) -> None:
        self.frames.append(frame)


class BlockingRecorder(Recorder):
    """A send that does not return until ``release`` is set (a stalled socket)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def __call__(self, frame: str) -> None:
        self.frames.append(frame)
        await self.release.wait()


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.001)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=10))


def test_it_delivers_a_batch_as_one_frame_per_client_in_order() -> None:
    async def scenario() -> None:
        hub = FanoutHub()
        recorders = [Recorder() for _ in range(3)]
        streams = [ClientStream(recorder, max_frames=8) for recorder in recorders]
        hub.clients.update(streams)
        batch = items(range(5))

        # Two reads within one tick make one batch.
        hub.publish(batch[:2])
        hub.publish(batch[2:])
        await until(lambda: all(recorder.frames for recorder in recorders))
        await asyncio.sleep(0.05)  # nothing more is coming

        for recorder in recorders:
            assert len(recorder.frames) == 1
            assert decoded(recorder.frames[0]) == events_frame(batch)
        assert [stream.delivered for stream in streams] == [5, 5, 5]
        for stream in streams:
            stream.close()

    run(scenario)


def test_it_encodes_a_batch_once_for_all_clients() -> None:
    async def scenario() -> None:
        hub = FanoutHub()
        recorders = [Recorder() for _ in range(4)]
        streams = [ClientStream(recorder, max_frames=8) for recorder in recorders]
        hub.clients.update(streams)

        hub.publish(items(range(3)))
        await until(lambda: all(recorder.frames for recorder in recorders))

        first = recorders[0].frames[0]
        assert all(recorder.frames[0] is first for recorder in recorders)
        for stream in streams:
            stream.close()

    run(scenario)


def test_it_encodes_a_batch_once_per_filter_and_sends_a_client_only_what_it_asked_for() -> None:
    async def scenario() -> None:
        hub = FanoutHub()
        recorders = [Recorder() for _ in range(5)]
        streams = [ClientStream(recorder, max_frames=8) for recorder in recorders]
        posts_only = EventFilter.from_message({"types": ["photo.posted"]})
        sign_ups_only = EventFilter.from_message({"types": ["user.signed_up"]})
        streams[1].filter = streams[2].filter = posts_only
        streams[3].filter = sign_ups_only
        hub.clients.update(streams)
        batch = items(range(3))  # three photo.posted events

        hub.publish(batch)
        await until(lambda: all(recorder.frames for recorder in recorders[:3]))
        await asyncio.sleep(0.05)

        assert recorders[1].frames[0] is recorders[2].frames[0]  # encoded once for both
        assert decoded(recorders[1].frames[0]) == events_frame(batch)
        assert decoded(recorders[0].frames[0]) == events_frame(batch)
        assert recorders[3].frames == []  # nothing it asked for: no empty frame either
        assert recorders[4].frames[0] is recorders[0].frames[0]
        for stream in streams:
            stream.close()

    run(scenario)


def test_it_sends_each_tick_its_own_frame_without_repeating_events() -> None:
    async def scenario() -> None:
        hub = FanoutHub()
        recorder = Recorder()
        stream = ClientStream(recorder, max_frames=8)
        hub.clients.add(stream)
        first, second = items(range(0, 2)), items(range(2, 5))

        hub.publish(first)
        await until(lambda: len(recorder.frames) == 1)
        hub.publish(second)
        await until(lambda: len(recorder.frames) == 2)

        assert [decoded(frame) for frame in recorder.frames] == [
            events_frame(first),
            events_frame(second),
        ]
        stream.close()

    run(scenario)


def test_it_sends_at_once_after_a_quiet_tick_then_one_frame_per_tick(settings: Any) -> None:
    settings.FANOUT_TICK_MS = 200

    async def scenario() -> None:
        hub = FanoutHub()
        recorder = Recorder()
        stream = ClientStream(recorder, max_frames=8)
        hub.clients.add(stream)

        started = time.monotonic()
        hub.publish(items(range(1)))
        await until(lambda: len(recorder.frames) == 1)
        assert time.monotonic() - started < 0.1  # nothing to wait for

        second, third = items(range(1, 3)), items(range(3, 4))
        hub.publish(second)
        hub.publish(third)
        await asyncio.sleep(0.05)
        assert len(recorder.frames) == 1  # within the tick of the first frame
        await until(lambda: len(recorder.frames) == 2)
        assert time.monotonic() - started >= 0.19
        assert decoded(recorder.frames[1]) == events_frame(second + third)
        stream.close()

    run(scenario)


def test_a_frame_to_many_clients_goes_out_in_slices_and_frames_stay_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fanout, "WRITE_SLICE", 2)

    async def scenario() -> None:
        hub = FanoutHub()
        recorders = [Recorder() for _ in range(5)]
        streams = [ClientStream(recorder, max_frames=8) for recorder in recorders]
        hub.clients.update(streams)
        first, second = items(range(2)), items(range(2, 3))

        hub.publish(first)
        await asyncio.sleep(0)  # the flush starts
        await asyncio.sleep(0)  # the first slice's clients send
        assert sum(len(recorder.frames) for recorder in recorders) == 2  # one slice so far
        hub.publish(second)  # arrives while the first frame is still going out
        await until(lambda: all(len(recorder.frames) == 2 for recorder in recorders))

        for recorder in recorders:
            assert [decoded(frame) for frame in recorder.frames] == [
                events_frame(first),
                events_frame(second),
            ]
        for stream in streams:
            stream.close()

    run(scenario)


def test_it_sends_nothing_for_an_empty_read() -> None:
    async def scenario() -> None:
        hub = FanoutHub()
        recorder = Recorder()
        stream = ClientStream(recorder, max_frames=8)
        hub.clients.add(stream)

        hub.publish([])
        await asyncio.sleep(0.05)

        assert recorder.frames == []
        stream.close()

    run(scenario)


def test_it_tells_a_slow_client_exactly_how_many_events_it_missed() -> None:
    async def scenario() -> None:
        send = BlockingRecorder()
        stream = ClientStream(send, max_frames=2)

        stream.offer("frame-1", 1)
        await until(lambda: send.frames == ["frame-1"])  # the socket is now stalled
        stream.offer("frame-2", 2)
        stream.offer("frame-3", 3)  # the queue is full
        stream.offer("frame-4", 4)
        stream.offer("frame-5", 5)
        assert stream.missed == 9

        send.release.set()
        await until(lambda: len(send.frames) == 3)
        assert send.frames == ["frame-1", "frame-2", "frame-3"]

        stream.offer("frame-6", 6)
        await until(lambda: len(send.frames) == 5)
        stream.offer("frame-7", 7)
        await until(lambda: len(send.frames) == 6)

        assert decoded(send.frames[3]) == {"type": "gap", "missed": 9, "reason": "slow"}
        assert send.frames[4:] == ["frame-6", "frame-7"]
        assert stream.missed == 0
        assert stream.delivered == 1 + 2 + 3 + 6 + 7
        stream.close()

    run(scenario)


def test_it_keeps_fast_clients_whole_while_a_slow_one_falls_behind() -> None:
    async def scenario() -> None:
        hub = FanoutHub()
        fast, slow = Recorder(), BlockingRecorder()
        fast_stream = ClientStream(fast, max_frames=2)
        slow_stream = ClientStream(slow, max_frames=2)
        hub.clients.update({fast_stream, slow_stream})
        batches = [items(range(start, start + 2)) for start in range(0, 12, 2)]

        for sent, batch in enumerate(batches, start=1):
            hub.publish(batch)
            await until(lambda sent=sent: len(fast.frames) == sent)
        # The slow client holds one frame in its socket and two in its queue.
        assert slow_stream.missed == 2 * (len(batches) - 3)

        slow.release.set()
        await until(lambda: len(slow.frames) == 3)
        last = items(range(100, 101))
        hub.publish(last)
        await until(lambda: len(slow.frames) == 5)

        assert [decoded(frame) for frame in fast.frames] == [
            events_frame(batch) for batch in [*batches, last]
        ]
        assert [decoded(frame) for frame in slow.frames] == [
            events_frame(batches[0]),
            events_frame(batches[1]),
            events_frame(batches[2]),
            {"type": "gap", "missed": 6, "reason": "slow"},
            events_frame(last),
        ]
        fast_stream.close()
        slow_stream.close()

    run(scenario)


def test_it_stops_sending_once_closed() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        stream = ClientStream(recorder, max_frames=4)
        stream.close()
        await asyncio.sleep(0)

        stream.offer("frame", 1)
        await asyncio.sleep(0.02)

        assert recorder.frames == []

    run(scenario)


def test_it_encodes_an_item_as_json_with_its_position() -> None:
    raw = event_bytes(7, caption='Zürich "quoted" ☀️')

    item = encode_item(TOPIC, 2, 41, raw, timestamp=1_700_000_000_123)
    unverified = encode_item(TOPIC, 2, 42, raw, verified=False, reason='not "signed"')

    assert json.loads(item) == {
        "topic": TOPIC,
        "partition": 2,
        "offset": 41,
        "timestamp": 1_700_000_000_123,
        "verified": True,
        "event": json.loads(raw),
    }
    assert json.loads(unverified) == {
        "topic": TOPIC,
        "partition": 2,
        "offset": 42,
        "verified": False,
        "reason": 'not "signed"',
        "event": json.loads(raw),
    }
    # The envelope is embedded verbatim, not re-encoded.
    assert raw.decode() in item


def test_it_escapes_the_topic_name() -> None:
    raw = event_bytes(1)

    item = encode_item('odd"topic\\', 0, 0, raw)

    assert json.loads(item)["topic"] == 'odd"topic\\'


def test_it_makes_a_valid_frame_of_encoded_items() -> None:
    async def scenario() -> None:
        hub = FanoutHub()
        recorder = Recorder()
        stream = ClientStream(recorder, max_frames=8)
        hub.clients.add(stream)
        batch = [encode_item(TOPIC, p, 10 + p, event_bytes(p, caption="naïve ✓")) for p in (0, 1)]

        hub.publish(batch)
        await until(lambda: bool(recorder.frames))

        frame = decoded(recorder.frames[0])
        assert frame["type"] == "events"
        assert [(e["partition"], e["offset"]) for e in frame["events"]] == [(0, 10), (1, 11)]
        assert [e["event"]["data"]["caption"] for e in frame["events"]] == ["naïve ✓"] * 2
        stream.close()

    run(scenario)
