"""Eager publishing from the web process, off the request path.

Views never wait for the broker: after their transaction commits they hand
the outbox row to :data:`publisher`, which runs one aiokafka producer on an
event loop in a background thread, sends what queued up since its last
round together, and marks the acknowledged rows sent in one UPDATE. If the
broker is down the rows simply stay unsent for the outbox relay.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from aiokafka import AIOKafkaProducer
from django.db import close_old_connections

from monitor.events import outbox
from monitor.kafka import clients as kafka
from monitor.models import OutboxEvent

logger = logging.getLogger(__name__)


class EventPublisher:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pending: list[OutboxEvent] = []
        self._wakeup: asyncio.Event | None = None
        self._stopping = False
        self._idle = threading.Event()
        self._idle.set()
        # One thread for database writes, so the publisher holds one connection.
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="publisher-db")

    def submit(self, row: OutboxEvent) -> None:
        """Queue a committed outbox row for sending; returns at once."""
        with self._lock:
            self._pending.append(row)
            self._idle.clear()
            if self._thread is None:
                self._start()
            loop, wakeup = self._loop, self._wakeup
        if loop is not None and wakeup is not None:
            loop.call_soon_threadsafe(wakeup.set)

    def wait_idle(self, timeout: float) -> bool:
        """Block until everything submitted so far was sent or given up on."""
        return self._idle.wait(timeout)

    def _start(self) -> None:
        self._stopping = False
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="event-publisher", daemon=True
        )
        self._thread.start()
        ready.wait(5)

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._wakeup = asyncio.Event()
        ready.set()
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()

    async def _serve(self) -> None:
        producer: AIOKafkaProducer | None = None
        assert self._wakeup is not None
        while not self._stopping:
            await self._wakeup.wait()
            self._wakeup.clear()
            with self._lock:
                rows, self._pending = self._pending, []
            if rows:
                producer = await self._send(producer, rows)
            with self._lock:
                if not self._pending:
                    self._idle.set()
        if producer is not None:
            await producer.stop()

    async def _send(
        self, producer: AIOKafkaProducer | None, rows: list[OutboxEvent]
    ) -> AIOKafkaProducer | None:
        """Send one round; returns the producer to reuse (None if it broke)."""
        loop = asyncio.get_running_loop()
        try:
            if producer is None:
                # A new producer follows a failure: the broker may have come back
                # empty, so make sure the topics exist with their partitions.
                await asyncio.wait_for(kafka.ensure_topics(), 10)
                producer = kafka.make_producer()
                await asyncio.wait_for(producer.start(), 10)
            acknowledged = await outbox.publish_rows(producer, rows)
        except Exception as exc:  # noqa: BLE001 - the relay will send these rows later
            logger.warning(
                "eager publish failed, leaving %d events to the relay: %s", len(rows), exc
            )
            if producer is not None:
                await _stop_quietly(producer)
            return None
        await loop.run_in_executor(self._db, _mark_sent, acknowledged)
        return producer

    def stop(self, timeout: float = 5.0) -> None:
        """Flush what is queued (within ``timeout``) and stop the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None or not thread.is_alive():
            return
        self.wait_idle(timeout)
        self._stopping = True
        if self._loop is not None and self._wakeup is not None:
            self._loop.call_soon_threadsafe(self._wakeup.set)
        thread.join(timeout)


def _mark_sent(event_ids: list[str]) -> None:
    close_old_connections()
    try:
        outbox.mark_sent(event_ids)
    except Exception:  # noqa: BLE001 - unmarked rows are re-sent by the relay, deduplicated later
        logger.exception("could not mark %d events sent", len(event_ids))


async def _stop_quietly(producer: AIOKafkaProducer) -> None:
    try:
        await producer.stop()
    except Exception:  # noqa: BLE001
        logger.debug("producer stop failed", exc_info=True)


publisher = EventPublisher()
atexit.register(publisher.stop)
