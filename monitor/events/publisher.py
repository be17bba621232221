"""Eager publishing: the first attempt to put a committed outbox row on Kafka,
made from the process that saved it, once the response is sent.

Views never wait for the broker: after their transaction commits they hand
the outbox row to :data:`publisher`, which runs one aiokafka producer on a
background event loop, sends what queued up since its last round together,
and marks the acknowledged rows sent in one UPDATE on its one database
thread. Whatever it does not confirm (broker down, process killed, the mark
failing) stays unsent in the outbox for the relay, which sends it again;
consumers deduplicate by event id.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading

from aiokafka import AIOKafkaProducer

from monitor.events import outbox
from monitor.events.sending import publish_rows
from monitor.kafka import clients as kafka
from monitor.models import OutboxEvent
from monitor.runtime.background_loop import BackgroundLoop
from monitor.runtime.database_thread import DatabaseThread

logger = logging.getLogger(__name__)

# How long starting a producer may take before the round counts as failed.
PRODUCER_START_TIMEOUT_SECONDS = 10.0


class EventPublisher:
    """Sends submitted rows in rounds, in submission order: each round takes
    everything queued since the previous one, and one round runs at a time."""

    def __init__(self, name: str = "event-publisher") -> None:
        self._loop = BackgroundLoop(name)
        self._db = DatabaseThread(f"{name}-db")
        self._producer: AIOKafkaProducer | None = None
        self._lock = threading.Lock()
        self._pending: list[OutboxEvent] = []
        self._draining = False
        self._idle = threading.Event()
        self._idle.set()

    def submit(self, row: OutboxEvent) -> None:
        """Queue a committed outbox row for sending; returns at once.

        Starts the rounds unless they are running: then the next one takes it.
        """
        with self._lock:
            self._pending.append(row)
            self._idle.clear()
            if self._draining:
                return
            self._draining = True
        self._loop.submit(self._drain())

    def wait_idle(self, timeout: float) -> bool:
        """Block until everything submitted so far was sent or given up on;
        False if that did not happen within ``timeout`` seconds."""
        return self._idle.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Flush what is queued (within ``timeout``), stop the producer and the
        thread. Rows still queued are left to the relay, or to the round a
        later :meth:`submit` starts."""
        if not self._loop.running:
            return
        self.wait_idle(timeout)
        try:
            self._loop.call(self._close(timeout), timeout)
        except Exception:  # noqa: BLE001 - stopping must not fail; the relay covers what is left
            logger.debug("event publisher did not close cleanly", exc_info=True)
        self._loop.stop(timeout)
        with self._lock:
            self._draining = False

    async def _drain(self) -> None:
        """Run rounds until nothing is queued."""
        while rows := self._take_pending():
            try:
                await self._send(rows)
            except Exception:  # noqa: BLE001 - the relay will send these rows later
                logger.exception("eager publish round failed for %d events", len(rows))

    def _take_pending(self) -> list[OutboxEvent]:
        """Everything queued; when nothing is, the rounds end (in the same lock,
        so that a row submitted afterwards starts them again)."""
        with self._lock:
            rows, self._pending = self._pending, []
            if not rows:
                self._draining = False
                self._idle.set()
            return rows

    async def _send(self, rows: list[OutboxEvent]) -> None:
        """One round: send, then mark the acknowledged rows sent. A failing
        producer is dropped; the next round starts a new one."""
        try:
            if self._producer is None:
                producer = kafka.make_producer()
                self._producer = producer
                await asyncio.wait_for(producer.start(), PRODUCER_START_TIMEOUT_SECONDS)
            acknowledged = await publish_rows(self._producer, rows)
        except Exception as exc:  # noqa: BLE001 - the relay will send these rows later
            logger.warning(
                "eager publish failed, leaving %d events to the relay: %s", len(rows), exc
            )
            producer, self._producer = self._producer, None
            await kafka.stop_quietly(producer)
            return
        if acknowledged:
            try:
                await self._db.run(outbox.mark_sent, acknowledged)
            except Exception:  # noqa: BLE001 - unmarked rows are re-sent by the relay, deduplicated later
                logger.exception("could not mark %d events sent", len(acknowledged))

    async def _close(self, timeout: float) -> None:
        producer, self._producer = self._producer, None
        await kafka.stop_quietly(producer, timeout=timeout)
        await self._db.close()


publisher = EventPublisher()
atexit.register(publisher.stop)
