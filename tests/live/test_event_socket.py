"""monitor.live.event_socket.EventStreamConsumer through a WebSocket test client.

Authenticated connections register with a real hub, whose reader connects to
the session's embedded broker. Each test gets a fresh hub: the module-level
one is bound to the event loop of whichever test used it first.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib.auth.models import AnonymousUser
from django.test import Client

from monitor.events.schema import encode_event
from monitor.kafka.embedded import free_port
from monitor.live import event_socket as streams
from monitor.live.event_socket import EventStreamConsumer
from monitor.live.hub import FanoutHub
from monitor.live.protocol import encode_item
from monitor.live.socket_auth import StreamAuthMiddleware
from monitor.security.tokens import token_create
from tests.support.events import photo_event, signup_event

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/ws/events/"
# The first connection of a test creates topics and positions a reader.
WELCOME_TIMEOUT = 30


@pytest.fixture(autouse=True)
def hub(monkeypatch: pytest.MonkeyPatch) -> FanoutHub:
    fresh = FanoutHub()
    monkeypatch.setattr(streams, "hub", fresh)
    return fresh


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=60))


@pytest.fixture
def user(user: Any) -> Any:
    """An operator (staff, who see every event), with an API token to connect with."""
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    user.api_token = token_create(user=user, name="stream tests")[1]
    return user


def communicator_for(
    user: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> WebsocketCommunicator:
    """A client of the consumer behind the site's sign-in middleware, signed in
    with ``user``'s token (if any) or the ``headers`` given."""
    headers = list(headers or [])
    token = getattr(user, "api_token", None)
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    application = StreamAuthMiddleware(EventStreamConsumer.as_asgi())
    return WebsocketCommunicator(application, PATH, headers=headers)


def cookie_headers(cookie: bytes) -> list[tuple[bytes, bytes]]:
    """A session cookie sent from the site's own page."""
    return [(b"cookie", cookie), (b"origin", b"http://testserver"), (b"host", b"testserver")]


async def connected(user: Any) -> WebsocketCommunicator:
    """A communicator that has been accepted and welcomed."""
    communicator = communicator_for(user)
    accepted, _ = await communicator.connect(timeout=WELCOME_TIMEOUT)
    assert accepted
    welcome = await communicator.receive_json_from(timeout=WELCOME_TIMEOUT)
    positions = welcome.pop("positions")
    assert welcome == {
        "type": "welcome",
        "protocol": 1,
        "user": user.get_username(),
        "topic": django_settings.KAFKA_EVENTS_TOPIC,
        "topics": [django_settings.KAFKA_EVENTS_TOPIC],
    }
    assert all(int(offset) >= -1 for offset in positions.values()) and positions
    return communicator


async def ping(communicator: WebsocketCommunicator) -> None:
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}


@pytest.mark.parametrize("anonymous", [AnonymousUser(), None], ids=["anonymous-user", "no-user"])
def test_it_refuses_an_anonymous_connection(anonymous: Any, hub: FanoutHub) -> None:
    async def scenario() -> None:
        communicator = communicator_for(anonymous)
        accepted, _ = await communicator.connect(timeout=5)
        assert accepted  # accepted first, so the client can read why it is closed

        error = await communicator.receive_json_from(timeout=5)
        closing = await communicator.receive_output(timeout=5)

        assert error["type"] == "error"
        assert error["code"] == "unauthenticated"
        assert error["message"]
        assert closing == {"type": "websocket.close", "code": 4401}
        assert hub.clients == set()
        await communicator.disconnect(code=4401)  # as the server does after a close

    run(scenario)


def test_it_welcomes_an_authenticated_user(user: Any, hub: FanoutHub) -> None:
    async def scenario() -> None:
        communicator = await connected(user)

        assert len(hub.clients) == 1
        assert await communicator.receive_nothing(timeout=0.1)
        await communicator.disconnect()
        assert hub.clients == set()

    run(scenario)


def test_it_authenticates_with_the_session_cookie(user: Any) -> None:
    browser = Client()
    browser.force_login(user)
    session_id = browser.cookies[django_settings.SESSION_COOKIE_NAME].value
    cookie = f"{django_settings.SESSION_COOKIE_NAME}={session_id}".encode()

    async def scenario() -> None:
        communicator = communicator_for(None, cookie_headers(cookie))
        await communicator.connect(timeout=WELCOME_TIMEOUT)

        welcome = await communicator.receive_json_from(timeout=WELCOME_TIMEOUT)

        assert welcome["type"] == "welcome"
        assert welcome["user"] == "alice"
        await communicator.disconnect()

    run(scenario)


def test_it_refuses_a_session_cookie_it_does_not_know() -> None:
    async def scenario() -> None:
        cookie = f"{django_settings.SESSION_COOKIE_NAME}=forged0session0id".encode()
        communicator = communicator_for(None, cookie_headers(cookie))
        await communicator.connect(timeout=5)

        error = await communicator.receive_json_from(timeout=5)

        assert error["code"] == "unauthenticated"
        assert await communicator.receive_output(timeout=5) == {
            "type": "websocket.close",
            "code": 4401,
        }
        await communicator.disconnect(code=4401)

    run(scenario)


def test_it_answers_ping_with_pong(user: Any) -> None:
    async def scenario() -> None:
        communicator = await connected(user)

        await ping(communicator)
        await ping(communicator)

        await communicator.disconnect()

    run(scenario)


BAD_MESSAGES = [
    pytest.param({"text_data": "this is not json"}, "malformed", id="not-json"),
    pytest.param({"text_data": '{"type": "ping"'}, "malformed", id="truncated-json"),
    pytest.param({"text_data": '{"type": "teleport"}'}, "unknown_type", id="unknown-type"),
    pytest.param(
        {"text_data": json.dumps({"type": "subscribe", "filter": {"kind": "exploded"}})},
        "bad_filter",
        id="filter-unknown-kind",
    ),
    pytest.param(
        {"text_data": json.dumps({"type": "subscribe", "filter": "all"})},
        "bad_filter",
        id="filter-not-an-object",
    ),
    pytest.param(
        {"text_data": json.dumps({"type": "subscribe", "filter": {"colour": "red"}})},
        "bad_filter",
        id="filter-unknown-field",
    ),
    pytest.param(
        {"text_data": json.dumps({"type": "subscribe", "filter": {"actor": ["1"]}})},
        "bad_filter",
        id="filter-actor-not-a-string",
    ),
    pytest.param({"text_data": "{}"}, "unknown_type", id="no-type"),
    pytest.param({"bytes_data": b"\x00\x01binary"}, "binary_unsupported", id="binary"),
    pytest.param(
        {"text_data": json.dumps({"type": "ping", "pad": "x" * 70_000})},
        "too_large",
        id="too-large",
    ),
]


@pytest.mark.parametrize(("frame", "code"), BAD_MESSAGES)
def test_it_answers_a_bad_message_with_an_error_and_stays_open(
    user: Any, hub: FanoutHub, frame: dict[str, Any], code: str
) -> None:
    async def scenario() -> None:
        communicator = await connected(user)

        await communicator.send_to(**frame)
        error = await communicator.receive_json_from(timeout=5)

        assert error["type"] == "error"
        assert error["code"] == code
        assert isinstance(error["message"], str)
        assert error["message"]
        await ping(communicator)
        assert len(hub.clients) == 1
        await communicator.disconnect()

    run(scenario)


@pytest.mark.parametrize("text", ["[1, 2]", '"ping"', "42", "null"])
def test_it_gives_a_json_non_object_its_own_error_code(user: Any, text: str) -> None:
    async def scenario() -> None:
        communicator = await connected(user)

        await communicator.send_to(text_data=text)
        error = await communicator.receive_json_from(timeout=5)
        await communicator.send_to(text_data='{"type": "teleport"}')
        unknown = await communicator.receive_json_from(timeout=5)

        assert error["type"] == "error"
        await ping(communicator)
        await communicator.disconnect()
        assert error["code"] == "not_an_object"
        assert error["code"] != unknown["code"]

    run(scenario)


def test_it_answers_a_json_non_object_with_an_error_and_stays_open(user: Any) -> None:
    async def scenario() -> None:
        communicator = await connected(user)

        await communicator.send_to(text_data="[1, 2]")
        error = await communicator.receive_json_from(timeout=5)

        assert error["type"] == "error"
        await ping(communicator)
        await communicator.disconnect()

    run(scenario)


def test_it_forwards_frames_from_the_hub_to_the_socket(
    user: Any, hub: FanoutHub, settings: Any
) -> None:
    settings.FANOUT_TICK_MS = 5
    # Past the welcome's positions, as any event published after it would be.
    item = '{"topic":"user-events","partition":0,"offset":1000000,"event":{"id":"x"}}'

    async def scenario() -> None:
        communicator = await connected(user)

        hub.publish([item])
        frame = await communicator.receive_json_from(timeout=5)

        assert isinstance(frame.pop("sent"), int)
        assert frame == {"type": "events", "events": [json.loads(item)]}
        await communicator.disconnect()

    run(scenario)


def test_it_filters_on_the_server_and_changes_the_filter_without_reconnecting(
    user: Any, hub: FanoutHub, settings: Any
) -> None:
    settings.FANOUT_TICK_MS = 5
    signed_up = encode_item("user-events", 0, 10**6, encode_event(signup_event(7)))
    posted = encode_item("user-events", 1, 10**6, encode_event(photo_event(3, author_id=7)))

    async def scenario() -> None:
        communicator = await connected(user)
        await communicator.send_json_to(
            {"type": "subscribe", "filter": {"types": ["user.signed_up"]}}
        )
        assert await communicator.receive_json_from(timeout=5) == {
            "type": "subscribed",
            "filter": {"types": ["user.signed_up"]},
        }
        hub.publish([posted, signed_up])
        frame = await communicator.receive_json_from(timeout=5)
        assert [item["event"]["type"] for item in frame["events"]] == ["user.signed_up"]

        await communicator.send_json_to({"type": "subscribe", "filter": {}})
        assert await communicator.receive_json_from(timeout=5) == {
            "type": "subscribed",
            "filter": {},
        }
        hub.publish([posted, signed_up])
        frame = await communicator.receive_json_from(timeout=5)
        assert len(frame["events"]) == 2
        await communicator.disconnect()

    run(scenario)


def test_it_closes_with_4503_when_the_broker_is_unreachable(
    user: Any, hub: FanoutHub, settings: Any
) -> None:
    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{free_port()}"

    async def scenario() -> None:
        communicator = communicator_for(user)
        await communicator.connect(timeout=5)

        error = await communicator.receive_json_from(timeout=20)
        closing = await communicator.receive_output(timeout=5)

        assert error["type"] == "error"
        assert error["code"] == "broker_unavailable"
        assert closing == {"type": "websocket.close", "code": 4503}
        await communicator.disconnect(code=4503)  # as the server does after a close
        assert hub.clients == set()

    run(scenario)
