"""The soak's load: events produced to the topic as another service would, and a
trickle of photo posts through the site's own HTTP endpoint.

:class:`SoakSource` produces valid ``photo.posted`` envelopes (the product's
:func:`~monitor.events.schema.build_event`, the same shape as
:mod:`bench.source`) with an aiokafka producer made by
:func:`monitor.kafka.clients.make_producer` (``acks="all"``) but batching as
the soak is told (``linger_ms``, another service's choice), evenly spaced at
a fixed rate. Event number ``n`` has the id ``<run prefix>-<n as 12 hex
digits>``, so a receiver can tell exactly which events it has by id, and
``times[n]`` is the envelope's ``time`` (as epoch seconds), stamped as the
envelope is built.

:class:`PhotoTrickle` signs up a new user through ``/accounts/signup/``
(CSRF token from the form, as a browser) and posts a small JPEG every few
seconds through ``POST /posts/new/`` (multipart, session and CSRF). The
default interval keeps under the default limit of 10 posts a minute, so
nothing in the site's settings has to change.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from array import array
from datetime import UTC, datetime
from functools import partial

import httpx
from django.conf import settings

from monitor.kafka import clients as kafka

from .posts import Poster, PostFailure
from .soak_stack import SoakStack
from .source import event_bytes
from .stack import Server

logger = logging.getLogger(__name__)

SOURCE = "/eventsite-soak"
# Unacknowledged events allowed before the source waits for the broker.
MAX_IN_FLIGHT = 20_000


def run_prefix() -> str:
    """The first 23 characters of every event id of one run (a UUID's first four groups)."""
    digits = secrets.token_hex(9)
    return f"{digits[:8]}-{digits[8:12]}-4{digits[12:15]}-8{digits[15:18]}"


def event_number(event_id: str, prefix: str) -> int | None:
    """The number of one of this run's events, from its id; None for any other id."""
    if len(event_id) != 36 or not event_id.startswith(prefix):
        return None
    return int(event_id[24:], 16)


class SoakSource:
    """Produces ``total`` numbered events at a steady rate and counts acknowledgements."""

    def __init__(self, bootstrap_servers: str, topic: str, total: int, *, linger_ms: int) -> None:
        self.topic = topic
        self.total = total
        self.prefix = run_prefix()
        self.times = array("d", bytes(8 * total))
        self.produced = 0
        self.acknowledged = 0
        self.failed: set[int] = set()  # numbers of the events the broker refused
        self.first_error: BaseException | None = None
        # Built where every Kafka client of the project is (monitor.kafka.clients),
        # pointed at the soak's broker, with the batching another service chooses.
        settings.KAFKA_BOOTSTRAP_SERVERS = bootstrap_servers
        self._producer = kafka.make_producer(
            client_id="soak-source",
            enable_idempotence=False,
            linger_ms=linger_ms,
            request_timeout_ms=30_000,
        )

    async def start(self) -> SoakSource:
        await self._producer.start()
        return self

    async def stop(self) -> None:
        await self._producer.stop()

    def _envelope(self, number: int) -> tuple[bytes, bytes]:
        now = time.time()
        self.times[number] = now
        return event_bytes(
            number,
            moment=datetime.fromtimestamp(now, UTC),
            name="soak",
            source=SOURCE,
            event_id=uuid.UUID(f"{self.prefix}-{number:012x}"),
        )

    def _settled(self, number: int, future: asyncio.Future[object]) -> None:
        if future.cancelled() or future.exception() is not None:
            self.failed.add(number)
            if self.first_error is None and not future.cancelled():
                self.first_error = future.exception()
        else:
            self.acknowledged += 1

    async def run(self, rate: float, deadline: float) -> None:
        """Send every event, ``rate`` a second, until all are sent or the loop's clock
        passes ``deadline``; then wait (until the deadline at most) for the broker's
        acknowledgements. A source that falls behind its schedule sends what is due at
        once, so the rate over the run holds while the broker keeps up."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        while self.produced < self.total and loop.time() < deadline:
            due = min(self.total, int((loop.time() - start) * rate) + 1)
            while self.produced < due:
                key, value = self._envelope(self.produced)
                future = await self._producer.send(self.topic, value, key=key)
                future.add_done_callback(partial(self._settled, self.produced))
                self.produced += 1
            while self.unsettled > MAX_IN_FLIGHT:
                if loop.time() >= deadline:
                    return
                await asyncio.sleep(0.01)
            await asyncio.sleep(max(0.0, start + self.produced / rate - loop.time()))
        while self.unsettled and loop.time() < deadline:
            await asyncio.sleep(0.05)

    @property
    def unsettled(self) -> int:
        """Events handed to the producer that the broker has neither acknowledged nor refused."""
        return self.produced - self.acknowledged - len(self.failed)


class PhotoTrickle:
    """A signed-up user posting a photo every ``interval`` seconds over HTTP."""

    def __init__(self, stack: SoakStack, interval: float) -> None:
        self.stack = stack
        self.interval = interval
        self.username = f"soak-{secrets.token_hex(4)}"
        self.session_id = ""
        self.sent_at: dict[int, float] = {}  # post id -> epoch seconds the request was sent
        self.refused: list[str] = []
        self._poster: Poster | None = None

    async def sign_up(self) -> PhotoTrickle:
        """Sign up through the form and keep the session; then get the post form's CSRF token."""
        async with httpx.AsyncClient(base_url=self.stack.base_url, timeout=30) as client:
            form = await client.get("/accounts/signup/")
            form.raise_for_status()
            answer = await client.post(
                "/accounts/signup/",
                data={
                    "username": self.username,
                    "password": secrets.token_urlsafe(18),
                    "csrfmiddlewaretoken": client.cookies["csrftoken"],
                },
            )
            if answer.status_code != 302 or "sessionid" not in client.cookies:
                raise RuntimeError(f"sign-up answered {answer.status_code}: {answer.text[:300]}")
            self.session_id = client.cookies["sessionid"]
        server = Server("web", self.stack.port, self.stack.process, self.stack.log)
        self._poster = Poster(server, self.session_id)
        await self._poster.prepare()
        return self

    async def run(self, until: float) -> None:
        """Post every ``interval`` seconds until the loop's clock passes ``until``.
        A refused post is recorded and the trickle goes on."""
        assert self._poster is not None, "sign_up() first"
        loop = asyncio.get_running_loop()
        number = 0
        while loop.time() < until:
            number += 1
            sent = time.time()
            try:
                timing = await self._poster.post(f"soak photo {self.username} {number}")
            except PostFailure as exc:
                logger.warning("post %d refused: %s", number, exc)
                self.refused.append(str(exc)[:300])
            else:
                self.sent_at[timing.post_id] = sent
            await asyncio.sleep(max(0.0, min(self.interval, until - loop.time())))

    async def close(self) -> None:
        if self._poster is not None:
            await self._poster.close()
