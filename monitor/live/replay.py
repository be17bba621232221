"""Replays on the event stream: history on open, and resume after a reconnect.

A client's :class:`~monitor.live.replay_plan.ReplayRequest` is served from
the recent events the process's live line keeps when they hold what is
asked, and otherwise by reading the topic with a consumer of its own. Either
way the replay writes to the client as fast as the client reads (it waits
for the client instead of dropping), then hands the client over to the hub
at the live line (:class:`~monitor.live.line.LiveLine`): once the replay has
read up to the line on every partition, the client joins the hub in the same
step, with no await between, and with a *floor* so that the hub leaves out
the events the replay already sent. Nothing is skipped and nothing is sent
twice.

What cannot be replayed is announced before the replayed events, by a gap
notice with a reason: ``expired`` (deleted by the topic's retention),
``limit`` (more than ``STREAM_REPLAY_MAX_EVENTS`` behind on a partition),
``reset`` (positions past the end of the log: the broker's log started over,
so the count is unknown and the replay starts from the new log's beginning).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from datetime import datetime

from aiokafka import ConsumerRecord, TopicPartition
from channels.db import database_sync_to_async
from django.conf import settings

from monitor.events.epochs import Epoch, follow_cluster
from monitor.events.received import receive
from monitor.kafka import clients as kafka
from monitor.kafka.clients import ClusterWatch
from monitor.kafka.shift import ShiftedConsumer
from monitor.live.client import LiveClient
from monitor.live.hub import FanoutHub
from monitor.live.items import shown
from monitor.live.protocol import events_frame, gap_frame, live_frame
from monitor.live.recent import latest_in_partition_order
from monitor.live.replay_plan import ReplayRequest, plan_replay
from monitor.live.stored_history import stored_history
from monitor.live.wire import Frame

logger = logging.getLogger(__name__)

# Per partition, how far back a filtered history looks for matching events.
HISTORY_SCAN = 5000
# Events per replayed frame.
FRAME_EVENTS = 500
FETCH_TIMEOUT_MS = 200

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


async def replay_then_live(hub: FanoutHub, client: LiveClient, request: ReplayRequest) -> int:
    """Send ``client`` what ``request`` asks for, then ``{"type": "live"}``, and add it
    to ``hub``; returns how many events were replayed.

    Raises ConnectionError if the broker cannot be read, ClientGone if the
    client goes away; either way the client is not added to the hub.
    """
    hub.hold()
    try:
        replay = Replay(hub, client)
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

    def __init__(self, hub: FanoutHub, client: LiveClient) -> None:
        self.hub = hub
        self.line = hub.line
        self.client = client  # its filter applies (a subscribe may change it meanwhile)
        self.topic = settings.KAFKA_EVENTS_TOPIC
        self.consumer: ShiftedConsumer | None = None
        self.epoch = Epoch()
        self.next: dict[TopicPartition, int] = {}  # per partition, the next offset to replay
        self.sent = 0

    async def from_memory(self, request: ReplayRequest) -> bool:
        """Replay from the live line's recent events and hand over; False if they do
        not hold what is asked (``next`` then says how far this got, if anywhere)."""
        line = self.line
        if request.since is not None:
            ends = line.ends()
            starts = {p: request.since[p] + 1 for p in ends if p in request.since}
            if len(starts) < len(ends) or not all(
                line.holds(p, start) and start <= ends[p] for p, start in starts.items()
            ):
                return False
            self.next = starts
        else:
            items = line.kept_last(request.history, self.client.filter)
            if items is None:
                return False
            self.next = line.ends()
            await self._send(items)
        while True:
            if not all(line.holds(p, self.next.get(p, -1)) for p in line.partitions):
                return False
            items = line.kept_after(self.next, self.client.filter)
            self.next = line.ends()  # everything before the line was just collected
            if not items:
                self._hand_over()
                return True
            await self._send(items)

    async def start(self) -> None:
        self.consumer = kafka.make_consumer(
            group_id=None,
            fetch_max_wait_ms=settings.KAFKA_LIVE_FETCH_WAIT_MS,
            shifted=True,
        )
        try:
            await self.consumer.start()
            # Positions, as the live reader's: the broker's offsets plus the cluster's bases.
            cluster = ClusterWatch()
            await cluster.join(self.consumer)
            self.epoch = await follow_cluster(self.consumer, cluster)
        except Exception as exc:
            raise ConnectionError(f"cannot read the events topic: {exc}") from exc

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    async def run(self, request: ReplayRequest) -> int:
        """Replay ``request`` from the broker, then hand over; returns the events sent."""
        consumer = self.consumer
        assert consumer is not None
        partitions = sorted(self.line.partitions)
        consumer.assign(partitions)
        begin = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        # The broker may report an end behind what the live reader has read.
        end = {tp: max(ends[tp], self.line.end(tp)) for tp in partitions}
        event_filter = self.client.filter
        scan = request.history if event_filter is None else max(request.history, HISTORY_SCAN)
        plan = plan_replay(
            request,
            begin,
            end,
            scan=scan,
            limit=settings.STREAM_REPLAY_MAX_EVENTS,
            exact_from={
                TopicPartition(topic, partition): offset
                for topic, parts in self.epoch.exact_from.items()
                for partition, offset in parts.items()
            },
        )
        for reason, missed in plan.missed.items():
            self.client.send_now(gap_frame(missed, reason))
        for tp, start in plan.starts.items():
            consumer.seek(tp, start)
        self.next = dict(plan.starts)
        if request.since is None:
            await self._send_history(begin, end, request.history)
        await self._catch_up()
        return self.sent

    async def _send_history(
        self, begin: dict[TopicPartition, int], end: dict[TopicPartition, int], count: int
    ) -> None:
        """Read each partition up to ``end`` and send the last ``count`` matching
        events, oldest first (each partition's events stay in offset order); what
        the broker's log lacks comes from the analytics store, if it has it."""
        assert self.consumer is not None
        kept: dict[TopicPartition, deque[tuple[datetime, str]]]
        kept = {tp: deque(maxlen=count) for tp in end}
        while any(self.next[tp] < end[tp] for tp in end):
            for record in await self._fetch():
                tp = TopicPartition(record.topic, record.partition)
                if record.offset < end[tp]:
                    entry = self._entry(record)
                    if entry is not None:
                        kept[tp].append(entry)
        # The fetches may have read past the ends: the catch-up reads that part again.
        for tp, stop in end.items():
            self.consumer.seek(tp, stop)
            self.next[tp] = stop
        lacking = count - sum(len(entries) for entries in kept.values())
        begins = {tp.partition: begin[tp] for tp in kept if tp.topic == self.topic}
        stored = await database_sync_to_async(stored_history)(
            self.topic, begins, lacking, self.client.filter
        )
        entries = [
            [*(stored.get(tp.partition, []) if tp.topic == self.topic else []), *kept[tp]]
            for tp in kept
        ]
        await self._send(latest_in_partition_order(entries, count))

    async def _catch_up(self) -> None:
        """Replay up to the live line, then hand the client over to the hub."""
        while True:
            await self._follow_new_partitions()
            if self.line.reached_by(self.next):
                self._hand_over()
                return
            items = []
            for record in await self._fetch():
                entry = self._entry(record)
                if entry is not None:
                    items.append(entry[1])
            await self._send(items)

    def _hand_over(self) -> None:
        """Mark the end of the replay and add the client to the hub, in one step
        with checking the line (no await between): the floor leaves out what the
        hub still holds from before it."""
        self.client.floor = dict(self.next)
        self.client.send_now(live_frame(self.sent))
        self.hub.add(self.client)

    async def _fetch(self) -> list[ConsumerRecord]:
        """The next records, in offset order per partition; advances ``next``."""
        assert self.consumer is not None
        batch = await self.consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS, max_records=FRAME_EVENTS)
        records = [record for tp_records in batch.values() for record in tp_records]
        for record in records:
            self.next[TopicPartition(record.topic, record.partition)] = record.offset + 1
        if not records:
            # Offsets need not be contiguous (transaction markers, compaction):
            # the consumer's position says how far the log has been read.
            for tp in self.consumer.assignment():
                position = await self.consumer.position(tp)
                self.next[tp] = max(self.next.get(tp, 0), position)
        return records

    def _entry(self, record: ConsumerRecord) -> tuple[datetime, str] | None:
        """The record's time and encoded item, or None if the client's filter
        leaves it out (the live reader shows every record, as this does)."""
        item = shown(receive(record, max_bytes=settings.MAX_EVENT_BYTES))
        event_filter = self.client.filter
        if event_filter is not None and not event_filter.matches(item.view):
            return None
        return item.time, item.item

    async def _send(self, items: list[str]) -> None:
        for first in range(0, len(items), FRAME_EVENTS):
            chunk = items[first : first + FRAME_EVENTS]
            sent_ms = int(time.time() * 1000)
            frame = Frame(events_frame(chunk, sent_ms=sent_ms, replay=True))
            await self.client.send_replay(frame, len(chunk))
            self.sent += len(chunk)

    async def _follow_new_partitions(self) -> None:
        """Partitions the live reader found since the replay started are replayed
        from their beginning, as the live reader reads them."""
        assert self.consumer is not None
        added = sorted(self.line.partitions - set(self.next))
        if not added:
            return
        positions = {tp: self.next[tp] for tp in self.consumer.assignment()}
        self.consumer.assign([*positions, *added])
        for tp, offset in positions.items():
            self.consumer.seek(tp, offset)
        begins = await self.consumer.beginning_offsets(added)
        for tp in added:
            self.consumer.seek(tp, begins[tp])
            self.next[tp] = begins[tp]
