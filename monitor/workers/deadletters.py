"""Dead letters: records a consumer group could not process.

Each goes to the dead-letter topic with its original bytes and headers
naming its topic, partition, offset, group and the reason, and is listed in
the database (:class:`~monitor.models.DeadLetter`) so that staff can find it
and, after a fix, re-drive it: put its original bytes back on the events
topic, where every group reads it again (and deduplicates it by event id).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer, ConsumerRecord
from django.conf import settings
from django.utils import timezone

from monitor.events.schema import encode_event
from monitor.models import DeadLetter
from monitor.workers.analytics import RecordedFrom

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeadRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str

    @classmethod
    def of(cls, record: ConsumerRecord, reason: str) -> DeadRecord:
        return cls(record.topic, record.partition, record.offset, record.key, record.value, reason)

    @classmethod
    def from_event(cls, record: RecordedFrom, reason: str) -> DeadRecord:
        """A valid event the worker could not process, with its original bytes."""
        value = record.raw if record.raw is not None else encode_event(record.event)
        return cls(record.topic, record.partition, record.offset, record.key, value, reason)

    def for_topic(self, group: str, max_bytes: int) -> tuple[bytes | None, list[tuple[str, bytes]]]:
        """The value and headers for the DLQ topic. A value over ``max_bytes`` is cut
        to that size, and the headers say so and give the original size."""
        headers = [
            ("dlq.reason", self.reason.encode()),
            ("dlq.topic", self.topic.encode()),
            ("dlq.partition", str(self.partition).encode()),
            ("dlq.offset", str(self.offset).encode()),
            ("dlq.group", group.encode()),
        ]
        value = self.value
        if value is not None and len(value) > max_bytes:
            headers += [("dlq.truncated", b"true"), ("dlq.original_size", str(len(value)).encode())]
            value = value[:max_bytes]
        return value, headers


def record_dead_letters(group: str, dead: Iterable[DeadRecord]) -> None:
    """List dead records in the database; a record already listed for the group is skipped."""
    DeadLetter.objects.bulk_create(
        [
            DeadLetter(
                group=group,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                key=record.key,
                value=record.value,
                size=len(record.value or b""),
                reason=record.reason,
            )
            for record in dead
        ],
        ignore_conflicts=True,
    )


async def redrive(producer: AIOKafkaProducer, letters: list[DeadLetter]) -> list[int]:
    """Publish the letters' original bytes to the events topic; return the ids acknowledged."""
    futures = []
    for letter in letters:
        origin = f"{letter.topic}/{letter.partition}/{letter.offset}"
        future = await producer.send(
            settings.KAFKA_EVENTS_TOPIC,
            bytes(letter.value) if letter.value is not None else None,
            key=bytes(letter.key) if letter.key is not None else None,
            headers=[("redriven.from", origin.encode())],
        )
        futures.append((letter.pk, future))
    acknowledged = []
    for pk, future in futures:
        try:
            await future
            acknowledged.append(pk)
        except Exception as exc:  # noqa: BLE001 - reported; the letter stays un-redriven
            logger.warning("re-drive of dead letter %s failed: %s", pk, exc)
    return acknowledged


def mark_redriven(ids: list[int]) -> int:
    return DeadLetter.objects.filter(pk__in=ids).update(redriven_at=timezone.now())


def redrive_now(letters: list[DeadLetter]) -> int:
    """Re-drive from synchronous code (admin, command); returns how many were acknowledged."""
    from monitor.kafka import clients as kafka

    async def run() -> list[int]:
        largest = max((letter.size for letter in letters), default=0)
        producer = kafka.make_producer(max_request_size=largest + 64 * 1024)
        await producer.start()
        try:
            return await redrive(producer, letters)
        finally:
            await producer.stop()

    return mark_redriven(asyncio.run(run()))
