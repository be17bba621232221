"""Stream clients that the live tests share: a signed-in client of
``/ws/events/`` that reads from its socket only while the test consumes."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from websockets.asyncio.client import ClientConnection, connect

from tests.support.stack import Poster, Processes


def make_staff(username: str) -> None:
    User.objects.filter(username=username).update(is_staff=True)


@asynccontextmanager
async def slow_reader(
    processes: Processes, username: str, **options: Any
) -> AsyncIterator[ClientConnection]:
    """A signed-in stream client that reads from its socket only while the test
    consumes, with a small receive buffer (which also turns off the kernel's
    autotuning), so that it falls behind within a few MB; welcomed already.
    The user is an operator (staff), who sees every record on the topic.
    ``options`` go to ``websockets``' ``connect`` (e.g. ``ping_interval=None``)."""
    poster = Poster(processes.base_url, username)
    await sync_to_async(make_staff)(username)
    cookie = {"Cookie": f"sessionid={poster.client.cookies['sessionid']}"}
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.connect(("127.0.0.1", processes.port))
    async with connect(
        processes.base_url.replace("http", "ws") + "/ws/events/",
        sock=sock,
        origin=processes.base_url,
        additional_headers=cookie,
        max_queue=1,  # stop reading from the socket while the test does not consume
        max_size=None,
        **options,
    ) as client:
        assert json.loads(await client.recv())["type"] == "welcome"
        yield client
