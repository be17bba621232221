"""The WebSocket stream at /ws/events/: the last step of an event's path to a client.

docs/websocket-protocol.md is the reference; the frames are built in
:mod:`monitor.live.protocol`. Once signed in (:mod:`monitor.live.socket_auth`)
a connection gets a ``welcome`` whose positions are, per partition, the last
offset before the events that follow; then, in order, ``events`` frames
(``"replay": true`` while replaying), ``live`` after a replay, ``gap`` for
events that will not come, ``subscribed``, ``pong`` and ``error`` frames.
Every frame after the welcome goes through the connection's
:class:`~monitor.live.client.LiveClient`, so control frames stay in order
with the events.

Client to server: ``{"type": "ping"}``, and ``{"type": "subscribe", "filter":
{...}}`` (see :mod:`monitor.live.filters`), optionally with ``"since"`` or
``"history"`` (see :mod:`monitor.live.replay_plan`); the same can be given in
the query string when connecting (``?types=a,b&text=pier&since=0:17,1:5``).
A bad one there is refused with :data:`~monitor.live.protocol.CLOSE_BAD_REQUEST`;
anything else gets an error frame and the connection stays open (see
:mod:`monitor.live.json_socket`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings

from monitor.live import presence, socket_auth
from monitor.live.client import ClientGone, LiveClient
from monitor.live.delivery import ClientStream, DirectStream
from monitor.live.filters import BadFilter, EventFilter
from monitor.live.hub import hub
from monitor.live.items import position_key, watched_topics
from monitor.live.json_socket import JsonSocket
from monitor.live.protocol import (
    CLOSE_BAD_REQUEST,
    CLOSE_UNAVAILABLE,
    subscribed_frame,
    welcome_frame,
)
from monitor.live.replay import replay_then_live
from monitor.live.replay_plan import BadReplay, ReplayRequest
from monitor.live.socket_auth import accept_signed_in
from monitor.live.wire import DIRECT_SOCKET_EXTENSION

logger = logging.getLogger(__name__)

FILTER_PARAMS = ("actor", "subject", "text", "kind")
LIST_PARAMS = ("types", "topics")


class EventStreamConsumer(JsonSocket):
    client: LiveClient | None = None
    replay_task: asyncio.Task[None] | None = None
    watcher_id: int | None = None  # counted as watching (see monitor.live.presence)
    sees_everything = False  # staff (or everyone, with the dashboard open to all)

    async def connect(self) -> None:
        user = await accept_signed_in(self)
        if user is None:
            return
        try:
            event_filter, request = requested_at_connect(self.scope.get("query_string", b""))
        except (BadFilter, BadReplay) as exc:
            code = "bad_filter" if isinstance(exc, BadFilter) else "bad_replay"
            await self.send_error(code, str(exc))
            await self.close(code=CLOSE_BAD_REQUEST)
            return
        try:
            await hub.ensure_reader()
        except (ConnectionError, TimeoutError) as exc:
            logger.warning("stream refused: %s", exc)
            await self.send_error("broker_unavailable", str(exc))
            await self.close(code=CLOSE_UNAVAILABLE)
            return
        staff = bool(getattr(user, "is_staff", False))
        self.sees_everything = staff or not settings.DASHBOARD_STAFF_ONLY
        client = self.client = self._open_client()
        client.filter = self._scoped(event_filter)
        # From here to joining the hub there is no await: the welcome's
        # positions are exactly where this client's events start.
        topic = settings.KAFKA_EVENTS_TOPIC
        positions = {position_key(tp): offset for tp, offset in hub.line.positions().items()}
        welcome = welcome_frame(
            user=user.get_username(), topic=topic, topics=watched_topics(), positions=positions
        )
        client.send_now(welcome)
        if request is None:
            client.floor = hub.line.ends()
            hub.add(client)
        else:
            self.start_replay(request)
        self.watcher_id = user.pk
        await presence.watcher_joined(user.pk)

    def _scoped(self, event_filter: EventFilter) -> EventFilter | None:
        """``event_filter`` within what this connection's user may see (None: everything)."""
        if not self.sees_everything:
            return dataclasses.replace(event_filter, public_only=True)
        return None if event_filter.matches_everything else event_filter

    def _open_client(self) -> LiveClient:
        socket = self.scope.get("extensions", {}).get(DIRECT_SOCKET_EXTENSION)
        if socket is not None:
            return DirectStream(
                socket,
                max_buffered_bytes=settings.FANOUT_CLIENT_MAX_BUFFER_BYTES,
                slow_close_seconds=settings.FANOUT_SLOW_CLOSE_SECONDS,
            )
        return ClientStream(
            self._send_text, max_frames=settings.FANOUT_CLIENT_QUEUE_FRAMES, close=self._close_with
        )

    async def disconnect(self, code: int) -> None:
        socket_auth.sockets.remove(self)
        await self.stop_replay()
        if self.client is not None:
            hub.unregister(self.client)
            self.client = None
        if self.watcher_id is not None:
            await presence.watcher_left(self.watcher_id)
            self.watcher_id = None

    async def handle(self, kind: Any, message: dict[str, Any]) -> bool:
        if kind == "subscribe":
            await self.subscribe(message)
            return True
        return False

    async def subscribe(self, message: dict[str, Any]) -> None:
        """Replace this connection's filter (and replay, if asked); the frames
        after the answer follow the new subscription."""
        try:
            event_filter = EventFilter.from_message(message.get("filter"))
            request = ReplayRequest.from_message(message)
        except BadFilter as exc:
            await self.send_error("bad_filter", str(exc))
            return
        except BadReplay as exc:
            await self.send_error("bad_replay", str(exc))
            return
        client = self.client
        if client is None:
            return
        if request is not None:
            await self.stop_replay()
            hub.detach(client)
            client.floor = None
            client.announce_missed()  # owed from before: told now, not lost
        client.filter = self._scoped(event_filter)
        client.send_now(subscribed_frame(event_filter.describe()))
        if request is not None:
            self.start_replay(request)

    def start_replay(self, request: ReplayRequest) -> None:
        self.replay_task = asyncio.create_task(self._replay(request))

    async def stop_replay(self) -> None:
        task, self.replay_task = self.replay_task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _replay(self, request: ReplayRequest) -> None:
        client = self.client
        assert client is not None
        hub.replaying.add(client)  # closed with the others if the broker goes silent
        try:
            await replay_then_live(hub, client, request)
        except ClientGone:
            pass
        except Exception as exc:  # noqa: BLE001 - the broker failed: the client is told
            logger.warning("replay failed: %s", exc)
            await self.send_error("replay_failed", f"the events could not be read: {exc}")
            await self.close(code=CLOSE_UNAVAILABLE)
        finally:
            hub.replaying.discard(client)

    async def send_frame(self, text: str) -> None:
        if self.client is not None:
            self.client.send_now(text)  # in order with the events written to the client
        else:
            await self.send(text_data=text)

    async def _send_text(self, frame: str) -> None:
        await self.send(text_data=frame)

    async def _close_with(self, code: int) -> None:
        await self.close(code=code)


def requested_at_connect(query_string: bytes) -> tuple[EventFilter, ReplayRequest | None]:
    """The filter and replay a client asked for in its connection's query string."""
    params = parse_qs(query_string.decode("latin-1"))
    described: dict[str, Any] = {}
    for name in LIST_PARAMS:
        if params.get(name):
            described[name] = [t for t in ",".join(params[name]).split(",") if t]
    for name in FILTER_PARAMS:
        if params.get(name):
            described[name] = params[name][-1]
    if params.get("verified"):
        described["verified"] = {"true": True, "false": False}.get(params["verified"][-1], "?")
    return EventFilter.from_message(described), ReplayRequest.from_query(params)
