"""What every WebSocket endpoint of the site does with a client's message first.

Both streams (:mod:`monitor.live.event_socket`, :mod:`monitor.live.notice_socket`)
take small JSON text messages with a ``type``. :class:`JsonSocket` checks
each one in this order, answering the first check it fails with an error
frame and keeping the connection open:

1. the client's message rate (:mod:`monitor.live.message_rate`): over it,
   the message is dropped; the first of a run is answered with
   ``rate_limited``, and a client that keeps flooding is closed with
   :data:`~monitor.live.protocol.CLOSE_RATE_LIMITED`;
2. a text frame, not binary, of at most ``max_message_chars`` characters;
3. JSON (``malformed`` otherwise), and an object;
4. ``ping`` is answered with ``pong``; any other type goes to
   :meth:`JsonSocket.handle`, and one it does not know gets ``unknown_type``.

The refusals of step 2 and 3 are methods a subclass may answer in its own
words. Every frame goes out through :meth:`JsonSocket.send_frame`, so a
subclass that orders its frames (the event stream) routes them all.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from monitor.live.message_rate import MessageRate, Verdict
from monitor.live.protocol import CLOSE_RATE_LIMITED, error_frame, pong_frame


class JsonSocket(AsyncWebsocketConsumer):  # type: ignore[misc]  # channels ships no type information
    """A WebSocket consumer of JSON messages; subclasses handle their own types."""

    max_message_chars: ClassVar[int] = 64 * 1024
    message_rate: MessageRate | None = None

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not await self._admitted():
            return
        if text_data is None:
            await self.refuse_binary()
            return
        if len(text_data) > self.max_message_chars:
            await self.refuse_too_large()
            return
        try:
            message = json.loads(text_data)
        except json.JSONDecodeError as exc:
            await self.send_error("malformed", f"not JSON: {exc.msg}")
            return
        if not isinstance(message, dict):
            await self.refuse_non_object()
            return
        kind = message.get("type")
        if kind == "ping":
            await self.send_frame(pong_frame())
        elif not await self.handle(kind, message):
            await self.refuse_unknown_type(kind)

    async def handle(self, kind: Any, message: dict[str, Any]) -> bool:
        """Act on a message of type ``kind`` (never ``ping``); False if this
        endpoint has no such message."""
        return False

    async def refuse_binary(self) -> None:
        await self.send_error("binary_unsupported", "send JSON text frames")

    async def refuse_too_large(self) -> None:
        await self.send_error(
            "too_large", f"frames are limited to {self.max_message_chars} characters"
        )

    async def refuse_non_object(self) -> None:
        await self.send_error("not_an_object", "a message is a JSON object with a type")

    async def refuse_unknown_type(self, kind: Any) -> None:
        await self.send_error("unknown_type", f"unknown message type {str(kind)[:64]!r}")

    async def send_error(self, code: str, message: str) -> None:
        await self.send_frame(error_frame(code, message))

    async def send_frame(self, text: str) -> None:
        """Send one JSON text frame to the client."""
        await self.send(text_data=text)

    async def _admitted(self) -> bool:
        """Whether the message that just arrived is within the client's rate; if
        not, the client is told (once per run of dropped messages) or closed."""
        rate = self.message_rate
        if rate is None:
            rate = self.message_rate = MessageRate(
                settings.WS_MESSAGES_PER_SECOND, settings.WS_MESSAGE_BURST
            )
        verdict = rate.judge()
        if verdict is Verdict.TAKE:
            return True
        if verdict is Verdict.DROP_AND_TELL:
            await self.send_error(
                "rate_limited",
                f"at most {rate.per_second:g} messages a second (bursts of {rate.burst}): "
                "this message and those over the rate after it are dropped",
            )
        elif verdict is Verdict.CLOSE:
            await self.send_error("rate_limited", "too many messages: the connection is closed")
            await self.close(code=CLOSE_RATE_LIMITED)
        return False
