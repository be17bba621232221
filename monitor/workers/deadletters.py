"""Dead letters: records consumer groups could not process, sent aside and listed.

A worker sends each record it refuses to the dead-letter topic with its
original bytes and headers naming its topic, partition, offset (its
position on the stream), group and the reason (:func:`send_dead_letters`):
one DLQ record per group that refused it, and one more each time a
re-driven copy is refused again. In the transaction that makes its batch
durable, it lists the record in the database (:func:`record_dead_letters`):
one :class:`~monitor.models.DeadLetter` per record, whichever groups refused
it, with one :class:`~monitor.models.DeadLetterGroup` part per group.

Staff find it there and, after a fix, re-drive it
(:mod:`monitor.workers.redrive`): its original bytes and headers go back on
the events topic, with headers naming the letter and the groups it is for,
those whose part is not stored (see :mod:`monitor.workers.held`); the other
groups skip it. A group it is for either stores it, its part marked stored
in the same transaction (:func:`settle_redriven`), or refuses it again: one
more attempt on its part of the same letter, never a new letter. A group
whose part is stored skips any further copy, so re-driving twice does no
group's work twice.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterable, Mapping, Sequence

from aiokafka import AIOKafkaProducer
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from monitor.models import DeadLetter, DeadLetterGroup
from monitor.workers.held import REDRIVE_HEADERS, Headers, Listing, Position
from monitor.workers.records import DeadRecord, RecordedFrom

logger = logging.getLogger(__name__)

# Room for a record's key, headers and framing beyond its value.
RECORD_OVERHEAD_BYTES = 64 * 1024
# Letters looked up per query (well under SQLite's limit on bound variables).
LOOKUP_CHUNK = 500


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


def record_dead_letters(
    group: str, dead: Iterable[DeadRecord], listing: Listing | None = None
) -> None:
    """List dead records in the database, in the caller's transaction.

    A record is one letter, whichever groups refuse it, and ``group`` adds
    its part to it once: listing the same records again (a batch read again)
    changes nothing. A re-driven copy (``listing.letters``) of a letter
    still holding the same bytes counts one more attempt on ``group``'s part
    of that letter instead (see :func:`_refused_again`). A letter that a
    group refuses after its last re-drive is pending again.
    """
    dead = list(dead)
    listing = listing or Listing()
    copies = _letters_of(
        [((d.topic, d.partition, d.offset), d.value) for d in dead], listing.letters
    )
    fresh = [record for index, record in enumerate(dead) if index not in copies]
    if fresh:
        _list_letters(group, fresh, listing.headers)
    for index, letter in copies.items():
        _refused_again(group, dead[index], letter)


def settle_redriven(
    group: str, valid: list[RecordedFrom], letters: Mapping[Position, int]
) -> list[RecordedFrom]:
    """The records of ``valid`` that ``group`` is to process, in the caller's
    transaction: a re-driven copy of a letter only if ``group``'s part of it
    is not stored yet, and that part is marked stored (so only if the batch
    is, and by one copy only); every other record."""
    if not letters:
        return valid
    copies = _letters_of([((r.topic, r.partition, r.offset), r.raw) for r in valid], letters)
    if not copies:
        return valid
    now = timezone.now()
    skipped = set()
    for index, letter in copies.items():
        waiting = DeadLetterGroup.objects.filter(letter_id=letter, group=group, stored_at=None)
        if not waiting.update(stored_at=now):
            skipped.add(index)
    return [record for index, record in enumerate(valid) if index not in skipped]


def _letters_of(
    records: Sequence[tuple[Position, bytes | None]], letters: Mapping[Position, int]
) -> dict[int, int]:
    """Per index in ``records``, the letter it re-drives, for those at a position
    in ``letters`` whose letter is listed with the same bytes (a header naming
    another letter does not make a record a re-drive of it)."""
    named = {i: letters[at] for i, (at, _) in enumerate(records) if at in letters}
    if not named:
        return {}
    values = dict(DeadLetter.objects.filter(pk__in=set(named.values())).values_list("pk", "value"))
    return {
        index: letter
        for index, letter in named.items()
        if letter in values and _bytes(values[letter]) == records[index][1]
    }


def _bytes(value: bytes | memoryview | None) -> bytes | None:
    return None if value is None else bytes(value)


def _list_letters(group: str, dead: list[DeadRecord], headers: Mapping[Position, Headers]) -> None:
    """One letter per record (kept if another group listed it first), and
    ``group``'s part of it (kept if listed before)."""
    # In position order, as every group writes them: two groups' transactions
    # waiting on each other's new letters in opposite orders would deadlock.
    dead = sorted(dead, key=lambda d: (d.topic, d.partition, d.offset))
    now = timezone.now()
    DeadLetter.objects.bulk_create(
        [
            DeadLetter(
                topic=d.topic,
                partition=d.partition,
                offset=d.offset,
                key=d.key,
                value=d.value,
                headers=_stored_headers(headers.get((d.topic, d.partition, d.offset), [])),
                size=len(d.value or b""),
                created_at=now,
            )
            for d in dead
        ],
        ignore_conflicts=True,
    )
    ids = _letter_ids([(d.topic, d.partition, d.offset) for d in dead])
    DeadLetterGroup.objects.bulk_create(
        [
            DeadLetterGroup(
                letter_id=ids[(d.topic, d.partition, d.offset)],
                group=group,
                reason=d.reason,
                failed_at=now,
                failed_partition=d.partition,
                failed_offset=d.offset,
            )
            for d in dead
        ],
        ignore_conflicts=True,
    )
    _reopen(group, list(ids.values()))


def _refused_again(group: str, record: DeadRecord, letter: int) -> None:
    """``group`` refused a re-driven copy of ``letter``: one more attempt on its
    part, unless this copy was counted already (its batch read again) or the
    group stored the record meanwhile. A group with no part yet gets one."""
    now = timezone.now()
    part = DeadLetterGroup.objects.filter(letter_id=letter, group=group)
    counted = (
        part.filter(stored_at=None)
        .exclude(failed_partition=record.partition, failed_offset=record.offset)
        .update(
            reason=record.reason,
            attempts=F("attempts") + 1,
            failed_at=now,
            failed_partition=record.partition,
            failed_offset=record.offset,
        )
    )
    if not counted and not part.exists():
        DeadLetterGroup.objects.bulk_create(
            [
                DeadLetterGroup(
                    letter_id=letter,
                    group=group,
                    reason=record.reason,
                    failed_at=now,
                    failed_partition=record.partition,
                    failed_offset=record.offset,
                )
            ],
            ignore_conflicts=True,
        )
    _reopen(group, [letter])


def _reopen(group: str, letters: list[int]) -> None:
    """Letters ``group`` refused after their last re-drive are pending again."""
    for start in range(0, len(letters), LOOKUP_CHUNK):
        DeadLetter.objects.filter(
            pk__in=letters[start : start + LOOKUP_CHUNK],
            groups__group=group,
            groups__failed_at__gt=F("redriven_at"),
        ).update(redriven_at=None)


def _letter_ids(positions: list[Position]) -> dict[Position, int]:
    """The letter at each position (each is listed)."""
    by_partition: dict[tuple[str, int], list[int]] = {}
    for topic, partition, offset in positions:
        by_partition.setdefault((topic, partition), []).append(offset)
    ids: dict[Position, int] = {}
    for (topic, partition), offsets in by_partition.items():
        for start in range(0, len(offsets), LOOKUP_CHUNK):
            rows = DeadLetter.objects.filter(
                topic=topic, partition=partition, offset__in=offsets[start : start + LOOKUP_CHUNK]
            ).values_list("offset", "pk")
            ids.update({(topic, partition, offset): pk for offset, pk in rows})
    return ids


def _stored_headers(headers: Headers) -> list[list[str]]:
    """Headers as a JSON list, without those of an earlier re-drive."""
    return [
        [name, base64.b64encode(value).decode()]
        for name, value in headers
        if name not in REDRIVE_HEADERS
    ]
