"""monitor.live.reader_keeper: a live reader in trouble is never silent.

A reader made to stall (its reads hang, as a wedged fetch would) against the
session's real broker while the topic grows: /healthz, asked of this
process, answers 503 naming it and how far behind it is; the reader is
replaced by one at the broker's ends, and the clients get a ``gap`` notice
with the exact number skipped, then the events after it. A frozen broker
(SIGSTOP) under a real daphne: the clients are closed with 4503, and
/healthz names the reader.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import AsyncClient
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from monitor.events.schema import encode_event
from monitor.kafka import clients as kafka
from monitor.live import event_socket as streams
from monitor.live import hub as fanout
from monitor.live.event_socket import EventStreamConsumer
from monitor.live.hub import FanoutHub
from monitor.live.reader import LiveReader
from monitor.live.socket_auth import StreamAuthMiddleware
from monitor.security.tokens import token_create
from tests.support.events import signup_event
from tests.support.stack import Poster, Processes

pytestmark = pytest.mark.django_db(transaction=True)

BOUND_SECONDS = 2


@pytest.fixture(autouse=True)
def hub(monkeypatch: pytest.MonkeyPatch, settings: Any) -> FanoutHub:
    """A fresh hub for the consumer and for /healthz alike, with a short bound."""
    settings.LIVE_READER_MAX_BEHIND_SECONDS = BOUND_SECONDS
    settings.FANOUT_TICK_MS = 5
    fresh = FanoutHub()
    monkeypatch.setattr(streams, "hub", fresh)
    monkeypatch.setattr(fanout, "hub", fresh)
    return fresh


async def welcomed(token: str) -> WebsocketCommunicator:
    application = StreamAuthMiddleware(EventStreamConsumer.as_asgi())
    headers = [(b"authorization", f"Bearer {token}".encode())]
    communicator = WebsocketCommunicator(application, "/ws/events/", headers=headers)
    accepted, _ = await communicator.connect(timeout=30)
    assert accepted
    assert (await communicator.receive_json_from(timeout=30))["type"] == "welcome"
    return communicator


async def produce(first: int, count: int) -> None:
    """Sign-ups of users ``first`` on, one record per request: after a batch of
    several, the embedded broker reports an end below its last record."""
    producer = kafka.make_producer()
    await producer.start()
    try:
        for n in range(first, first + count):
            value = encode_event(signup_event(n))
            topic = django_settings.KAFKA_EVENTS_TOPIC
            await producer.send_and_wait(topic, value, key=str(n).encode())
    finally:
        await producer.stop()


async def events_until_gap(communicator: WebsocketCommunicator) -> tuple[list[int], dict]:
    """The user ids of the events received before the first gap notice, and the notice."""
    seen: list[int] = []
    while True:
        frame = await communicator.receive_json_from(timeout=30)
        if frame["type"] == "gap":
            return seen, frame
        seen += [item["event"]["data"]["user_id"] for item in frame["events"]]


async def user_ids(communicator: WebsocketCommunicator, count: int) -> list[int]:
    seen: list[int] = []
    while len(seen) < count:
        frame = await communicator.receive_json_from(timeout=30)
        assert frame["type"] == "events", frame
        seen += [item["event"]["data"]["user_id"] for item in frame["events"]]
    return seen


def test_a_stalled_reader_fails_healthz_then_skips_ahead_and_says_how_many(
    topics: tuple[str, str], user: Any, hub: FanoutHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    user.is_staff = True  # an operator: every record on the topic
    user.save(update_fields=["is_staff"])
    token = token_create(user=user, name="keeper tests")[1]
    stalled: set[LiveReader] = set()
    read_batch = LiveReader._read_batch

    async def read_or_hang(self: LiveReader, consumer: Any) -> None:
        if self in stalled:
            await asyncio.Event().wait()  # a fetch that never returns
        await read_batch(self, consumer)

    monkeypatch.setattr(LiveReader, "_read_batch", read_or_hang)

    async def scenario() -> tuple[list[dict], dict, list[int], dict]:
        first, second = await welcomed(token), await welcomed(token)
        await produce(0, 3)
        assert sorted(await user_ids(first, 3)) == [0, 1, 2]
        assert sorted(await user_ids(second, 3)) == [0, 1, 2]

        assert hub.keeper.reader is not None
        stalled.add(hub.keeper.reader)
        await asyncio.sleep(1.5)  # the read under way returns (empty, after 1 s) and hangs next
        await produce(100, 5)  # never read by the stalled reader
        health = AsyncClient()
        failing: list[dict] = []
        deadline = time.monotonic() + 30
        while not failing and time.monotonic() < deadline:
            response = await health.get("/healthz")
            if response.status_code == 503:
                failing.append(response.json())
            await asyncio.sleep(0.2)

        missed, gap = await events_until_gap(first)
        assert missed == []
        assert await events_until_gap(second) == ([], gap)
        await produce(200, 2)
        after = sorted(await user_ids(first, 2))
        assert sorted(await user_ids(second, 2)) == after
        deadline = time.monotonic() + 30
        while (response := await health.get("/healthz")).status_code != 200:
            assert time.monotonic() < deadline, response.json()
            await asyncio.sleep(0.2)
        await first.disconnect()
        await second.disconnect()
        return failing, gap, after, response.json()

    failing, gap, after, healthy = asyncio.run(asyncio.wait_for(scenario(), 120))

    assert failing, "/healthz never answered 503 while the reader stalled"
    reader = failing[0]["live_reader"]
    assert reader["ok"] is False and reader["running"] is True
    assert reader["behind"] == 5
    assert reader["seconds_since_advance"] >= BOUND_SECONDS
    assert "has not advanced" in reader["reason"]
    assert failing[0]["broker"]["ok"] and failing[0]["database"]["ok"]
    assert gap == {"type": "gap", "missed": 5, "reason": "stalled"}
    assert after == [200, 201]
    assert healthy["live_reader"]["ok"] is True
    assert healthy["live_reader"]["skip"]["skipped"] == 5
    assert healthy["live_reader"]["skip"]["reason"] == "stalled"


@pytest.mark.e2e
def test_a_frozen_broker_closes_the_clients_with_4503_and_fails_healthz(
    own_broker: Any, processes: Processes
) -> None:
    processes.env["LIVE_READER_MAX_BEHIND_SECONDS"] = str(BOUND_SECONDS)
    processes.start("web")
    poster = Poster(processes.base_url, "frozen")
    cookie = {"Cookie": f"sessionid={poster.client.cookies['sessionid']}"}
    url = processes.base_url.replace("http", "ws") + "/ws/events/"

    async def scenario() -> tuple[int | None, float]:
        async with connect(url, origin=processes.base_url, additional_headers=cookie) as client:
            assert json.loads(await client.recv())["type"] == "welcome"
            own_broker.pause()
            paused = time.monotonic()
            try:
                async with asyncio.timeout(30):
                    while True:
                        await client.recv()
            except ConnectionClosed:
                pass
            return client.close_code, time.monotonic() - paused

    try:
        code, after = asyncio.run(scenario())
        health = httpx.get(processes.base_url + "/healthz", timeout=20)
    finally:
        own_broker.resume()
    assert code == 4503
    assert after < 15
    assert health.status_code == 503
    reader = health.json()["live_reader"]
    assert reader["ok"] is False and reader["behind"] is None
    assert "broker" in reader["reason"]

    async def reconnect() -> str:
        async with connect(url, origin=processes.base_url, additional_headers=cookie) as client:
            return json.loads(await client.recv())["type"]

    assert asyncio.run(reconnect()) == "welcome"
