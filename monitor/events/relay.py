"""The outbox relay: publishes the outbox rows that eager publishing did not
confirm (broker down, process killed), so that every saved event reaches Kafka."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from asgiref.sync import sync_to_async
from django.db import close_old_connections

from monitor.events.outbox import relay_outbox
from monitor.kafka import clients as kafka

logger = logging.getLogger(__name__)


class OutboxRelay:
    """Publishes outbox rows that the eager path did not confirm, every ``interval`` seconds."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        producer: AIOKafkaProducer | None = None
        while not self._stop.is_set():
            try:
                # Every round: a broker that restarted empty gets its topics back
                # (with their partitions) before anything is sent to them.
                await kafka.ensure_topics()
                if producer is None:
                    producer = kafka.make_producer()
                    await producer.start()
                # A connection lost while idle (a database restart) is replaced,
                # in the thread the relay's queries run in.
                await sync_to_async(close_old_connections)()
                sent = await relay_outbox(producer)
                if sent:
                    logger.info("relayed %d outbox events", sent)
            except Exception as exc:  # noqa: BLE001 - retried on the next round
                logger.warning("outbox relay round failed: %s", exc)
                if producer is not None:
                    await kafka.stop_quietly(producer)
                    producer = None
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval)
            except TimeoutError:
                pass
        if producer is not None:
            await kafka.stop_quietly(producer)
