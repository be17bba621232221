"""The event source every scenario shares: valid ``photo.posted`` envelopes on a
topic, signed with the site's key.

Envelopes are built with the product's own :func:`monitor.events.schema.build_event`
(so every consumer accepts them) and sent with the product's producer
settings (``acks="all"``). Each event's ``time`` is taken as it is built,
right before it is handed to the producer: "event time to receipt" starts
there. Keys cycle over a few actors so that all partitions carry events.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from monitor.events import signing
from monitor.events.schema import build_event, encode_event
from monitor.kafka import clients as kafka

ACTORS = 24
CAPTION = "benchmark photo at the pier, golden hour, long exposure"


def event_bytes(
    number: int,
    *,
    moment: datetime | None = None,
    name: str = "bench",
    source: str = "/eventsite-bench",
    event_id: uuid.UUID | None = None,
) -> tuple[bytes, bytes]:
    """One envelope (key, value), about 420 bytes like a real photo.posted;
    ``name`` marks its author and photo as the run's own."""
    actor = str(number % ACTORS + 1)
    event = build_event(
        type="photo.posted",
        subject=f"posts/{number}",
        actor=actor,
        data={
            "post_id": number,
            "author_id": int(actor),
            "author": f"{name}{actor}",
            "caption": CAPTION,
            "photo_url": f"/media/photos/{name}-{number:08d}.jpg",
        },
        source=source,
        time=moment or datetime.now(UTC),
        id=event_id,
    )
    return actor.encode(), encode_event(event)


class EventSource:
    """Produces events to one topic and counts what the broker acknowledged."""

    def __init__(self, topic: str, *, linger_ms: int = 1) -> None:
        self.topic = topic
        self.linger_ms = linger_ms
        self.produced = 0
        self.acknowledged = 0
        self._producer: AIOKafkaProducer | None = None
        self._pending: list[asyncio.Future] = []

    async def start(self) -> EventSource:
        self._producer = kafka.make_producer(linger_ms=self.linger_ms)
        await self._producer.start()
        return self

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def send(self, count: int) -> None:
        """Hand ``count`` new events to the producer; returns before the acknowledgements."""
        assert self._producer is not None
        for _ in range(count):
            key, value = event_bytes(self.produced)
            # Signed as the site signs its own, so consumers verify as they would.
            headers = [signing.sign(value)]
            delivery = await self._producer.send(self.topic, value, key=key, headers=headers)
            self._pending.append(delivery)
            self.produced += 1
        if len(self._pending) > 5000:
            await self.flush()

    async def flush(self, timeout: float = 30.0) -> None:
        """Wait for every acknowledgement; raise if the broker refused any."""
        pending, self._pending = self._pending, []
        async with asyncio.timeout(timeout):
            await asyncio.gather(*pending)
        self.acknowledged += len(pending)

    async def at_rate(self, rate: float, duration: float) -> int:
        """Send ``rate`` events per second, evenly spaced, for ``duration`` seconds."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        total = int(rate * duration)
        sent = 0
        while sent < total:
            due = min(total, int((loop.time() - start) * rate) + 1)
            if due > sent:
                await self.send(due - sent)
                sent = due
            next_at = start + sent / rate
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        await self.flush()
        return sent


async def closed_loop(
    source: EventSource,
    *,
    delivered: Callable[[], int],
    window: int,
    duration: float,
    poll: float = 0.002,
) -> None:
    """Produce as fast as the clients receive, for ``duration`` seconds.

    At most ``window`` events are ever ahead of the slowest client
    (``delivered()`` returns its count), so the server is kept busy without
    an unbounded backlog. Returns without waiting for acknowledgements.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration
    while loop.time() < deadline:
        ahead = source.produced - delivered()
        if ahead < window:
            await source.send(window - ahead)
        await asyncio.sleep(poll)
