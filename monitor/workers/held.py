"""What a worker keeps of the batches it has read, for dead letters: the
records' original headers, and which records are re-driven ones.

A re-driven record (:func:`monitor.workers.redrive.redrive`) carries
the headers :data:`REDRIVE_LETTER` (the dead letter's id) and
:data:`REDRIVE_FOR` (the groups it is for, comma-separated: those that
had not stored it). :meth:`HeldRecords.hold` leaves it out of the batch of a
group it is not for, which processed the original, and remembers, by
position, which letter the others' copies re-drive. :meth:`HeldRecords.about`
gives a batch's writer what listing its dead letters needs
(:class:`Listing`). Nothing here touches the database; everything runs on
the worker's event loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain

from aiokafka import ConsumerRecord

from monitor.workers.records import Batch, DeadRecord, RecordedFrom

REDRIVE_LETTER = "eventsite-redrive-letter"
REDRIVE_FOR = "eventsite-redrive-for"
REDRIVEN_FROM = "redriven.from"  # where the letter was read: "topic/partition/offset"
REDRIVE_HEADERS = frozenset({REDRIVE_LETTER, REDRIVE_FOR, REDRIVEN_FROM})

# A record's place: topic, partition and position on the stream.
Position = tuple[str, int, int]
Headers = list[tuple[str, bytes]]

KEPT_BATCHES = 4


@dataclass(frozen=True)
class Listing:
    """What listing a batch's dead letters needs beyond the records: the letter
    each re-driven record re-drives, and the original headers of the dead ones."""

    letters: Mapping[Position, int] = field(default_factory=dict)
    headers: Mapping[Position, Headers] = field(default_factory=dict)


def redrive_of(headers: Sequence[tuple[str, bytes]]) -> tuple[int, frozenset[str]] | None:
    """The letter a record re-drives and the groups it is for, from its headers;
    None for any other record, or for headers that do not read as a re-drive."""
    letter = groups = None
    for name, value in headers:
        if name == REDRIVE_LETTER:
            letter = value
        elif name == REDRIVE_FOR:
            groups = value
    if letter is None or groups is None:
        return None
    try:
        return int(letter), frozenset(filter(None, groups.decode().split(",")))
    except (ValueError, UnicodeDecodeError):
        return None


def at_positions(dead: list[DeadRecord], bases: Mapping[int, int]) -> list[DeadRecord]:
    """Dead records read from the broker at their positions on the stream (see
    :mod:`monitor.kafka.shift`), as the valid events are, so that a record is
    one letter across the embedded broker's roll-overs."""
    if not bases or not dead:
        return dead
    return [dataclasses.replace(d, offset=d.offset + bases.get(d.partition, 0)) for d in dead]


@dataclass(frozen=True)
class _Held:
    batch: Batch
    bases: Mapping[int, int]
    letters: dict[Position, int]  # the letter each re-driven record for the group re-drives


class HeldRecords:
    """The latest batches one worker has read (see the module's text).

    A worker has at most two batches read and not committed: the one being
    made durable and committed, and the next one, split while it waits.
    The latest :data:`KEPT_BATCHES` are kept, so no batch is let go of early
    whatever the worker's loop; older ones are forgotten as new ones come.
    """

    def __init__(self) -> None:
        self._held: list[_Held] = []

    def hold(self, batch: Batch, group: str, bases: Mapping[int, int]) -> Batch:
        """Keep ``batch``; return it without the re-driven records that are not
        for ``group``."""
        held = _Held(batch, bases, {})
        self._held = [*self._held[1 - KEPT_BATCHES :], held]
        skipped: set[tuple[int, int]] = set()
        for records in batch.values():
            for record in records:
                redrive = redrive_of(record.headers) if record.headers else None
                if redrive is None:
                    continue
                if group in redrive[1]:
                    held.letters[position(record, bases)] = redrive[0]
                else:
                    skipped.add((record.partition, record.offset))
        if not skipped:
            return batch
        return {
            tp: [r for r in records if (r.partition, r.offset) not in skipped]
            for tp, records in batch.items()
        }

    def clear(self) -> None:
        """Forget every batch (the worker let go of its consumer)."""
        self._held = []

    def about(self, valid: Sequence[RecordedFrom], dead: Sequence[DeadRecord]) -> Listing:
        """The letters re-driven among ``valid`` and ``dead``, and the original
        headers of ``dead`` (none for a record no held batch holds)."""
        letters: dict[Position, int] = {}
        redriven = [held.letters for held in self._held if held.letters]
        if redriven:
            places = [(r.topic, r.partition, r.offset) for r in valid]
            places += [(d.topic, d.partition, d.offset) for d in dead]
            for held_letters in redriven:  # oldest first: a batch read again has the last word
                letters.update((at, held_letters[at]) for at in places if at in held_letters)
        return Listing(letters, self._headers_of(dead) if dead else {})

    def _headers_of(self, dead: Sequence[DeadRecord]) -> dict[Position, Headers]:
        wanted = {(d.topic, d.partition, d.offset) for d in dead}
        found: dict[Position, Headers] = {}
        for held in self._held:
            for record in chain.from_iterable(held.batch.values()):
                at = position(record, held.bases)
                if at in wanted:
                    found[at] = [(name, bytes(value)) for name, value in record.headers]
        return found


def position(record: ConsumerRecord, bases: Mapping[int, int]) -> Position:
    """Where a record read from the broker is on the stream."""
    return (record.topic, record.partition, record.offset + bases.get(record.partition, 0))
