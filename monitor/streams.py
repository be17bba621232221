"""The WebSocket stream at /ws/events/ (protocol in the README).

Server to client, JSON text frames:

- ``{"type": "welcome", "protocol": 1, "user": "..."}`` once the stream is live;
- ``{"type": "events", "events": [{"topic", "partition", "offset", "event"}]}``;
- ``{"type": "gap", "missed": N}`` when N events were dropped for this client;
  a client still behind after ``FANOUT_SLOW_CLOSE_SECONDS`` gets its gap notice
  and then a close with code 4008 (too slow);
- ``{"type": "pong"}`` and ``{"type": "error", "code": "...", "message": "..."}``.

Client to server: ``{"type": "ping"}``, and ``{"type": "subscribe", "filter":
{...}}`` (see :mod:`monitor.filters`), answered ``{"type": "subscribed",
"filter": {...}}`` or an error frame ``bad_filter``; the frames after the
answer carry only what the filter lets through. Anything else gets an error
frame and the connection stays open.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from .delivery import ClientStream, DirectStream
from .fanout import hub
from .filters import BadFilter, EventFilter
from .wire import DIRECT_SOCKET_EXTENSION

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
CLOSE_UNAUTHENTICATED = 4401
CLOSE_BROKER_UNAVAILABLE = 4503
MAX_CLIENT_FRAME_CHARS = 64 * 1024


class EventStreamConsumer(AsyncWebsocketConsumer):
    stream: ClientStream | DirectStream | None = None

    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.send_json(
                {"type": "error", "code": "unauthenticated", "message": "sign in first"}
            )
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        try:
            await hub.ensure_reader()
        except (ConnectionError, TimeoutError) as exc:
            logger.warning("stream refused: %s", exc)
            await self.send_error("broker_unavailable", str(exc))
            await self.close(code=CLOSE_BROKER_UNAVAILABLE)
            return
        await self.send_json(
            {"type": "welcome", "protocol": PROTOCOL_VERSION, "user": user.get_username()}
        )
        # Joined right after the welcome, with no await between: every event
        # the reader hands over from now on follows the welcome.
        socket = self.scope.get("extensions", {}).get(DIRECT_SOCKET_EXTENSION)
        if socket is not None:
            self.stream = DirectStream(
                socket,
                max_buffered_bytes=settings.FANOUT_CLIENT_MAX_BUFFER_BYTES,
                slow_close_seconds=settings.FANOUT_SLOW_CLOSE_SECONDS,
            )
        else:
            self.stream = ClientStream(
                self._send_text, max_frames=settings.FANOUT_CLIENT_QUEUE_FRAMES
            )
        hub.add(self.stream)

    async def disconnect(self, code: int) -> None:
        if self.stream is not None:
            hub.unregister(self.stream)
            self.stream = None

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
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
            await self.subscribe(message.get("filter"))
        else:
            await self.send_error("unknown_type", f"unknown message type {str(kind)[:64]!r}")

    async def subscribe(self, description: Any) -> None:
        """Replace this connection's filter; the frames after the answer follow it."""
        try:
            event_filter = EventFilter.from_message(description)
        except BadFilter as exc:
            await self.send_error("bad_filter", str(exc))
            return
        if self.stream is not None:
            self.stream.filter = None if event_filter.matches_everything else event_filter
        await self.send_json({"type": "subscribed", "filter": event_filter.describe()})

    async def send_error(self, code: str, message: str) -> None:
        await self.send_json({"type": "error", "code": code, "message": message})

    async def send_json(self, content: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(content))

    async def _send_text(self, frame: str) -> None:
        await self.send(text_data=frame)
