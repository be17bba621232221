"""Live fan-out: one Kafka reader per web process, one hub, many sockets.

The tutorial way (one channel-layer ``group_send`` per event per client) is
slow and, at the default capacity, silently loses messages. Here each ASGI
process reads the topic itself (no consumer group, starting at the end) and
hands the events to an in-process :class:`FanoutHub`. The hub gathers what
arrives within one tick, encodes that batch **once** as a JSON frame (and,
for sockets it can write to directly, once as WebSocket frame bytes: see
:mod:`monitor.live.wire`), and offers the same frame to every client.

Every client is bounded, and a client that falls behind is told what it
missed (:mod:`monitor.live.client`). The reader (:mod:`monitor.live.reader`)
moves the process's :class:`~monitor.live.line.LiveLine`, which the hub
holds for itself and for replays, and hands its batches to :meth:`FanoutHub.publish`.

Daphne has no ASGI lifespan, so the reader starts with the first client and
stops when the last one has been gone for a grace period.

The reader is kept by a :class:`~monitor.live.reader_keeper.ReaderKeeper`:
a reader that stalls, falls too far behind or loses its broker is never
left silent; its clients get a ``gap`` notice or a close they resume from.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition
from django.conf import settings

from monitor.live.batch import Batch
from monitor.live.client import LiveClient
from monitor.live.items import View
from monitor.live.line import LiveLine
from monitor.live.protocol import gap_frame
from monitor.live.reader_keeper import ReaderKeeper

# How often a client that fell behind is checked for having caught up.
LAG_CHECK_SECONDS = 0.05
# Clients a frame is written to per turn of the event loop (see _write_slice).
WRITE_SLICE = 128


class FanoutHub:
    """Registers client streams and broadcasts batches of events to them."""

    def __init__(self) -> None:
        self.clients: set[LiveClient] = set()
        # Clients being replayed to (monitor.live.replay), not yet handed over.
        self.replaying: set[LiveClient] = set()
        # Where the reader stands, and the latest events before it: replays
        # read it to hand their clients over, and to need no broker at all.
        self.line = LiveLine(settings.STREAM_RECENT_EVENTS)
        self._pending: list[str] = []
        self._pending_views: list[View | None] = []
        self._pending_positions: list[tuple[TopicPartition, int] | None] = []
        # Replays in progress: they keep the reader running without being clients yet.
        self._holds = 0
        self._flush_scheduled = False
        self._writing = False
        self._last_flush = float("-inf")
        self.keeper = ReaderKeeper(self.line, self.publish, self)
        self._idle_stop: asyncio.TimerHandle | None = None
        # Clients owed a gap notice: told as soon as they catch up, even if no
        # further event comes to carry it.
        self._lagging: set[LiveClient] = set()
        self._lag_check_scheduled = False

    async def register(self, client: LiveClient, *, timeout: float = 10.0) -> None:
        """Add a client; returns once the process's reader is positioned on the topic."""
        self.clients.add(client)
        await self.ensure_reader(timeout=timeout)

    async def ensure_reader(self, *, timeout: float = 10.0) -> None:
        """Start the process's reader if needed; return once it is positioned on the topic."""
        if self._idle_stop is not None:
            self._idle_stop.cancel()
            self._idle_stop = None
        await self.keeper.ensure(timeout)

    def add(self, client: LiveClient) -> None:
        """Add a client to a hub whose reader is ready (see :meth:`ensure_reader`).

        A client handed over by a replay below where a skip started the reader
        is told first how many records it will not get."""
        missed = 0 if client.floor is None else self.keeper.owed(client.floor)
        if missed:
            client.send_now(gap_frame(missed, self.keeper.skip_reason))
        self.clients.add(client)

    def unregister(self, client: LiveClient) -> None:
        self.detach(client)
        client.close()

    def detach(self, client: LiveClient) -> None:
        """Stop offering events to ``client`` (which stays open, e.g. for a replay)."""
        self.clients.discard(client)
        self.replaying.discard(client)
        self._lagging.discard(client)
        self._stop_when_idle()

    def hold(self) -> None:
        """Keep the reader running while a replay works towards handing its client over."""
        self._holds += 1
        if self._idle_stop is not None:
            self._idle_stop.cancel()
            self._idle_stop = None

    def release(self) -> None:
        self._holds -= 1
        self._stop_when_idle()

    def _stop_when_idle(self) -> None:
        if self._busy or self.keeper.reader is None or self._idle_stop is not None:
            return
        loop = asyncio.get_running_loop()
        self._idle_stop = loop.call_later(settings.FANOUT_IDLE_STOP_SECONDS, self._stop_reader)

    @property
    def _busy(self) -> bool:
        return bool(self.clients) or self._holds > 0

    def _stop_reader(self) -> None:
        self._idle_stop = None
        if not self._busy:
            self.keeper.stop()

    def reader_health(self) -> dict[str, Any]:
        """This process's live reader, as /healthz and the dashboard show it."""
        return self.keeper.health()

    async def drained(self) -> None:
        """Return once every event published so far has been offered to the clients."""
        while self._pending or self._writing or self._flush_scheduled:
            await asyncio.sleep(LAG_CHECK_SECONDS)

    def publish(
        self,
        items: list[str],
        views: list[View] | None = None,
        positions: list[tuple[TopicPartition, int]] | None = None,
    ) -> None:
        """Queue encoded items (see :mod:`monitor.live.items`), with their views
        and (partition, offset) when the caller has them at hand (filters and
        replay hand-overs use them).

        Frames are paced, not delayed: after a quiet tick the first events go
        out at once; while events keep coming, one frame per tick carries all
        that arrived since the last. Writing a frame costs a system call per
        client whatever its size, so under load fewer, larger frames keep
        every client's latency down.
        """
        if not items:
            return
        self._pending.extend(items)
        self._pending_views.extend(views if views is not None else [None] * len(items))
        self._pending_positions.extend(positions if positions is not None else [None] * len(items))
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
        batch = Batch(self._pending, self._pending_views, self._pending_positions)
        batch.end = self.line.ends()
        self._pending, self._pending_views, self._pending_positions = [], [], []
        self._writing = True
        self._write_slice(batch, list(self.clients), 0)

    def _write_slice(self, batch: Batch, clients: list[LiveClient], start: int) -> None:
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
            event_filter, floor = client.filter, client.floor
            if floor is not None:
                frame, count = batch.frame_for(event_filter, floor)
                if batch.passed(floor):
                    client.floor = None
            elif event_filter is None:
                frame, count = everything
            else:
                frame, count = batch.frame_for(event_filter)
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


hub = FanoutHub()
