"""Photo posts through the real HTTP endpoint: throughput, request overhead of event
publishing, and the time from a post request to its frame on a dashboard.

Posts are multipart ``POST /posts/new/`` requests with a small JPEG, a
caption, a session cookie and a CSRF token, answered ``201`` with the post
id (``Accept: application/json``), sent over keep-alive connections by the
minimal client in :mod:`bench.http` so that the posters take little of the
CPU the server is measured on. The dashboard is an ordinary
``websockets`` client of /ws/events/, as a browser's would be; it must see
the ``photo.posted`` event of every post made while it was connected, in
offset order per partition.
"""

from __future__ import annotations

import asyncio
import io
import json
import statistics
import time
import uuid
from dataclasses import dataclass, field

import httpx
from PIL import Image
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

from .clients import ClientFailure
from .http import HttpConnection, ResponseError
from .report import ScenarioResult
from .stack import HOST, Server
from .usage import CpuMeter

POSTERS = 8
SCREEN_RATE = 50
SCREEN_SECONDS = 10.0
# Well below saturation (about 60 posts/s here), so that request time is the
# work of a request and not the queue in front of it, which near saturation
# swings wildly with any small extra cost.
OVERHEAD_RATE = 20
OVERHEAD_BLOCK_SECONDS = 4.0
OVERHEAD_BLOCKS = 4  # per server, alternating on/off so drift hits both alike
THROUGHPUT_CONCURRENCY = 16
THROUGHPUT_SECONDS = 10.0
DELIVERY_SECONDS = 20.0
REQUEST_TIMEOUT = 30.0
# Names of the two servers in the CPU figures of the overhead step.
SERVER_ON, SERVER_OFF = "server", "server, publishing off"


def small_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), "teal").save(buffer, "JPEG")
    return buffer.getvalue()


JPEG = small_jpeg()


class PostFailure(AssertionError):
    pass


@dataclass
class PostTiming:
    post_id: int
    started: float  # perf_counter when the request was sent
    seconds: float  # request time


@dataclass(frozen=True)
class PhotoPostRequest:
    """The bytes of one poster's photo post, built once; only the caption varies."""

    head: bytes  # request line and headers, up to the Content-Length value
    before_caption: bytes
    after_caption: bytes  # the rest of the caption part, the photo part and the end

    @classmethod
    def build(cls, server: Server, session_id: str, csrf_token: str) -> PhotoPostRequest:
        boundary = uuid.uuid4().hex
        head = (
            "POST /posts/new/ HTTP/1.1\r\n"
            f"Host: {HOST}:{server.port}\r\n"
            "Accept: application/json\r\n"
            f"Cookie: sessionid={session_id}; csrftoken={csrf_token}\r\n"
            f"X-CSRFToken: {csrf_token}\r\n"
            f"Referer: {server.base_url}/posts/new/\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            "Content-Length: "
        )
        before_caption = f'--{boundary}\r\nContent-Disposition: form-data; name="caption"\r\n\r\n'
        photo_part = (
            f"\r\n--{boundary}\r\n"
            'Content-Disposition: form-data; name="photo"; filename="photo.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        )
        return cls(
            head.encode(),
            before_caption.encode(),
            photo_part.encode() + JPEG + f"\r\n--{boundary}--\r\n".encode(),
        )

    def with_caption(self, caption: str) -> bytes:
        text = caption.encode()
        length = len(self.before_caption) + len(text) + len(self.after_caption)
        return b"".join(
            (self.head, b"%d\r\n\r\n" % length, self.before_caption, text, self.after_caption)
        )


class Poster:
    """One signed-in user posting photos to one server.

    Each post goes over a keep-alive connection no other post is using at the
    time: an idle one if there is one, else a new one. So a closed loop holds
    one connection per posting loop, and an open loop as many as it has posts
    in flight at once.
    """

    def __init__(self, server: Server, session_id: str) -> None:
        self.server = server
        self.session_id = session_id
        self.csrf_token = ""
        self.posted = 0
        self._request: PhotoPostRequest | None = None
        self._idle: list[HttpConnection] = []
        self._connections: set[HttpConnection] = set()

    async def prepare(self) -> None:
        """Get the CSRF cookie the form sets, as a browser would."""
        async with httpx.AsyncClient(
            base_url=self.server.base_url, cookies={"sessionid": self.session_id}, timeout=30
        ) as client:
            response = await client.get("/posts/new/")
        if response.status_code != 200:
            raise PostFailure(f"GET /posts/new/ answered {response.status_code}")
        self.csrf_token = client.cookies["csrftoken"]
        self._request = PhotoPostRequest.build(self.server, self.session_id, self.csrf_token)

    async def post(self, caption: str) -> PostTiming:
        """Post one photo; raise :class:`PostFailure` unless it is answered 201 with an id."""
        assert self._request is not None, "prepare() first"
        request = self._request.with_caption(caption)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                connection = await self._connection()
                try:
                    response = await connection.request(request)
                except BaseException:
                    self._discard(connection)  # a response may still be on its way
                    raise
        except TimeoutError as exc:
            raise PostFailure(
                f"post to {self.server.name}: no answer within {REQUEST_TIMEOUT:.0f}s"
            ) from exc
        except (OSError, ResponseError) as exc:
            raise PostFailure(f"post to {self.server.name} failed: {exc!r}") from exc
        seconds = time.perf_counter() - started
        if connection.reusable:
            self._idle.append(connection)
        else:
            self._discard(connection)
        if response.status != 201:
            body = response.body[:300].decode(errors="replace")
            raise PostFailure(f"post answered {response.status}: {body}")
        try:
            post_id = json.loads(response.body)["id"]
        except (ValueError, KeyError, TypeError) as exc:
            raise PostFailure(f"post answered 201 without an id: {response.body[:300]!r}") from exc
        self.posted += 1
        return PostTiming(post_id, started, seconds)

    async def _connection(self) -> HttpConnection:
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable:
                return connection
            self._discard(connection)  # the server closed it while it was idle
        connection = await HttpConnection.open(HOST, self.server.port)
        self._connections.add(connection)
        return connection

    def _discard(self, connection: HttpConnection) -> None:
        connection.close()
        self._connections.discard(connection)

    async def close(self) -> None:
        for connection in list(self._connections):
            self._discard(connection)
        self._idle.clear()


async def posters_for(server: Server, sessions: list[str]) -> list[Poster]:
    posters = [Poster(server, session) for session in sessions]
    await asyncio.gather(*(poster.prepare() for poster in posters))
    return posters


async def post_at_rate(
    posters: list[Poster], rate: float, seconds: float, *, max_in_flight: int = 200
) -> list[PostTiming]:
    """Open loop: one post every 1/rate s, whether or not earlier ones finished."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    total = int(rate * seconds)
    limit = asyncio.Semaphore(max_in_flight)
    run = uuid.uuid4().hex[:8]

    async def one(index: int) -> PostTiming:
        async with limit:
            return await posters[index % len(posters)].post(f"bench post {run}-{index}")

    tasks = []
    try:
        for index in range(total):
            await asyncio.sleep(max(0.0, start + index / rate - loop.time()))
            tasks.append(asyncio.create_task(one(index)))
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()  # only those still running: on a failure or an interrupt


async def post_closed_loop(
    posters: list[Poster], concurrency: int, seconds: float
) -> tuple[list[PostTiming], int]:
    """``concurrency`` loops posting back to back for ``seconds``.

    Returns every post made, and how many of them finished within ``seconds``.
    """
    deadline = time.perf_counter() + seconds
    timings: list[PostTiming] = []
    run = uuid.uuid4().hex[:8]

    async def worker(number: int) -> None:
        poster = posters[number % len(posters)]
        count = 0
        while time.perf_counter() < deadline:
            timings.append(await poster.post(f"bench load {run}-{number}-{count}"))
            count += 1

    await asyncio.gather(*(worker(number) for number in range(concurrency)))
    return timings, sum(1 for t in timings if t.started + t.seconds <= deadline)


@dataclass
class Dashboard:
    """A /ws/events/ client recording when each post's event arrived."""

    server: Server
    session_id: str
    arrivals: dict[int, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    _ws: ClientConnection | None = None
    _task: asyncio.Task[None] | None = None

    async def start(self) -> Dashboard:
        self._ws = await connect(
            self.server.ws_url,
            origin=Origin(self.server.origin),
            additional_headers={"Cookie": f"sessionid={self.session_id}"},
            compression=None,
            max_size=None,
        )
        welcome = json.loads(await asyncio.wait_for(self._ws.recv(), 30))
        if welcome.get("type") != "welcome":
            raise ClientFailure(f"dashboard expected a welcome, got {welcome}")
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._ws is not None
        last: dict[int, int] = {}
        async for message in self._ws:
            now = time.perf_counter()
            frame = json.loads(message)
            if frame.get("type") != "events":
                self.problems.append(f"unexpected frame {str(frame)[:200]}")
                continue
            for item in frame["events"]:
                partition, offset = item["partition"], item["offset"]
                if offset <= last.get(partition, -1):
                    self.problems.append(f"p{partition}: {offset} after {last[partition]}")
                last[partition] = offset
                post_id = item["event"]["data"]["post_id"]
                if post_id in self.arrivals:
                    self.problems.append(f"post {post_id} delivered twice")
                self.arrivals.setdefault(post_id, now)

    async def wait_for(self, post_ids: list[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            missing = [post_id for post_id in post_ids if post_id not in self.arrivals]
            if self.problems:
                raise ClientFailure(f"dashboard: {self.problems[:3]}")
            if not missing:
                return
            if self._task is not None and self._task.done():
                raise ClientFailure(f"dashboard connection ended: {self._task.exception()!r}")
            if time.monotonic() > deadline:
                raise ClientFailure(
                    f"dashboard never saw {len(missing)} of {len(post_ids)} posts"
                    f" (first missing: {missing[:5]})"
                )
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            self._task.cancel()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def measure_emit_overhead(
    result: ScenarioResult, on: list[Poster], off: list[Poster], pids: dict[str, int]
) -> None:
    """Request time with eager publishing on vs off, alternating blocks at a fixed rate."""
    for posters in (on, off):  # warm-up: first requests load templates, connections...
        await post_at_rate(posters, OVERHEAD_RATE, 1.0)
    meter = CpuMeter(pids).start()
    times: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(OVERHEAD_BLOCKS):
        for name, posters in (("on", on), ("off", off)):
            timings = await post_at_rate(posters, OVERHEAD_RATE, OVERHEAD_BLOCK_SECONDS)
            times[name].extend(timing.seconds for timing in timings)
    result.cpu = meter.stop()
    cpu_ms = {
        name: result.cpu[server] / 100 * meter.elapsed / len(times[name]) * 1000
        for name, server in (("on", SERVER_ON), ("off", SERVER_OFF))
    }
    mean_on, mean_off = statistics.fmean(times["on"]), statistics.fmean(times["off"])
    median_on, median_off = statistics.median(times["on"]), statistics.median(times["off"])
    result.add("post_emit_overhead (mean)", mean_on / mean_off - 1, "", "post_emit_overhead")
    result.add("overhead by median", median_on / median_off - 1)
    result.add("request time, publishing on, mean", mean_on * 1000, "ms")
    result.add("request time, publishing off, mean", mean_off * 1000, "ms")
    result.add("request time, on, p99", percentile(times["on"], 0.99) * 1000, "ms")
    result.add("request time, off, p99", percentile(times["off"], 0.99) * 1000, "ms")
    result.add("server CPU per post, publishing on", cpu_ms["on"], "ms")
    result.add("server CPU per post, publishing off", cpu_ms["off"], "ms")
    result.notes.append(
        f"{OVERHEAD_RATE} posts/s, {OVERHEAD_BLOCKS} alternating blocks of"
        f" {OVERHEAD_BLOCK_SECONDS:.0f} s per server ({len(times['on'])} posts each);"
        " 'off' is EVENTSITE_PUBLISH_EAGERLY=false: the outbox row is still written in the"
        " post's transaction but nothing is sent to Kafka (no relay runs); no WebSocket"
        " client is connected; each server is busy half of the time its CPU is shown for"
    )


async def measure_post_to_screen(
    result: ScenarioResult, posters: list[Poster], dashboard: Dashboard, pids: dict[str, int]
) -> None:
    meter = CpuMeter(pids).start()
    timings = await post_at_rate(posters, SCREEN_RATE, SCREEN_SECONDS)
    result.cpu = meter.stop()
    await dashboard.wait_for([timing.post_id for timing in timings], DELIVERY_SECONDS)
    latencies = [(dashboard.arrivals[timing.post_id] - timing.started) * 1000 for timing in timings]
    result.add("post to screen p50", percentile(latencies, 0.50), "ms", "post_to_screen_p50_ms")
    result.add("post to screen p99", percentile(latencies, 0.99), "ms", "post_to_screen_p99_ms")
    request_times = [t.seconds * 1000 for t in timings]
    after_response = [
        (dashboard.arrivals[t.post_id] - t.started - t.seconds) * 1000 for t in timings
    ]
    result.add("request time p50", percentile(request_times, 0.5), "ms")
    result.add("request time p99", percentile(request_times, 0.99), "ms")
    result.add("response to screen p50", percentile(after_response, 0.5), "ms")
    result.add("response to screen p99", percentile(after_response, 0.99), "ms")
    result.notes.append(
        f"{SCREEN_RATE} posts/s for {SCREEN_SECONDS:.0f} s ({len(timings)} posts by"
        f" {len(posters)} users), one dashboard client; from sending the request to reading"
        " the frame with its event"
    )


async def measure_posts_per_s(
    result: ScenarioResult, posters: list[Poster], dashboard: Dashboard, pids: dict[str, int]
) -> None:
    meter = CpuMeter(pids).start()
    timings, in_time = await post_closed_loop(posters, THROUGHPUT_CONCURRENCY, THROUGHPUT_SECONDS)
    result.cpu = meter.stop()
    rate = in_time / THROUGHPUT_SECONDS
    result.add("posts per second", rate, "posts/s", "posts_per_s")
    result.add("request time p50", percentile([t.seconds for t in timings], 0.5) * 1000, "ms")
    result.add("request time p99", percentile([t.seconds for t in timings], 0.99) * 1000, "ms")
    result.notes.append(
        f"{THROUGHPUT_CONCURRENCY} concurrent posting loops ({len(posters)} users) for"
        f" {THROUGHPUT_SECONDS:.0f} s, every answer 201; the dashboard saw every post's event"
    )
    await dashboard.wait_for([timing.post_id for timing in timings], DELIVERY_SECONDS)


def outbox_counts(topic: str) -> tuple[int, int]:
    """(sent, unsent) outbox rows for ``topic``."""
    from monitor.models import OutboxEvent

    rows = OutboxEvent.objects.filter(topic=topic)
    unsent = rows.filter(sent_at__isnull=True).count()
    return rows.count() - unsent, unsent


async def check_outbox(result: ScenarioResult, topic: str, *, sent: int, unsent: int) -> None:
    """Every post to the publishing server is marked sent; none to the other one is."""
    deadline = time.monotonic() + DELIVERY_SECONDS
    while (counts := await asyncio.to_thread(outbox_counts, topic)) != (sent, unsent):
        if time.monotonic() > deadline:
            raise PostFailure(
                f"outbox has {counts[0]} sent and {counts[1]} unsent rows; expected {sent}"
                f" sent (publishing on) and {unsent} unsent (publishing off)"
            )
        await asyncio.sleep(0.2)
    result.add("outbox rows sent (publishing on)", sent)
    result.add("outbox rows unsent (publishing off)", unsent)
