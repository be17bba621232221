"""Who may hold a WebSocket, against a real daphne: tokens (header and
subprotocol), revocation and logout closing open sockets, the frame size
limit and the message rate limit."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from django.contrib.auth.models import User
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from monitor.models import ApiToken
from monitor.security.tokens import token_create, token_revoke
from tests.support.stack import CSRF_FIELD, Stack, signed_in_client

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def make_token(username: str) -> tuple[ApiToken, str]:
    user = User.objects.create_user(username=username, password="pw-a-long-one-1")
    return token_create(user=user, name="test program")


async def first_frame(ws: ClientConnection) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), 10))


async def closed(ws: ClientConnection, timeout: float = 10) -> tuple[list[dict], int | None]:
    """Frames until the server closes the connection, and its close code."""
    frames: list[dict] = []
    try:
        async with asyncio.timeout(timeout):
            async for raw in ws:
                frames.append(json.loads(raw))
    except ConnectionClosed:
        pass
    return frames, ws.close_code


def test_a_program_connects_with_a_bearer_header_and_no_origin(stack: Stack) -> None:
    _, token = make_token("header-program")

    async def scenario() -> dict:
        headers = {"Authorization": f"Bearer {token}"}
        async with connect(stack.ws_url + "/ws/events/", additional_headers=headers) as ws:
            return await first_frame(ws)

    welcome = asyncio.run(scenario())
    assert welcome["type"] == "welcome" and welcome["user"] == "header-program"


def test_a_browser_style_client_connects_with_the_bearer_subprotocol(stack: Stack) -> None:
    _, token = make_token("subprotocol-program")

    async def scenario() -> tuple[str | None, dict]:
        async with connect(
            stack.ws_url + "/ws/notices/",
            origin="http://elsewhere.example",
            subprotocols=["eventsite", f"bearer.{token}"],  # type: ignore[list-item]
        ) as ws:
            return ws.subprotocol, await first_frame(ws)

    chosen, welcome = asyncio.run(scenario())
    assert chosen == "eventsite"  # never the token
    assert welcome["type"] == "welcome" and "unread" in welcome


@pytest.mark.parametrize("how", ["unknown", "revoked"])
def test_a_bad_token_is_refused_with_4401(stack: Stack, how: str) -> None:
    row, token = make_token(f"bad-token-{how}")
    if how == "revoked":
        token_revoke(token=row)
    else:
        token = token[:-4] + "AAAA"

    async def scenario() -> tuple[list[dict], int | None]:
        headers = {"Authorization": f"Bearer {token}"}
        async with connect(stack.ws_url + "/ws/events/", additional_headers=headers) as ws:
            return await closed(ws)

    frames, code = asyncio.run(scenario())
    assert code == 4401
    assert [frame["code"] for frame in frames] == ["invalid_token"]


def test_revoking_a_token_closes_its_open_sockets(stack: Stack) -> None:
    row, token = make_token("revoked-while-open")

    async def scenario() -> tuple[list[dict], int | None, float]:
        headers = {"Authorization": f"Bearer {token}"}
        async with connect(stack.ws_url + "/ws/events/", additional_headers=headers) as ws:
            assert (await first_frame(ws))["type"] == "welcome"
            await asyncio.to_thread(token_revoke, token=row)
            revoked_at = time.monotonic()
            frames, code = await closed(ws)
            return frames, code, time.monotonic() - revoked_at

    frames, code, seconds = asyncio.run(scenario())
    print(f"socket closed {seconds * 1000:.0f} ms after the token was revoked")
    assert code == 4401 and frames[-1]["code"] == "signed_out"
    assert seconds < 1.0


def logout(client: httpx.Client, stack: Stack) -> None:
    csrf = CSRF_FIELD.search(client.get("/").text).group(1)
    response = client.post(
        "/accounts/logout/",
        data={"csrfmiddlewaretoken": csrf},
        headers={"Referer": stack.base_url + "/"},
    )
    assert response.status_code == 302, response.text


def test_logging_out_closes_that_sessions_sockets_within_a_second(stack: Stack) -> None:
    leaving = signed_in_client(stack, "leaving-user", "a-long-pass-phrase-9")
    staying = httpx.Client(base_url=stack.base_url, timeout=10)  # the same user, elsewhere
    csrf = CSRF_FIELD.search(staying.get("/accounts/login/").text).group(1)
    staying.post(
        "/accounts/login/",
        data={
            "username": "leaving-user",
            "password": "a-long-pass-phrase-9",
            "csrfmiddlewaretoken": csrf,
        },
        headers={"Referer": stack.base_url + "/accounts/login/"},
    )
    assert staying.cookies["sessionid"] != leaving.cookies["sessionid"]

    def open_socket(client: httpx.Client, path: str):  # type: ignore[no-untyped-def]
        return connect(
            stack.ws_url + path,
            origin=stack.origin,
            additional_headers={"Cookie": f"sessionid={client.cookies['sessionid']}"},
        )

    async def scenario() -> tuple[list[tuple[list[dict], int | None]], float, bool]:
        async with (
            open_socket(leaving, "/ws/events/") as events,
            open_socket(leaving, "/ws/notices/") as notices,
            open_socket(staying, "/ws/events/") as other,
        ):
            for ws in (events, notices, other):
                assert (await first_frame(ws))["type"] == "welcome"
            await asyncio.to_thread(logout, leaving, stack)
            logged_out = time.monotonic()
            results = await asyncio.gather(closed(events), closed(notices))
            seconds = time.monotonic() - logged_out
            await other.send(json.dumps({"type": "ping"}))
            pong = await first_frame(other)
            return list(results), seconds, pong == {"type": "pong"}

    results, seconds, other_alive = asyncio.run(scenario())
    print(f"both sockets closed {seconds * 1000:.0f} ms after the logout answered")
    for frames, code in results:
        assert code == 4401 and frames[-1]["code"] == "signed_out"
    assert seconds < 1.0
    assert other_alive  # another session of the same user stays signed in


def test_a_frame_over_64_kib_is_refused_before_the_consumer(stack: Stack) -> None:
    _, token = make_token("big-framer")

    async def scenario() -> tuple[dict, list[dict], int | None]:
        headers = {"Authorization": f"Bearer {token}"}
        async with connect(stack.ws_url + "/ws/events/", additional_headers=headers) as ws:
            await first_frame(ws)
            # Just under the limit: the consumer reads it and answers.
            await ws.send(json.dumps({"type": "ping", "pad": "x" * (60 * 1024)}))
            answer = await first_frame(ws)
            await ws.send(json.dumps({"type": "ping", "pad": "x" * (64 * 1024)}))
            frames, code = await closed(ws)
            return answer, frames, code

    answer, frames, code = asyncio.run(scenario())
    assert answer == {"type": "pong"}
    assert code == 1009  # message too big, from daphne: the consumer never saw it
    assert frames == []


def test_a_flood_of_messages_is_rate_limited_then_closed(stack: Stack) -> None:
    _, token = make_token("flooder")

    async def scenario() -> tuple[list[dict], int | None]:
        headers = {"Authorization": f"Bearer {token}"}
        async with connect(stack.ws_url + "/ws/events/", additional_headers=headers) as ws:
            await first_frame(ws)
            ping = json.dumps({"type": "ping"})
            try:
                for _ in range(1000):
                    await ws.send(ping)
            except ConnectionClosed:
                pass
            return await closed(ws)

    frames, code = asyncio.run(scenario())
    pongs = [frame for frame in frames if frame["type"] == "pong"]
    errors = [frame for frame in frames if frame["type"] == "error"]
    assert code == 4429
    assert {error["code"] for error in errors} == {"rate_limited"}
    assert "closed" in errors[-1]["message"]
    # Told when a run of dropped messages starts, not once per dropped message.
    assert 2 <= len(errors) <= 5
    assert 40 <= len(pongs) < 100  # the burst, and what the rate refilled meanwhile
