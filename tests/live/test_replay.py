"""History and resume on /ws/events/: the plan, the requests, and real clients
against a running server while events keep coming."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from aiokafka import TopicPartition
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from monitor.live.recent import latest_in_partition_order
from monitor.live.replay_plan import HISTORY_MAX, BadReplay, ReplayRequest, plan_replay
from tests.support.events import photo_event, signups
from tests.support.kafka import produce_events as produce
from tests.support.stack import Processes, Stack, signed_in_client

# --- the plan ------------------------------------------------------------------


def test_it_resumes_after_the_last_offset_seen() -> None:
    plan = plan_replay(
        ReplayRequest(since={0: 9, 1: 4}), {0: 0, 1: 0}, {0: 15, 1: 5}, scan=0, limit=100
    )
    assert plan.starts == {0: 10, 1: 5}
    assert plan.missed == {}


def test_it_counts_what_retention_deleted() -> None:
    plan = plan_replay(ReplayRequest(since={0: 9}), {0: 30}, {0: 40}, scan=0, limit=100)
    assert plan.starts == {0: 30}
    assert plan.missed == {"expired": 20}


def test_what_went_before_a_crash_of_the_embedded_broker_is_not_counted() -> None:
    # Records below 1,000,050 were counted exactly only from 1,000,040 on (the
    # life before ended without saying where): a resume from below is a reset.
    request = ReplayRequest(since={0: 9, 1: 1_000_045})
    plan = plan_replay(
        request,
        {0: 1_000_050, 1: 1_000_050},
        {0: 1_000_060, 1: 1_000_060},
        scan=0,
        limit=100,
        exact_from={0: 1_000_040, 1: 1_000_040},
    )
    assert plan.starts == {0: 1_000_050, 1: 1_000_050}
    assert plan.missed == {"reset": None, "expired": 4}


def test_it_announces_a_log_that_started_over_without_a_count() -> None:
    plan = plan_replay(
        ReplayRequest(since={0: 500, 1: 2}), {0: 0, 1: 0}, {0: 7, 1: 9}, scan=0, limit=100
    )
    assert plan.starts == {0: 0, 1: 3}
    assert plan.missed == {"reset": None}


def test_it_replays_at_most_the_limit_per_partition() -> None:
    plan = plan_replay(
        ReplayRequest(since={0: -1, 1: 90}), {0: 0, 1: 0}, {0: 250, 1: 100}, scan=0, limit=100
    )
    assert plan.starts == {0: 150, 1: 91}
    assert plan.missed == {"limit": 150}


def test_a_partition_without_a_position_is_read_from_its_beginning() -> None:
    plan = plan_replay(ReplayRequest(since={0: 3}), {0: 0, 1: 2}, {0: 4, 1: 6}, scan=0, limit=100)
    assert plan.starts == {0: 4, 1: 2}


def test_history_scans_the_end_of_each_partition() -> None:
    plan = plan_replay(ReplayRequest(history=5), {0: 0, 1: 0}, {0: 100, 1: 3}, scan=5, limit=100)
    assert plan.starts == {0: 95, 1: 0}
    assert plan.missed == {}


def test_history_picks_the_latest_by_time_and_keeps_each_partitions_order() -> None:
    t = [datetime(2026, 1, 1, 0, 0, n, tzinfo=UTC) for n in range(10)]
    # Partition 1 holds an event published late: its offset is after a newer one's.
    partitions = [[(t[1], "a1"), (t[4], "a4")], [(t[5], "b5"), (t[0], "b0-late")], [(t[3], "c3")]]
    assert latest_in_partition_order(partitions, 3) == ["c3", "a4", "b5"]
    # All of them: partition 1's late event stays after b5, its offset order.
    assert latest_in_partition_order(partitions, 10) == ["a1", "c3", "a4", "b5", "b0-late"]
    assert latest_in_partition_order(partitions, 0) == []


# --- the requests --------------------------------------------------------------


def part(partition: int, topic: str = "user-events") -> TopicPartition:
    return TopicPartition(topic, partition)


def test_it_reads_since_and_history_from_the_query_string(settings: Any) -> None:
    settings.KAFKA_EVENTS_TOPIC = "user-events"
    since = {part(0): 17, part(1): -1, part(0, "orders"): 3}
    assert ReplayRequest.from_query({"since": ["0:17,1:-1,orders/0:3"]}) == ReplayRequest(since)
    assert ReplayRequest.from_query({"history": ["20"]}) == ReplayRequest(history=20)
    assert ReplayRequest.from_query({}) is None


def test_it_reads_since_and_history_from_a_subscribe_message(settings: Any) -> None:
    settings.KAFKA_EVENTS_TOPIC = "user-events"
    message = {"since": {"2": 5, "orders/1": 0}}
    assert ReplayRequest.from_message(message) == ReplayRequest(
        since={part(2): 5, part(1, "orders"): 0}
    )
    assert ReplayRequest.from_message({"history": 3}) == ReplayRequest(history=3)
    assert ReplayRequest.from_message({"filter": {}}) is None


@pytest.mark.parametrize(
    "message",
    [
        {"since": [1, 2]},
        {"since": {"zero": 1}},
        {"since": {"0": -2}},
        {"since": {"-1": 4}},
        {"since": {"0": True}},
        {"history": HISTORY_MAX + 1},
        {"history": "lots"},
        {"history": -1},
    ],
)
def test_it_refuses_a_replay_it_cannot_take(message: dict[str, Any]) -> None:
    with pytest.raises(BadReplay):
        ReplayRequest.from_message(message)


def test_it_refuses_a_malformed_since_in_the_query_string() -> None:
    with pytest.raises(BadReplay, match="partition:offset"):
        ReplayRequest.from_query({"since": ["17"]})


# --- real clients against a running server ------------------------------------


@contextlib.asynccontextmanager
async def stream(
    stack: Stack, client: httpx.Client, **params: str
) -> AsyncIterator[ClientConnection]:
    query = f"?{urlencode(params)}" if params else ""
    headers = {"Cookie": f"sessionid={client.cookies['sessionid']}"}
    async with connect(
        f"{stack.ws_url}/ws/events/{query}", origin=stack.origin, additional_headers=headers
    ) as websocket:
        yield websocket


async def next_frame(websocket: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(websocket.recv(), timeout))


class Reader:
    """Keeps what a client has seen: event ids in arrival order, and its positions."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.positions: dict[int, int] = {}
        self.offsets: list[tuple[int, int]] = []

    def welcome(self, frame: dict[str, Any]) -> None:
        assert frame["type"] == "welcome"
        for partition, offset in frame["positions"].items():
            self.positions.setdefault(int(partition), offset)

    def take(self, frame: dict[str, Any]) -> int:
        for item in frame.get("events", []):
            self.ids.append(item["event"]["id"])
            self.offsets.append((item["partition"], item["offset"]))
            previous = self.positions.get(item["partition"], -1)
            self.positions[item["partition"]] = max(previous, item["offset"])
        return len(frame.get("events", []))

    @property
    def since(self) -> str:
        return ",".join(f"{p}:{o}" for p, o in sorted(self.positions.items()))


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_history_shows_the_most_recent_events_then_goes_live(stack: Stack) -> None:
    client = signed_in_client(stack, "historian", "a-long-pass-phrase-1", staff=True)
    produced = signups(1000, 12)

    async def scenario() -> None:
        await produce(produced)
        async with stream(stack, client, history="5") as websocket:
            reader = Reader()
            reader.welcome(await next_frame(websocket))
            frame = await next_frame(websocket)
            while frame["type"] == "events":
                assert frame["replay"] is True
                reader.take(frame)
                frame = await next_frame(websocket)
            assert frame == {"type": "live", "replayed": 5}
            assert reader.ids == [event["id"] for event in produced[-5:]]

            later = signups(1100, 1)
            await produce(later)
            frame = await next_frame(websocket)
            assert "replay" not in frame
            reader.take(frame)
            assert reader.ids[5:] == [later[0]["id"]]

    asyncio.run(scenario())


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_filtered_history_counts_only_matching_events(stack: Stack) -> None:
    client = signed_in_client(stack, "picky", "a-long-pass-phrase-2", staff=True)
    photos = [photo_event(n, caption=f"pier {n}") for n in range(2000, 2004)]

    async def scenario() -> None:
        await produce([*photos[:2], *signups(2100, 3), *photos[2:], *signups(2200, 3)])
        async with stream(stack, client, history="3", types="photo.posted", text="PIER") as ws:
            reader = Reader()
            reader.welcome(await next_frame(ws))
            frame = await next_frame(ws)
            while frame["type"] == "events":
                reader.take(frame)
                frame = await next_frame(ws)
            assert frame == {"type": "live", "replayed": 3}
            assert reader.ids == [event["id"] for event in photos[-3:]]

    asyncio.run(scenario())


def resume_during_a_steady_stream(stack: Stack, username: str, first_id: int) -> None:
    """Two reconnects while events keep coming: every event once, in order per partition."""
    client = signed_in_client(stack, username, "a-long-pass-phrase-3", staff=True)
    produced = signups(first_id, 240)

    ours = {event["id"] for event in produced}
    producing: list[asyncio.Task[None]] = []

    def received(reader: Reader) -> int:
        # Events of earlier tests may still be on their way: only ours count.
        return len(ours.intersection(reader.ids))

    async def session(reader: Reader, params: dict[str, str], until: int) -> dict[str, int]:
        """Read until ``until`` of our events in all; returns what the session's frames were."""
        kinds = {"replayed": 0, "live": 0, "gap": 0, "live_marker": 0}
        async with stream(stack, client, **params) as websocket:
            reader.welcome(await next_frame(websocket))
            if not producing:  # events start once the first session is live
                producing.append(asyncio.create_task(produce(produced, pause=0.004)))
            while received(reader) < until:
                frame = await next_frame(websocket)
                if frame["type"] == "events":
                    kinds["replayed" if frame.get("replay") else "live"] += reader.take(frame)
                elif frame["type"] == "live":
                    kinds["live_marker"] += 1
                    assert frame["replayed"] == kinds["replayed"]
                elif frame["type"] == "gap":
                    kinds["gap"] += 1
            # Leave abruptly, without reading what is in flight.
        return kinds

    async def scenario() -> None:
        reader = Reader()
        first = await session(reader, {}, until=60)
        # The first session starts at the live line: nothing was replayed.
        assert first["replayed"] == 0
        await asyncio.sleep(0.3)  # events go by while disconnected
        second = await session(reader, {"since": reader.since}, until=150)
        await asyncio.sleep(0.3)
        third = await session(reader, {"since": reader.since}, until=len(produced))
        await producing[0]
        for kinds in (second, third):
            assert kinds["replayed"] > 0 and kinds["live_marker"] == 1 and kinds["gap"] == 0
        delivered = [event_id for event_id in reader.ids if event_id in ours]
        assert len(delivered) == len(set(delivered)), "an event was delivered twice"
        assert set(delivered) == ours, "an event was missed"
        for partition in {p for p, _ in reader.offsets}:
            offsets = [o for p, o in reader.offsets if p == partition]
            assert offsets == sorted(set(offsets)), f"partition {partition} out of order"

    asyncio.run(scenario())


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_resume_from_recent_events_sends_exactly_the_missed_ones(stack: Stack) -> None:
    resume_during_a_steady_stream(stack, "resumer", 3000)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_resume_from_the_broker_sends_exactly_the_missed_ones(processes: Processes) -> None:
    """With no recent events kept, every replay reads the topic."""
    processes.env["STREAM_RECENT_EVENTS"] = "0"
    processes.start("web")
    base = processes.base_url
    served = Stack(base, base.replace("http", "ws"), processes.env, processes.running)
    resume_during_a_steady_stream(served, "broker-resumer", 3500)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_positions_past_the_end_of_the_log_are_announced_as_a_reset(stack: Stack) -> None:
    client = signed_in_client(stack, "restarter", "a-long-pass-phrase-4", staff=True)

    async def scenario() -> None:
        await produce(signups(4000, 2))
        async with stream(stack, client, since="0:999999999") as websocket:
            assert (await next_frame(websocket))["type"] == "welcome"
            assert await next_frame(websocket) == {"type": "gap", "missed": None, "reason": "reset"}
            frame = await next_frame(websocket)
            replayed = 0
            while frame["type"] == "events":
                replayed += len(frame["events"])
                frame = await next_frame(websocket)
            assert frame == {"type": "live", "replayed": replayed}
            assert replayed >= 2  # the whole log, from its beginning

    asyncio.run(scenario())


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_subscribe_with_history_replays_under_the_new_filter(stack: Stack) -> None:
    client = signed_in_client(stack, "switcher", "a-long-pass-phrase-5", staff=True)
    photos = [photo_event(n) for n in range(5000, 5003)]

    async def scenario() -> None:
        await produce([photos[0], *signups(5100, 2), *photos[1:]])
        async with stream(stack, client) as websocket:
            assert (await next_frame(websocket))["type"] == "welcome"
            await websocket.send(
                json.dumps(
                    {"type": "subscribe", "filter": {"types": ["photo.posted"]}, "history": 2}
                )
            )
            frames = []
            while not frames or frames[-1]["type"] != "live":
                frames.append(await next_frame(websocket))
            # Events frames before the answer belong to the earlier subscription
            # (this user's own signup may still be on its way).
            answer = next(n for n, f in enumerate(frames) if f["type"] != "events")
            assert frames[answer] == {"type": "subscribed", "filter": {"types": ["photo.posted"]}}
            frames = frames[answer:]
            replayed = [
                i["event"]["id"] for f in frames if f["type"] == "events" for i in f["events"]
            ]
            assert replayed == [photos[1]["id"], photos[2]["id"]]
            assert frames[-1] == {"type": "live", "replayed": 2}

    asyncio.run(scenario())


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_bad_replay_is_refused_with_a_reason(stack: Stack) -> None:
    client = signed_in_client(stack, "clumsy", "a-long-pass-phrase-6", staff=True)

    async def scenario() -> None:
        async with stream(stack, client, since="seventeen") as websocket:
            frame = await next_frame(websocket)
            assert frame["type"] == "error" and frame["code"] == "bad_replay"
            with pytest.raises(ConnectionClosed) as closed:
                await next_frame(websocket)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400
        async with stream(stack, client, kind="no-such-kind") as websocket:
            frame = await next_frame(websocket)
            assert frame["type"] == "error" and frame["code"] == "bad_filter"
        async with stream(stack, client) as websocket:
            assert (await next_frame(websocket))["type"] == "welcome"
            await websocket.send(json.dumps({"type": "subscribe", "history": 10**6}))
            frame = await next_frame(websocket)
            assert frame["type"] == "error" and frame["code"] == "bad_replay"
            await websocket.send(json.dumps({"type": "ping"}))
            assert await next_frame(websocket) == {"type": "pong"}  # the connection survives

    asyncio.run(scenario())
