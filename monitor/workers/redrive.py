"""Re-driving dead letters once their cause is fixed (admin, ``manage.py redrive_dead_letters``).

A letter (:class:`~monitor.models.DeadLetter`) goes back on the events topic
with its original key, bytes and headers (the site's signature among them),
and three more: :data:`~monitor.workers.held.REDRIVEN_FROM` (where it was
read), :data:`~monitor.workers.held.REDRIVE_LETTER` (its id) and
:data:`~monitor.workers.held.REDRIVE_FOR` (the groups whose part is not
stored). Only those groups process it (see :mod:`monitor.workers.held` and
:mod:`monitor.workers.deadletters`); a letter every group has stored is not
sent. A letter is stamped re-driven only once the broker acknowledged it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterable
from datetime import datetime

from aiokafka import AIOKafkaProducer
from django.conf import settings
from django.db.models import Exists, OuterRef
from django.utils import timezone

from monitor.kafka import clients as kafka
from monitor.models import DeadLetter, DeadLetterGroup
from monitor.workers.deadletters import RECORD_OVERHEAD_BYTES
from monitor.workers.held import REDRIVE_FOR, REDRIVE_LETTER, REDRIVEN_FROM

logger = logging.getLogger(__name__)


def groups_waiting(letters: Iterable[int]) -> dict[int, list[str]]:
    """Per letter, the groups that have not stored it, in name order (a letter
    every group has stored is not in the answer)."""
    waiting: dict[int, list[str]] = {}
    parts = DeadLetterGroup.objects.filter(letter_id__in=list(letters), stored_at=None)
    for letter, group in parts.order_by("group").values_list("letter_id", "group"):
        waiting.setdefault(letter, []).append(group)
    return waiting


async def redrive(
    producer: AIOKafkaProducer, letters: list[DeadLetter], waiting: dict[int, list[str]]
) -> list[int]:
    """Publish each letter's original bytes and headers to the events topic, for
    the groups ``waiting`` names for it; return the ids acknowledged."""
    futures = []
    for letter in letters:
        headers = [(name, base64.b64decode(text)) for name, text in letter.headers or []]
        headers += [
            (REDRIVEN_FROM, f"{letter.topic}/{letter.partition}/{letter.offset}".encode()),
            (REDRIVE_LETTER, str(letter.pk).encode()),
            (REDRIVE_FOR, ",".join(waiting[letter.pk]).encode()),
        ]
        future = await producer.send(
            settings.KAFKA_EVENTS_TOPIC,
            bytes(letter.value) if letter.value is not None else None,
            key=bytes(letter.key) if letter.key is not None else None,
            headers=headers,
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


def mark_redriven(ids: list[int], at: datetime | None = None) -> int:
    """Stamp the letters as re-driven at ``at`` (now), all but those a group
    refused again since; return how many were stamped."""
    at = at or timezone.now()
    refused_since = DeadLetterGroup.objects.filter(
        letter=OuterRef("pk"), stored_at=None, failed_at__gt=at
    )
    return (
        DeadLetter.objects.filter(pk__in=ids).exclude(Exists(refused_since)).update(redriven_at=at)
    )


def redrive_now(letters: list[DeadLetter]) -> int:
    """Re-drive from synchronous code (admin, command): each letter goes back on
    the events topic for the groups that have not stored it. Returns how many
    were acknowledged; a letter every group has stored is not sent."""
    waiting = groups_waiting(letter.pk for letter in letters)
    sending = [letter for letter in letters if letter.pk in waiting]
    if not sending:
        return 0
    started = timezone.now()

    async def run() -> list[int]:
        largest = max(letter.size for letter in sending)
        producer = kafka.make_producer(max_request_size=largest + RECORD_OVERHEAD_BYTES)
        await producer.start()
        try:
            return await redrive(producer, sending, waiting)
        finally:
            await producer.stop()

    acknowledged = asyncio.run(run())
    mark_redriven(acknowledged, started)
    return len(acknowledged)
