"""``make run``'s embedded broker rolled over under a steady load, as another
service produces: a client on the stream gets every event once, at
positions that only grow; the workers store every event; and a client that
resumes from before a roll-over is told exactly what it can no longer get."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websockets

from monitor.events.schema import encode_event
from monitor.kafka import clients as kafka
from tests.support.events import signups
from tests.support.stack import Poster, RunStack, token_of

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

EVENTS = 900


@pytest.fixture(scope="module")
def rolling(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunStack]:
    """``make run`` whose broker rolls over once a partition holds 40 records,
    and whose live line keeps only the last 50 events: a resume from further
    back is served from the broker, not from memory."""
    stack = RunStack(tmp_path_factory.mktemp("var"))
    stack.env["EMBEDDED_KAFKA_ROLL_RECORDS"] = "40"
    stack.env["STREAM_RECENT_EVENTS"] = "50"
    try:
        yield stack.start()
    finally:
        stack.stop()


def roll_overs(stack: RunStack) -> int:
    return stack.log().count("embedded broker: rolled over from")


async def produce_steadily(address: str, values: list[tuple[bytes, bytes]], rate: float) -> None:
    """Another service's producer: ``rate`` records a second, each acknowledged."""
    producer = kafka.make_producer(bootstrap_servers=address, linger_ms=5)
    await producer.start()
    try:
        deliveries = []
        for key, value in values:
            deliveries.append(await producer.send("user-events", value, key=key))
            await asyncio.sleep(1 / rate)
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()


async def read_stream(url: str, token: str, ids: set[str], timeout: float) -> list[dict[str, Any]]:
    """Every frame until each of ``ids`` came (or ``timeout`` passed)."""
    frames: list[dict[str, Any]] = []
    seen: set[str] = set()
    headers = {"Authorization": f"Bearer {token}"}
    async with websockets.connect(url, additional_headers=headers) as socket:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not ids <= seen and loop.time() < deadline:
            try:
                frame = json.loads(await asyncio.wait_for(socket.recv(), 1.0))
            except TimeoutError:
                continue
            frames.append(frame)
            if frame["type"] == "events":
                seen |= {item["event"]["id"] for item in frame["events"]}
    return frames


def events_of(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item for frame in frames if frame["type"] == "events" for item in frame["events"]]


def test_the_stream_and_the_workers_lose_nothing_across_roll_overs(rolling: RunStack) -> None:
    address = rolling.record()["bootstrap_servers"]
    token = token_of(Poster(rolling.base_url, "roller"), staff_in=rolling)
    events = signups(1, EVENTS)
    ids = {str(event["id"]) for event in events}
    url = rolling.base_url.replace("http", "ws") + "/ws/events/"

    async def scenario() -> list[dict[str, Any]]:
        reader = asyncio.create_task(read_stream(url, token, ids, timeout=120))
        await asyncio.sleep(1.0)  # the client has its welcome
        values = [(event["actor"].encode(), encode_event(event)) for event in events]
        await produce_steadily(address, values, rate=50)
        return await reader

    frames = asyncio.run(scenario())
    received = events_of(frames)
    assert roll_overs(rolling) >= 2, rolling.log()[-3000:]
    got = [item["event"]["id"] for item in received]
    assert len(got) == len(set(got)), "an event came twice"
    assert ids <= set(got), f"{len(ids - set(got))} events never came"
    assert not [frame for frame in frames if frame["type"] == "gap"]
    last: dict[int, int] = {}
    for item in received:  # positions only grow, across every roll-over
        assert item["offset"] > last.get(item["partition"], -1), item
        last[item["partition"]] = item["offset"]

    # The workers stored every event once, whatever cluster it was read from.
    deadline = time.monotonic() + 60
    while (stored := analytics_total(rolling)) < EVENTS and time.monotonic() < deadline:
        time.sleep(1)
    assert stored >= EVENTS


def test_a_resume_from_before_a_roll_over_is_told_what_is_gone(rolling: RunStack) -> None:
    address = rolling.record()["bootstrap_servers"]
    token = token_of(Poster(rolling.base_url, "resumer"), staff_in=rolling)
    url = rolling.base_url.replace("http", "ws") + "/ws/events/"
    first = signups(1000, 30)
    later = signups(2000, 200)

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        ids = {str(event["id"]) for event in first}
        reader = asyncio.create_task(read_stream(url, token, ids, timeout=60))
        await asyncio.sleep(1.0)
        await produce_steadily(address, [(b"k", encode_event(e)) for e in first], rate=100)
        before = await reader
        rolls = roll_overs(rolling)
        await produce_steadily(address, [(b"k", encode_event(e)) for e in later], rate=100)
        deadline = asyncio.get_running_loop().time() + 60
        while roll_overs(rolling) == rolls:
            assert asyncio.get_running_loop().time() < deadline, "no roll-over"
            await asyncio.sleep(0.5)
        positions = {item["partition"]: item["offset"] for item in events_of(before)}
        since = ",".join(f"{p}:{o}" for p, o in sorted(positions.items()))
        tail = await read_stream(f"{url}?since={since}", token, {"none"}, timeout=5)
        return before, tail

    before, tail = asyncio.run(scenario())
    gaps = [frame for frame in tail if frame["type"] == "gap"]
    assert gaps and gaps[0]["reason"] == "expired", tail[:3]
    replayed = events_of(tail)
    last_seen = {item["partition"]: item["offset"] for item in events_of(before)}
    for item in replayed:  # nothing at or before the client's positions comes again
        assert item["offset"] > last_seen.get(item["partition"], -1), item
    later_ids = {str(event["id"]) for event in later}
    missing = later_ids - {item["event"]["id"] for item in replayed}
    # What was rolled away is counted (the site's own sign-up events may be among it).
    assert missing and len(missing) <= gaps[0]["missed"] <= len(missing) + 5


def analytics_total(stack: RunStack) -> int:
    """Events the stack's analytics worker stored (in the stack's own SQLite)."""
    with sqlite3.connect(stack.var_dir / "eventsite.sqlite3") as db:
        (count,) = db.execute("select count(*) from monitor_analyticsevent").fetchone()
    return int(count)


def test_after_make_run_starts_again_history_and_positions_go_on(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    var_dir = tmp_path_factory.mktemp("var")
    mine = signups(5000, 30)
    ids = [str(event["id"]) for event in mine]

    first = RunStack(var_dir).start()
    try:
        token = token_of(Poster(first.base_url, "before"), staff_in=first)
        url = first.base_url.replace("http", "ws") + "/ws/events/"
        address = first.record()["bootstrap_servers"]

        async def before() -> list[dict[str, Any]]:
            reader = asyncio.create_task(read_stream(url, token, set(ids), timeout=60))
            await asyncio.sleep(1.0)
            await produce_steadily(address, [(b"k", encode_event(e)) for e in mine], rate=100)
            return await reader

        seen = {item["event"]["id"]: item for item in events_of(asyncio.run(before()))}
        deadline = time.monotonic() + 60
        while analytics_total(first) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        first.stop()  # as Ctrl-C: the broker says where its log ended

    second = RunStack(var_dir).start()
    try:
        token = token_of(Poster(second.base_url, "after"), staff_in=second)
        url = second.base_url.replace("http", "ws") + "/ws/events/"
        last = {}
        for item in seen.values():
            last[item["partition"]] = max(last.get(item["partition"], -1), item["offset"])
        since = ",".join(f"{p}:{o}" for p, o in sorted(last.items()))
        history = asyncio.run(read_stream(f"{url}?history=50", token, set(ids), timeout=15))
        resumed = asyncio.run(read_stream(f"{url}?since={since}", token, {"-"}, timeout=4))
    finally:
        second.stop()

    # The history is back, from the analytics store, at the positions it had.
    replayed = {item["event"]["id"]: item for item in events_of(history)}
    assert set(ids) <= set(replayed), f"{len(set(ids) - set(replayed))} missing after a restart"
    for event_id in ids:
        assert (replayed[event_id]["partition"], replayed[event_id]["offset"]) == (
            seen[event_id]["partition"],
            seen[event_id]["offset"],
        )
    # Positions go on from where they were: the new log begins where the old ended.
    welcome = next(frame for frame in history if frame["type"] == "welcome")
    for partition, offset in last.items():
        assert welcome["positions"][str(partition)] >= offset
    # A client that had seen everything resumes exactly: no gap, nothing again.
    assert not [frame for frame in resumed if frame["type"] == "gap"], resumed[:3]
    again = {item["event"]["id"] for item in events_of(resumed)}
    assert not again & set(ids)
