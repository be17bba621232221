"""The whole event path through real processes: HTTP post -> outbox -> Kafka ->
live reader -> WebSocket client, and Kafka -> analytics worker -> database."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from monitor.models import AnalyticsEvent, EventMinuteCount, OutboxEvent, Post
from tests.support.images import jpeg_bytes
from tests.support.stack import CSRF_FIELD, Stack, signed_in_client

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def post_photo(client: httpx.Client, stack: Stack, caption: str) -> httpx.Response:
    token = CSRF_FIELD.search(client.get("/posts/new/").text).group(1)
    return client.post(
        "/posts/new/",
        data={"caption": caption, "csrfmiddlewaretoken": token},
        files={"photo": ("beach.jpg", jpeg_bytes(), "image/jpeg")},
        headers={"Referer": stack.base_url + "/posts/new/"},
    )


async def receive_until(websocket, predicate, timeout: float) -> list[dict]:
    """Frames received until one satisfies ``predicate``; fails after ``timeout``."""
    frames = []
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await websocket.recv())
            frames.append(frame)
            if predicate(frame):
                return frames


@asynccontextmanager
async def event_stream(
    stack: Stack, client: httpx.Client, username: str
) -> AsyncIterator[ClientConnection]:
    """/ws/events/ for the signed-in ``client``, past its welcome (which names ``username``)."""
    headers = {"Cookie": f"sessionid={client.cookies['sessionid']}"}
    async with connect(
        stack.ws_url + "/ws/events/", origin=stack.origin, additional_headers=headers
    ) as websocket:
        welcome = json.loads(await websocket.recv())
        assert welcome["type"] == "welcome"
        assert welcome["user"] == username
        yield websocket


def events_of(frames: list[dict]) -> list[dict]:
    return [item for frame in frames if frame["type"] == "events" for item in frame["events"]]


def wait_for(condition, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout}s")


def test_it_carries_a_post_from_http_to_websocket_and_analytics(stack: Stack) -> None:
    client = signed_in_client(stack, "poster", "a-long-pass-phrase-1")

    async def scenario() -> tuple[list[dict], float]:
        async with event_stream(stack, client, "poster") as websocket:
            started = time.monotonic()
            response = await asyncio.to_thread(post_photo, client, stack, "sunset at the pier")
            assert response.status_code == 302, response.text
            frames = await receive_until(
                websocket,
                lambda f: any(i["event"]["type"] == "photo.posted" for i in events_of([f])),
                timeout=10,
            )
            return frames, time.monotonic() - started

    frames, elapsed = asyncio.run(scenario())
    item = next(i for i in events_of(frames) if i["event"]["type"] == "photo.posted")
    post = Post.objects.get()
    event = item["event"]
    assert event["data"]["post_id"] == post.pk
    assert event["data"]["caption"] == "sunset at the pier"
    assert event["actor"] == str(post.author_id)
    assert event["subject"] == f"posts/{post.pk}"
    assert item["topic"] == "user-events"
    assert item["verified"] is True  # signed by the site: the feed may act on it
    assert isinstance(item["partition"], int) and isinstance(item["offset"], int)
    assert elapsed < 5, f"photo.posted took {elapsed:.2f}s to reach the socket"

    # The analytics worker stores the same event once, with its position.
    row = wait_for(lambda: AnalyticsEvent.objects.filter(event_id=event["id"]).first(), 15)
    assert (row.type, row.partition, row.offset) == (
        "photo.posted",
        item["partition"],
        item["offset"],
    )
    assert EventMinuteCount.objects.filter(type="photo.posted").get().count == 1
    # Both events (signup and post) were acknowledged by the broker.
    wait_for(lambda: not OutboxEvent.objects.filter(sent_at__isnull=True).exists(), 10)
    assert set(OutboxEvent.objects.values_list("event_type", flat=True)) == {
        "user.signed_up",
        "photo.posted",
    }
    # The image is served back from the media URL.
    image = client.get(event["data"]["photo_url"])
    assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"


def test_it_streams_a_signup_to_an_operator(stack: Stack) -> None:
    watcher = signed_in_client(stack, "watcher", "a-long-pass-phrase-2", staff=True)

    async def scenario() -> list[dict]:
        async with event_stream(stack, watcher, "watcher") as websocket:
            await asyncio.to_thread(signed_in_client, stack, "newcomer", "a-long-pass-phrase-3")
            return await receive_until(
                websocket,
                lambda f: any(
                    i["event"]["type"] == "user.signed_up"
                    and i["event"]["data"]["username"] == "newcomer"
                    for i in events_of([f])
                ),
                timeout=10,
            )

    frames = asyncio.run(scenario())
    assert any(i["event"]["data"]["username"] == "newcomer" for i in events_of(frames))


def test_a_subscriber_gets_only_what_its_filter_lets_through(stack: Stack) -> None:
    poster = signed_in_client(stack, "filtered-poster", "a-long-pass-phrase-5")

    async def scenario() -> list[dict]:
        async with event_stream(stack, poster, "filtered-poster") as websocket:
            await websocket.send(
                json.dumps(
                    {"type": "subscribe", "filter": {"types": ["photo.posted"], "text": "HERON"}}
                )
            )
            # Events frames before the answer belong to the earlier subscription.
            answered = await receive_until(websocket, lambda f: f["type"] != "events", timeout=10)
            subscribed = answered[-1]
            assert subscribed == {
                "type": "subscribed",
                "filter": {"types": ["photo.posted"], "text": "heron"},
            }
            # Neither of these matches; the third post does.
            await asyncio.to_thread(
                signed_in_client, stack, "filtered-newcomer", "a-long-pass-phrase-6"
            )
            await asyncio.to_thread(post_photo, poster, stack, "a gull on the pier")
            await asyncio.to_thread(post_photo, poster, stack, "a grey heron, fishing")
            return await receive_until(
                websocket, lambda f: "heron" in json.dumps(events_of([f])), timeout=10
            )

    frames = asyncio.run(scenario())
    delivered = events_of(frames)
    assert [item["event"]["data"]["caption"] for item in delivered] == ["a grey heron, fishing"]


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("not json {", "malformed"),
        ("[1, 2]", "not_an_object"),
        ('{"type": "shout"}', "unknown_type"),
        ('{"type": "subscribe", "filter": {"colour": "red"}}', "bad_filter"),
        ('{"type": "subscribe", "filter": {"types": "photo.burned"}}', "bad_filter"),
        ('{"type": "subscribe", "since": [17]}', "bad_replay"),
        (b"\x00\x01binary", "binary_unsupported"),
    ],
)
def test_a_malformed_message_gets_an_error_frame_and_the_connection_lives_on(
    stack: Stack, message: str | bytes, code: str
) -> None:
    client = signed_in_client(stack, f"malformed-{code}-{len(message)}", "a-long-pass-phrase-7")

    async def scenario() -> tuple[dict, dict]:
        async with event_stream(stack, client, f"malformed-{code}-{len(message)}") as websocket:
            await websocket.send(message)
            frames = await receive_until(websocket, lambda f: f["type"] == "error", timeout=10)
            error = frames[-1]
            await websocket.send(json.dumps({"type": "ping"}))
            frames = await receive_until(websocket, lambda f: f["type"] == "pong", timeout=10)
            return error, frames[-1]

    error, pong = asyncio.run(scenario())
    assert error["type"] == "error" and error["code"] == code and error["message"]
    assert pong == {"type": "pong"}


def test_it_refuses_a_cookie_without_an_allowed_origin(stack: Stack) -> None:
    client = signed_in_client(stack, "origin-tester", "a-long-pass-phrase-4")
    headers = {"Cookie": f"sessionid={client.cookies['sessionid']}"}

    async def attempt(origin: str | None) -> tuple[dict, int | None]:
        async with connect(
            stack.ws_url + "/ws/events/", origin=origin, additional_headers=headers
        ) as websocket:
            first = json.loads(await websocket.recv())
            if first["type"] != "error":
                return first, None
            await websocket.wait_closed()
            return first, websocket.close_code

    for origin in (
        "http://evil.example",
        None,
        "null",
        stack.origin.replace("127.0.0.1", "localhost"),
    ):
        frame, code = asyncio.run(attempt(origin))
        assert (frame["code"], code) == ("origin_not_allowed", 4403), origin
        assert "token" in frame["message"]
    frame, code = asyncio.run(attempt(stack.origin))
    assert frame["type"] == "welcome" and frame["user"] == "origin-tester" and code is None


def test_it_closes_an_anonymous_socket_with_4401(stack: Stack) -> None:
    async def attempt() -> tuple[dict, int]:
        async with connect(stack.ws_url + "/ws/events/", origin=stack.origin) as websocket:
            frame = json.loads(await websocket.recv())
            await websocket.wait_closed()
            return frame, websocket.close_code

    frame, code = asyncio.run(attempt())
    assert frame["code"] == "unauthenticated"
    assert code == 4401


def test_it_reports_health_of_database_broker_and_outbox(stack: Stack) -> None:
    response = httpx.get(stack.base_url + "/healthz", timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] and body["broker"]["ok"]
    assert body["outbox"]["unsent"] >= 0
