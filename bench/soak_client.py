"""The soak's dashboard client: one ``/ws/events/`` connection, every event checked by id.

It signs in with the session cookie of the trickle's user (and the site's
own ``Origin``, as the dashboard page does), reads every frame, and marks
each soak event it receives by its number (:func:`bench.soak_load.event_number`),
so what it never received is known exactly by id, not by a count; it also
notes each trickle post's event by post id. A duplicate is counted, never
marked twice.

When the server closes the connection (a ``4008`` for a client that fell
behind, a restart), it reconnects as the dashboard does, resuming from the
highest offset it saw per partition (the welcome's positions seed them),
with a short backoff for any close but ``4008``. ``gap`` frames and close
codes are recorded, not hidden.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Origin

from .soak_load import SOURCE, SoakSource, event_number

logger = logging.getLogger(__name__)

CLOSE_TOO_SLOW = 4008
RECONNECT_DELAY = 1.0


@dataclass
class Close:
    at: float  # epoch seconds
    code: int | None
    reason: str


@dataclass
class SoakClient:
    """What one dashboard client received, per event number and per post id."""

    ws_url: str
    origin: str
    session_id: str
    source: SoakSource
    post_source: str = "/eventsite"
    received_at: array[float] = field(init=False)
    received: int = 0
    duplicates: int = 0
    other_events: int = 0
    gap_missed: int = 0
    gap_frames: int = 0
    post_arrivals: dict[int, float] = field(default_factory=dict)
    closes: list[Close] = field(default_factory=list)
    connects: int = 0
    welcomes: int = 0
    positions: dict[int, int] = field(default_factory=dict)
    # Latencies (ms) of the soak events received since the sampler last took them.
    window: list[float] = field(default_factory=list)
    _low: int = 0  # every event below this number has been received

    def __post_init__(self) -> None:
        self.received_at = array("d", bytes(8 * self.source.total))

    def url(self) -> str:
        if not self.positions:
            return self.ws_url
        since = ",".join(f"{p}:{o}" for p, o in sorted(self.positions.items()))
        return f"{self.ws_url}?since={since}"

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected (reconnecting and resuming) until ``stop`` is set."""
        while not stop.is_set():
            try:
                code, reason = await self._connection(stop)
            except (OSError, TimeoutError, WebSocketException) as exc:
                code, reason = None, repr(exc)[:200]
            if stop.is_set():
                return
            self.closes.append(Close(time.time(), code, reason))
            logger.warning("dashboard client closed (%s %s); reconnecting", code, reason)
            if code != CLOSE_TOO_SLOW:
                await asyncio.sleep(RECONNECT_DELAY)

    async def _connection(self, stop: asyncio.Event) -> tuple[int | None, str]:
        """Read one connection until it ends or ``stop`` is set; its close code and reason."""
        async with connect(
            self.url(),
            origin=Origin(self.origin),
            additional_headers={"Cookie": f"sessionid={self.session_id}"},
            compression=None,
            max_size=None,
            open_timeout=30,
        ) as socket:
            self.connects += 1
            closer = asyncio.create_task(self._close_on(stop, socket))
            try:
                async for message in socket:
                    self.on_frame(json.loads(message), time.time())
            except ConnectionClosed:
                pass  # its code is read below, whoever closed it
            finally:
                closer.cancel()
            return socket.close_code, socket.close_reason or ""

    @staticmethod
    async def _close_on(stop: asyncio.Event, socket: ClientConnection) -> None:
        await stop.wait()
        await socket.close()

    def on_frame(self, frame: dict[str, Any], now: float) -> None:
        kind = frame.get("type")
        if kind == "welcome":
            self.welcomes += 1
            for partition, offset in frame.get("positions", {}).items():
                self.positions.setdefault(int(partition), int(offset))
        elif kind == "events":
            for item in frame["events"]:
                self.positions[item["partition"]] = item["offset"]
                self._on_event(item["event"], now)
        elif kind == "gap":
            self.gap_frames += 1
            self.gap_missed += int(frame.get("missed") or 0)
            logger.warning("gap frame: %s", frame)

    def _on_event(self, event: dict[str, Any], now: float) -> None:
        if event.get("source") == SOURCE:
            number = event_number(event["id"], self.source.prefix)
            if number is None or number >= self.source.total:
                self.other_events += 1
            elif self.received_at[number]:
                self.duplicates += 1
            else:
                self.received_at[number] = now
                self.received += 1
                self.window.append((now - self.source.times[number]) * 1000)
        elif event.get("source") == self.post_source and event.get("type") == "photo.posted":
            self.post_arrivals.setdefault(int(event["data"]["post_id"]), now)
        else:
            self.other_events += 1

    def take_window(self) -> list[float]:
        """The latencies recorded since the last call, and a new empty window."""
        taken, self.window = self.window, []
        return taken

    def oldest_missing_age(self, now: float) -> float:
        """Seconds since the oldest produced event this client has not received was
        made (0 when it has every one): how far behind the stream it is, at worst."""
        produced, received_at = self.source.produced, self.received_at
        while self._low < produced and received_at[self._low]:
            self._low += 1
        return now - self.source.times[self._low] if self._low < produced else 0.0

    def missing(self) -> list[int]:
        """Numbers of the events the broker acknowledged that this client never received."""
        refused = self.source.failed
        return [
            n for n in range(self.source.produced) if not self.received_at[n] and n not in refused
        ]
