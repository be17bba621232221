"""The WebSocket stream at /ws/events/ (reference: docs/websocket-protocol.md).

Server to client, JSON text frames:

- ``{"type": "welcome", "protocol": 1, "user": "...", "topic": "...",
  "positions": {"0": 16}}`` once the stream is live: per partition, the last
  offset before the events that follow;
- ``{"type": "events", "sent": <ms>, "events": [{"topic", "partition",
  "offset", "event"}]}``, with ``"replay": true`` while replaying;
- ``{"type": "live", "replayed": N}`` after a replay (history or resume);
- ``{"type": "gap", "missed": N, "reason": "..."}`` for events that will not
  come: ``slow`` (dropped while this client was behind; one still behind
  after ``FANOUT_SLOW_CLOSE_SECONDS`` is closed with code 4008), or, before
  a replay, ``expired``, ``limit`` or ``reset`` (see :mod:`monitor.live.replay`);
- ``{"type": "subscribed", "filter": {...}}``, ``{"type": "pong"}`` and
  ``{"type": "error", "code": "...", "message": "..."}``.

Client to server: ``{"type": "ping"}``, and ``{"type": "subscribe", "filter":
{...}}`` (see :mod:`monitor.live.filters`), optionally with ``"since"`` or
``"history"`` (see :mod:`monitor.live.replay`); the same can be given in the
query string when connecting (``?types=a,b&text=pier&since=0:17,1:5``).
Anything else gets an error frame and the connection stays open.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from monitor.live import presence, socket_auth
from monitor.live.delivery import ClientGone, ClientStream, DirectStream, gap_notice
from monitor.live.filters import BadFilter, EventFilter
from monitor.live.hub import hub
from monitor.live.message_rate import admitted
from monitor.live.replay import BadReplay, ReplayRequest, replay_then_live
from monitor.live.socket_auth import accept_signed_in
from monitor.live.wire import DIRECT_SOCKET_EXTENSION

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
CLOSE_BAD_REQUEST = 4400
CLOSE_BROKER_UNAVAILABLE = 4503
MAX_CLIENT_FRAME_CHARS = 64 * 1024
FILTER_PARAMS = ("actor", "subject", "text")


class EventStreamConsumer(AsyncWebsocketConsumer):
    stream: ClientStream | DirectStream | None = None
    replay_task: asyncio.Task[None] | None = None
    watcher_id: int | None = None  # counted as watching (see monitor.live.presence)

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
            await self.close(code=CLOSE_BROKER_UNAVAILABLE)
            return
        stream = self.stream = self._open_stream()
        stream.filter = None if event_filter.matches_everything else event_filter
        # From here to joining the hub there is no await: the welcome's
        # positions are exactly where this client's events start.
        welcome = {
            "type": "welcome",
            "protocol": PROTOCOL_VERSION,
            "user": user.get_username(),
            "topic": settings.KAFKA_EVENTS_TOPIC,
            "positions": {str(p): offset for p, offset in hub.live_positions().items()},
        }
        stream.send_now(json.dumps(welcome))
        if request is None:
            stream.floor = dict(hub.received_end)
            hub.add(stream)
        else:
            self.start_replay(request)
        self.watcher_id = user.pk
        await presence.watcher_joined(user.pk)

    def _open_stream(self) -> ClientStream | DirectStream:
        socket = self.scope.get("extensions", {}).get(DIRECT_SOCKET_EXTENSION)
        if socket is not None:
            return DirectStream(
                socket,
                max_buffered_bytes=settings.FANOUT_CLIENT_MAX_BUFFER_BYTES,
                slow_close_seconds=settings.FANOUT_SLOW_CLOSE_SECONDS,
            )
        return ClientStream(self._send_text, max_frames=settings.FANOUT_CLIENT_QUEUE_FRAMES)

    async def disconnect(self, code: int) -> None:
        socket_auth.sockets.remove(self)
        await self.stop_replay()
        if self.stream is not None:
            hub.unregister(self.stream)
            self.stream = None
        if self.watcher_id is not None:
            await presence.watcher_left(self.watcher_id)
            self.watcher_id = None

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not await admitted(self):
            return
        if text_data is None:
            await self.send_error("binary_unsupported", "send JSON text frames")
            return
        if len(text_data) > MAX_CLIENT_FRAME_CHARS:
            await self.send_error(
                "too_large", f"frames are limited to {MAX_CLIENT_FRAME_CHARS} characters"
            )
            return
        try:
            message = json.loads(text_data)
        except json.JSONDecodeError as exc:
            await self.send_error("malformed", f"not JSON: {exc.msg}")
            return
        if not isinstance(message, dict):
            await self.send_error("not_an_object", "a message is a JSON object with a type")
            return
        kind = message.get("type")
        if kind == "ping":
            await self.send_json({"type": "pong"})
        elif kind == "subscribe":
            await self.subscribe(message)
        else:
            await self.send_error("unknown_type", f"unknown message type {str(kind)[:64]!r}")

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
        stream = self.stream
        if stream is None:
            return
        if request is not None:
            await self.stop_replay()
            hub.detach(stream)
            stream.floor = None
            if stream.missed:  # owed from before: told now, not lost
                stream.send_now(gap_notice(stream.missed))
                stream.missed = 0
        stream.filter = None if event_filter.matches_everything else event_filter
        stream.send_now(json.dumps({"type": "subscribed", "filter": event_filter.describe()}))
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
        assert self.stream is not None
        try:
            await replay_then_live(hub, self.stream, request)
        except ClientGone:
            pass
        except Exception as exc:  # noqa: BLE001 - the broker failed: the client is told
            logger.warning("replay failed: %s", exc)
            await self.send_error("replay_failed", f"the events could not be read: {exc}")
            await self.close(code=CLOSE_BROKER_UNAVAILABLE)

    async def send_error(self, code: str, message: str) -> None:
        await self.send_json({"type": "error", "code": code, "message": message})

    async def send_json(self, content: dict[str, Any]) -> None:
        text = json.dumps(content)
        if self.stream is not None:
            self.stream.send_now(text)  # in order with the events written to the stream
        else:
            await self.send(text_data=text)

    async def _send_text(self, frame: str) -> None:
        await self.send(text_data=frame)


def requested_at_connect(query_string: bytes) -> tuple[EventFilter, ReplayRequest | None]:
    """The filter and replay a client asked for in its connection's query string."""
    params = parse_qs(query_string.decode("latin-1"))
    described: dict[str, Any] = {}
    if params.get("types"):
        described["types"] = [t for t in ",".join(params["types"]).split(",") if t]
    for name in FILTER_PARAMS:
        if params.get(name):
            described[name] = params[name][-1]
    return EventFilter.from_message(described), ReplayRequest.from_query(params)
