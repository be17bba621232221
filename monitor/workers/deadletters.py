"""Dead letters: records a consumer group could not process, sent aside, listed, re-driven.

A worker sends each such record to the dead-letter topic with its original
bytes and headers naming its topic, partition, offset, group and the reason
(:func:`send_dead_letters`), then lists it in the database
(:func:`record_dead_letters`, :class:`~monitor.models.DeadLetter`) in the
transaction that makes its batch durable. Staff find it there and, after a
fix, re-drive it (:func:`redrive_now`): its original bytes go back on the
events topic, where every group reads it again (and deduplicates it by
event id).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from django.conf import settings
from django.utils import timezone

from monitor.kafka import clients as kafka
from monitor.models import DeadLetter
from monitor.workers.records import DeadRecord

logger = logging.getLogger(__name__)

# Room for a record's key, headers and framing beyond its value.
RECORD_OVERHEAD_BYTES = 64 * 1024


async def send_dead_letters(producer: AIOKafkaProducer, group: str, dead: list[DeadRecord]) -> None:
    """Send each dead record to the dead-letter topic, its value cut to
    ``DLQ_MAX_RECORD_BYTES``; return once the broker acknowledged them all
    (raise if it refused one)."""
    futures = []
    for record in dead:
        logger.warning(
            "%s: dead-lettering %s[%d]@%d: %s",
            group,
            record.topic,
            record.partition,
            record.offset,
            record.reason,
        )
        value, headers = record.for_topic(group, settings.DLQ_MAX_RECORD_BYTES)
        futures.append(
            await producer.send(settings.KAFKA_DLQ_TOPIC, value, key=record.key, headers=headers)
        )
    await asyncio.gather(*futures)


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
    """Stamp the letters as re-driven now; return how many were found."""
    return DeadLetter.objects.filter(pk__in=ids).update(redriven_at=timezone.now())


def redrive_now(letters: list[DeadLetter]) -> int:
    """Re-drive from synchronous code (admin, command); returns how many were acknowledged."""

    async def run() -> list[int]:
        largest = max((letter.size for letter in letters), default=0)
        producer = kafka.make_producer(max_request_size=largest + RECORD_OVERHEAD_BYTES)
        await producer.start()
        try:
            return await redrive(producer, letters)
        finally:
            await producer.stop()

    return mark_redriven(asyncio.run(run()))
