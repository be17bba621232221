"""Replays on the event stream: history on open, and resume after a reconnect.

A client asks, when it connects or in a later ``subscribe``, for either

- ``since``: per partition, the last offset it saw; it gets exactly the
  events after those, in order, then the live stream; or
- ``history``: the N most recent events (that its filter lets through),
  oldest first, then the live stream.

The replay reads the topic with a consumer of its own, writing to the client
as fast as the client reads (it waits for the client instead of dropping).
It then hands the client over to the hub at the line where the process's
live reader stands (:attr:`FanoutHub.received_end`): once the replay has
read up to that line on every partition, the client joins the hub in the
same step, with a *floor* so that the hub leaves out the events the replay
already sent. Nothing is skipped and nothing is sent twice.

What cannot be replayed is announced before the replayed events, by a gap
notice with a reason: ``expired`` (deleted by the topic's retention),
``limit`` (more than ``STREAM_REPLAY_MAX_EVENTS`` behind on a partition),
``reset`` (positions past the end of the log: the broker's log started over,
so the count is unknown and the replay starts from the new log's beginning).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from django.conf import settings

from monitor.events.schema import InvalidEvent, parse_record
from monitor.kafka import clients as kafka
from monitor.live.delivery import ClientStream, DirectStream, Frame, gap_notice
from monitor.live.hub import events_frame
from monitor.live.reader import encode_item
from monitor.live.recent import latest_in_partition_order

if TYPE_CHECKING:
    from monitor.live.hub import FanoutHub

logger = logging.getLogger(__name__)

HISTORY_MAX = 1000
# Per partition, how far back a filtered history looks for matching events.
HISTORY_SCAN = 5000
# Events per replayed frame.
FRAME_EVENTS = 500
FETCH_TIMEOUT_MS = 200


class BadReplay(ValueError):
    """A ``since`` or ``history`` the server cannot take; the message says why."""


@dataclass(frozen=True)
class ReplayRequest:
    """What a client asked to be sent before the live stream."""

    since: Mapping[int, int] | None = None  # per partition, the last offset seen
    history: int = 0

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> ReplayRequest | None:
        """The request in a subscribe message (``since`` object or ``history``), if any."""
        since, history = message.get("since"), message.get("history")
        if since is not None:
            if not isinstance(since, dict):
                raise BadReplay('since must be an object of partition: offset, like {"0": 17}')
            return cls(since=_positions(since.items()))
        if history is not None:
            return cls(history=_history(history))
        return None

    @classmethod
    def from_query(cls, params: Mapping[str, list[str]]) -> ReplayRequest | None:
        """The request in a connection's query string: ``since=0:17,1:5`` or ``history=N``."""
        if params.get("since"):
            pairs = []
            for pair in ",".join(params["since"]).split(","):
                partition, colon, offset = pair.partition(":")
                if not colon:
                    raise BadReplay("since is a list of partition:offset, like since=0:17,1:5")
                pairs.append((partition, offset))
            return cls(since=_positions(pairs))
        if params.get("history"):
            return cls(history=_history(params["history"][-1]))
        return None


def _positions(pairs: Iterable[tuple[Any, Any]]) -> dict[int, int]:
    positions = {}
    for partition, offset in pairs:
        try:
            number, last = int(partition), int(offset)
        except (TypeError, ValueError):
            raise BadReplay(f"not a partition and offset: {partition!r}: {offset!r}") from None
        if isinstance(offset, bool) or number < 0 or last < -1:
            raise BadReplay(f"not a partition and offset: {partition!r}: {offset!r}")
        positions[number] = last
    return positions


def _history(value: Any) -> int:
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise BadReplay(f"history is a number of events, up to {HISTORY_MAX}") from None
    if isinstance(value, bool) or not 0 <= count <= HISTORY_MAX:
        raise BadReplay(f"history is a number of events, up to {HISTORY_MAX}")
    return count


@dataclass
class Plan:
    """Where to start reading each partition, and what is announced as missed."""

    starts: dict[int, int]
    missed: dict[str, int | None] = field(default_factory=dict)

    def miss(self, reason: str, count: int | None) -> None:
        before = self.missed.get(reason, 0)
        self.missed[reason] = None if before is None or count is None else before + count


def plan_replay(
    request: ReplayRequest,
    begin: Mapping[int, int],
    end: Mapping[int, int],
    *,
    scan: int,
    limit: int,
) -> Plan:
    """Start offsets per partition for ``request``, given each partition's first
    offset (``begin``) and the offset after its last (``end``).

    For ``since``: the offset after the last one seen; a partition the client
    gave no position for is read from its beginning. For ``history``: the last
    ``scan`` events of each partition.
    """
    plan = Plan(starts={})
    for partition in sorted(end):
        first, stop = begin.get(partition, 0), end[partition]
        if request.since is None:
            plan.starts[partition] = max(first, stop - scan)
            continue
        start = request.since.get(partition, first - 1) + 1
        if start > stop:
            plan.miss("reset", None)
            start = first
        elif start < first:
            plan.miss("expired", first - start)
            start = first
        if stop - start > limit:
            plan.miss("limit", stop - start - limit)
            start = stop - limit
        plan.starts[partition] = start
    return plan


_slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


def _slot() -> asyncio.Semaphore:
    """Replays run at most STREAM_REPLAY_CONCURRENCY at a time per process: a
    reconnect storm queues instead of opening a consumer per client at once."""
    loop = asyncio.get_running_loop()
    slot = _slots.get(loop)
    if slot is None:
        _slots.clear()
        slot = _slots[loop] = asyncio.Semaphore(settings.STREAM_REPLAY_CONCURRENCY)
    return slot


async def replay_then_live(
    hub: FanoutHub, stream: ClientStream | DirectStream, request: ReplayRequest
) -> int:
    """Send ``stream`` what ``request`` asks for, then ``{"type": "live"}``, and add it
    to ``hub``; returns how many events were replayed.

    Raises ConnectionError if the broker cannot be read, ClientGone if the
    client goes away; either way the stream is not added to the hub.
    """
    hub.hold()
    try:
        replay = Replay(hub, stream)
        if await replay.from_memory(request):
            return replay.sent
        if replay.next:  # the memory ran out part way: the broker has the rest
            request = ReplayRequest(since={p: offset - 1 for p, offset in replay.next.items()})
        async with _slot():
            try:
                await replay.start()
                return await replay.run(request)
            finally:
                await replay.stop()
    finally:
        hub.release()


class Replay:
    """One client's replay, on a consumer of its own assigned to every partition."""

    def __init__(self, hub: FanoutHub, stream: ClientStream | DirectStream) -> None:
        self.hub = hub
        self.stream = stream  # its filter applies (a subscribe may change it meanwhile)
        self.topic = settings.KAFKA_EVENTS_TOPIC
        self.consumer: AIOKafkaConsumer | None = None
        self.next: dict[int, int] = {}  # per partition, the next offset to replay
        self.sent = 0

    async def from_memory(self, request: ReplayRequest) -> bool:
        """Replay from the hub's recent events and hand over; False if they do not
        hold what is asked (``next`` then says how far this got, if anywhere)."""
        recent, line = self.hub.recent, self.hub.received_end
        if request.since is not None:
            starts = {p: request.since[p] + 1 for p in line if p in request.since}
            if len(starts) < len(line) or not all(
                recent.holds(p, start) and start <= line[p] for p, start in starts.items()
            ):
                return False
            self.next = starts
        else:
            items = recent.last(request.history, self.stream.filter)
            if items is None:
                return False
            self.next = dict(line)
            await self._send(items)
        while True:
            if not all(recent.holds(p, self.next.get(p, -1)) for p in line):
                return False
            items = recent.after(self.next, self.stream.filter)
            self.next = dict(line)  # everything before the line was just collected
            if not items:
                self._hand_over()
                return True
            await self._send(items)

    async def start(self) -> None:
        self.consumer = kafka.make_consumer(
            group_id=None, fetch_max_wait_ms=settings.KAFKA_LIVE_FETCH_WAIT_MS
        )
        try:
            await self.consumer.start()
        except Exception as exc:
            raise ConnectionError(f"cannot read the events topic: {exc}") from exc

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    async def run(self, request: ReplayRequest) -> int:
        consumer = self.consumer
        assert consumer is not None
        partitions = {p: TopicPartition(self.topic, p) for p in sorted(self.hub.received_end)}
        consumer.assign(list(partitions.values()))
        begins = await consumer.beginning_offsets(list(partitions.values()))
        ends = await consumer.end_offsets(list(partitions.values()))
        begin = {p: begins[tp] for p, tp in partitions.items()}
        # The broker may report an end behind what the live reader has read.
        end = {p: max(ends[tp], self.hub.received_end.get(p, 0)) for p, tp in partitions.items()}
        scan = request.history if self.stream.filter is None else max(request.history, HISTORY_SCAN)
        plan = plan_replay(request, begin, end, scan=scan, limit=settings.STREAM_REPLAY_MAX_EVENTS)
        for reason, missed in plan.missed.items():
            self.stream.send_now(gap_notice(missed, reason))
        for partition, start in plan.starts.items():
            consumer.seek(partitions[partition], start)
        self.next = dict(plan.starts)
        if request.since is None:
            await self._send_history(partitions, end, request.history)
        await self._catch_up()
        return self.sent

    async def _send_history(
        self, partitions: dict[int, TopicPartition], end: dict[int, int], count: int
    ) -> None:
        """Read each partition up to ``end`` and send the last ``count`` matching
        events, oldest first (each partition's events stay in offset order)."""
        assert self.consumer is not None
        kept: dict[int, deque[tuple[datetime, str]]] = {p: deque(maxlen=count) for p in end}
        while any(self.next[p] < end[p] for p in end):
            for record in await self._fetch():
                if record.offset < end[record.partition]:
                    entry = self._entry(record)
                    if entry is not None:
                        kept[record.partition].append(entry)
        # The fetches may have read past the ends: the catch-up reads that part again.
        for partition, stop in end.items():
            self.consumer.seek(partitions[partition], stop)
            self.next[partition] = stop
        await self._send(latest_in_partition_order(kept.values(), count))

    async def _catch_up(self) -> None:
        """Replay up to the hub's live line, then hand the stream over to the hub."""
        while True:
            await self._follow_new_partitions()
            line = self.hub.received_end
            if all(self.next[p] >= offset for p, offset in line.items()):
                self._hand_over()
                return
            items = []
            for record in await self._fetch():
                entry = self._entry(record)
                if entry is not None:
                    items.append(entry[1])
            await self._send(items)

    def _hand_over(self) -> None:
        """Mark the end of the replay and add the stream to the hub, in one step
        with checking the line (no await between): the floor leaves out what the
        hub still holds from before it."""
        self.stream.floor = dict(self.next)
        self.stream.send_now(json.dumps({"type": "live", "replayed": self.sent}))
        self.hub.add(self.stream)

    async def _fetch(self) -> list[Any]:
        """The next records, in offset order per partition; advances ``next``."""
        assert self.consumer is not None
        batch = await self.consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS, max_records=FRAME_EVENTS)
        records = [record for tp_records in batch.values() for record in tp_records]
        for record in records:
            self.next[record.partition] = record.offset + 1
        if not records:
            # Offsets need not be contiguous (transaction markers, compaction):
            # the consumer's position says how far the log has been read.
            for tp in self.consumer.assignment():
                position = await self.consumer.position(tp)
                self.next[tp.partition] = max(self.next.get(tp.partition, 0), position)
        return records

    def _entry(self, record: Any) -> tuple[datetime, str] | None:
        """The record's time and encoded item, or None if it is invalid or filtered out
        (the same records the live reader leaves out)."""
        try:
            parsed = parse_record(record.value, max_bytes=settings.MAX_EVENT_BYTES)
        except InvalidEvent:
            return None
        event_filter = self.stream.filter
        if event_filter is not None and not event_filter.matches(parsed.event):
            return None
        item = encode_item(record.topic, record.partition, record.offset, record.value)
        return parsed.time, item

    async def _send(self, items: list[str]) -> None:
        for first in range(0, len(items), FRAME_EVENTS):
            chunk = items[first : first + FRAME_EVENTS]
            sent_ms = int(time.time() * 1000)
            frame = Frame(events_frame(chunk, sent_ms=sent_ms, replay=True))
            await self.stream.send_replay(frame, len(chunk))
            self.sent += len(chunk)

    async def _follow_new_partitions(self) -> None:
        """Partitions the live reader found since the replay started are replayed
        from their beginning, as the live reader reads them."""
        assert self.consumer is not None
        new = sorted(set(self.hub.received_end) - set(self.next))
        if not new:
            return
        added = [TopicPartition(self.topic, p) for p in new]
        positions = {tp: self.next[tp.partition] for tp in self.consumer.assignment()}
        self.consumer.assign([*positions, *added])
        for tp, offset in positions.items():
            self.consumer.seek(tp, offset)
        begins = await self.consumer.beginning_offsets(added)
        for tp in added:
            self.consumer.seek(tp, begins[tp])
            self.next[tp.partition] = begins[tp]
