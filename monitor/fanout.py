"""Live fan-out: one Kafka reader per web process, one hub, many sockets.

The tutorial way (one channel-layer ``group_send`` per event per client) is
slow and, at the default capacity, silently loses messages. Here each ASGI
process reads the topic itself (no consumer group, starting at the end) and
hands the events to an in-process :class:`FanoutHub`. The hub gathers what
arrives within one tick, encodes that batch **once** as a JSON frame (and,
for sockets it can write to directly, once as WebSocket frame bytes: see
:mod:`monitor.wire`), and offers the same frame to every client.

Every client is bounded, and a client that falls behind is told what it
missed (:mod:`monitor.delivery`).

Daphne has no ASGI lifespan, so the reader starts with the first client and
stops when the last one has been gone for a grace period.
"""

from __future__ import annotations

import asyncio
import json
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from django.conf import settings

from . import kafka
from .delivery import ClientStream, DirectStream, Frame
from .events import Event, InvalidEvent, parse_event
from .filters import EventFilter

logger = logging.getLogger(__name__)

# How often the live reader looks for partitions added to the topic.
PARTITION_CHECK_SECONDS = 3
# How often a client that fell behind is checked for having caught up.
LAG_CHECK_SECONDS = 0.05
# Clients a frame is written to per turn of the event loop (see _write_slice).
WRITE_SLICE = 128


class FanoutHub:
    """Registers client streams and broadcasts batches of events to them."""

    def __init__(self) -> None:
        self.clients: set[ClientStream | DirectStream] = set()
        self._pending: list[str] = []
        self._pending_events: list[Event | None] = []
        self._flush_scheduled = False
        self._writing = False
        self._last_flush = float("-inf")
        self._reader: LiveReader | None = None
        self._idle_stop: asyncio.TimerHandle | None = None
        # Clients owed a gap notice: told as soon as they catch up, even if no
        # further event comes to carry it.
        self._lagging: set[ClientStream | DirectStream] = set()
        self._lag_check_scheduled = False

    async def register(self, client: ClientStream | DirectStream, *, timeout: float = 10.0) -> None:
        """Add a client; returns once the process's reader is positioned on the topic."""
        self.clients.add(client)
        await self.ensure_reader(timeout=timeout)

    async def ensure_reader(self, *, timeout: float = 10.0) -> None:
        """Start the process's reader if needed; return once it is positioned on the topic."""
        if self._idle_stop is not None:
            self._idle_stop.cancel()
            self._idle_stop = None
        if self._reader is None or self._reader.failed:
            self._reader = LiveReader(self)
            self._reader.start()
        await self._reader.wait_ready(timeout)

    def add(self, client: ClientStream | DirectStream) -> None:
        """Add a client to a hub whose reader is ready (see :meth:`ensure_reader`)."""
        self.clients.add(client)

    def unregister(self, client: ClientStream | DirectStream) -> None:
        self.clients.discard(client)
        client.close()
        if not self.clients and self._reader is not None and self._idle_stop is None:
            loop = asyncio.get_running_loop()
            self._idle_stop = loop.call_later(settings.FANOUT_IDLE_STOP_SECONDS, self._stop_reader)

    def _stop_reader(self) -> None:
        self._idle_stop = None
        if not self.clients and self._reader is not None:
            self._reader.stop()
            self._reader = None

    def publish(self, items: list[str], events: list[Event] | None = None) -> None:
        """Queue encoded events (``{"topic":..,"partition":..,"offset":..,"event":..}``),
        with their envelopes when the caller has them parsed (for filters).

        Frames are paced, not delayed: after a quiet tick the first events go
        out at once; while events keep coming, one frame per tick carries all
        that arrived since the last. Writing a frame costs a system call per
        client whatever its size, so under load fewer, larger frames keep
        every client's latency down.
        """
        if not items:
            return
        self._pending.extend(items)
        self._pending_events.extend(events if events is not None else [None] * len(items))
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_scheduled or self._writing:
            return  # a frame being written schedules the next when it is done
        self._flush_scheduled = True
        loop = asyncio.get_running_loop()
        wait = self._last_flush + settings.FANOUT_TICK_MS / 1000 - loop.time()
        if wait > 0:
            loop.call_later(wait, self._flush)
        else:
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._last_flush = asyncio.get_running_loop().time()
        batch = Batch(self._pending, self._pending_events)
        self._pending, self._pending_events = [], []
        self._writing = True
        self._write_slice(batch, list(self.clients), 0)

    def _write_slice(
        self, batch: Batch, clients: list[ClientStream | DirectStream], start: int
    ) -> None:
        """Write the batch to a slice of ``clients``; the rest on the next turn of the loop.

        Between slices the loop serves everything else (the Kafka reader,
        pings, new connections), so a frame to thousands of clients does not
        hold up the next events. The next frame starts only once this one is
        written to every client, so each client still gets frames in order.
        """
        end = start + WRITE_SLICE
        current, lagging = self.clients, self._lagging
        everything = batch.frame_for(None)
        for client in clients[start:end]:
            if client not in current:
                continue
            event_filter = client.filter
            frame, count = everything if event_filter is None else batch.frame_for(event_filter)
            if count and client.offer(frame, count):
                lagging.add(client)
        if end < len(clients):
            asyncio.get_running_loop().call_soon(self._write_slice, batch, clients, end)
            return
        self._writing = False
        self._schedule_lag_check()
        if self._pending:
            self._schedule_flush()

    def _schedule_lag_check(self) -> None:
        if self._lagging and not self._lag_check_scheduled:
            self._lag_check_scheduled = True
            asyncio.get_running_loop().call_later(LAG_CHECK_SECONDS, self._check_lagging)

    def _check_lagging(self) -> None:
        self._lag_check_scheduled = False
        self._lagging = {
            client for client in self._lagging if client in self.clients and not client.flush_gap()
        }
        self._schedule_lag_check()


class Batch:
    """One tick's events, encoded once per filter in use (once in all, without filters)."""

    def __init__(self, items: list[str], events: list[Event | None]) -> None:
        self.items = items
        self.events = events
        self._frames: dict[EventFilter | None, tuple[Frame, int]] = {}

    def frame_for(self, event_filter: EventFilter | None) -> tuple[Frame, int]:
        """The frame of the events ``event_filter`` lets through, and how many they are."""
        cached = self._frames.get(event_filter)
        if cached is None:
            if event_filter is None:
                chosen = self.items
            else:
                chosen = [
                    item
                    for item, event in zip(self.items, self._envelopes(), strict=True)
                    if event_filter.matches(event)
                ]
            frame = Frame('{"type":"events","events":[' + ",".join(chosen) + "]}")
            cached = self._frames[event_filter] = (frame, len(chosen))
        return cached

    def _envelopes(self) -> list[Event]:
        for index, event in enumerate(self.events):
            if event is None:  # published without its envelope: take it from the item
                self.events[index] = json.loads(self.items[index])["event"]
        return self.events  # type: ignore[return-value]


def encode_item(record_topic: str, partition: int, offset: int, value: bytes) -> str:
    """One event as it appears in a frame; the envelope's own JSON is reused verbatim."""
    return (
        f'{{"topic":{json.dumps(record_topic)},"partition":{partition},'
        f'"offset":{offset},"event":{value.decode()}}}'
    )


class LiveReader:
    """Reads the events topic from its end and feeds the hub."""

    def __init__(self, hub: FanoutHub) -> None:
        self.hub = hub
        self.ready = asyncio.Event()
        self.failed = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def wait_ready(self, timeout: float) -> None:
        """Return once positioned; raise ConnectionError if the reader failed or timed out."""
        assert self._task is not None
        ready = asyncio.ensure_future(self.ready.wait())
        try:
            await asyncio.wait({ready, self._task}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            ready.cancel()
        if not self.ready.is_set():
            raise ConnectionError("the live event reader could not reach the broker")

    async def _run(self) -> None:
        consumer: AIOKafkaConsumer | None = None
        try:
            await kafka.ensure_topics()
            topic = settings.KAFKA_EVENTS_TOPIC
            consumer = kafka.make_consumer(
                group_id=None,
                auto_offset_reset="latest",
                fetch_max_wait_ms=settings.KAFKA_LIVE_FETCH_WAIT_MS,
                metadata_max_age_ms=PARTITION_CHECK_SECONDS * 1000,
            )
            await consumer.start()
            partitions = await kafka.wait_for_topic(consumer, topic, timeout=10)
            assigned = [TopicPartition(topic, partition) for partition in sorted(partitions)]
            consumer.assign(assigned)
            await consumer.seek_to_end(*assigned)
            for tp in assigned:
                await consumer.position(tp)  # resolve now, so nothing after "ready" is skipped
            cluster = await kafka.fetch_cluster_id(consumer)
            self.ready.set()
            logger.info("live reader on %s, partitions %s", topic, sorted(partitions))
            loop = asyncio.get_running_loop()
            next_check = loop.time() + PARTITION_CHECK_SECONDS
            while True:
                if loop.time() >= next_check:
                    next_check = loop.time() + PARTITION_CHECK_SECONDS
                    current = await kafka.fetch_cluster_id(consumer)
                    if current != cluster:
                        # The broker came back empty: its logs are all new events.
                        cluster = current
                        logger.warning("live reader: new cluster %s, reading from start", cluster)
                        await consumer.seek_to_beginning(*assigned)
                    assigned = await self._follow_new_partitions(consumer, topic, assigned)
                batch = await consumer.getmany(timeout_ms=1000)
                items, events = [], []
                for records in batch.values():
                    for record in records:
                        try:
                            event = parse_event(record.value, max_bytes=settings.MAX_EVENT_BYTES)
                        except InvalidEvent:
                            continue  # the consumer groups dead-letter it; viewers never see it
                        items.append(
                            encode_item(record.topic, record.partition, record.offset, record.value)
                        )
                        events.append(event)
                self.hub.publish(items, events)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.failed = True  # the next client to register starts a new reader
            logger.exception("live reader stopped")
        finally:
            if consumer is not None:
                await consumer.stop()

    @staticmethod
    async def _follow_new_partitions(
        consumer: AIOKafkaConsumer, topic: str, assigned: list[TopicPartition]
    ) -> list[TopicPartition]:
        """Add partitions created since the reader started, read from their beginning."""
        await consumer.topics()  # fresh metadata, so that new partitions show
        known = {tp.partition for tp in assigned}
        new = sorted((consumer.partitions_for_topic(topic) or set()) - known)
        if not new:
            return assigned
        positions = {tp: await consumer.position(tp) for tp in assigned}
        added = [TopicPartition(topic, partition) for partition in new]
        consumer.assign([*assigned, *added])
        for tp, position in positions.items():
            consumer.seek(tp, position)
        await consumer.seek_to_beginning(*added)
        logger.info("live reader now also reads partitions %s", new)
        return [*assigned, *added]


hub = FanoutHub()
