"""What a worker makes of a poll batch: valid events and dead records.

:func:`split_records` is the first step of every worker's loop (see
:mod:`monitor.workers.base`): each Kafka record becomes either a
:class:`RecordedFrom` (a valid event and the position it was read from) or
a :class:`DeadRecord` (its original bytes and why it was refused), never
both, and in the order the batch holds them per partition.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from aiokafka import ConsumerRecord, TopicPartition

from monitor.events.schema import Event, InvalidEvent, encode_event, parse_record

Batch = Mapping[TopicPartition, Sequence[ConsumerRecord]]


@dataclass(frozen=True, slots=True)
class RecordedFrom:
    """An event with the Kafka position it was read from."""

    event: Event
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    raw: bytes | None = None  # the record's value as read, when it was read from Kafka
    # The event's id and time as validating it parsed them; None: parsed again here.
    event_id: uuid.UUID | None = None
    time: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeadRecord:
    """A record a consumer group could not process, with its original bytes."""

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


def split_records(
    batch: Batch, *, max_bytes: int, bases: Mapping[int, int] | None = None
) -> tuple[list[RecordedFrom], list[DeadRecord]]:
    """The batch's valid events and its dead records (invalid, or over ``max_bytes``),
    each list in the batch's order. Each event's offset is its position on the
    stream: the broker's offset plus its partition's base (``bases``, see
    :mod:`monitor.kafka.shift`); dead records keep the broker's offsets."""
    valid: list[RecordedFrom] = []
    dead: list[DeadRecord] = []
    bases = bases or {}
    for records in batch.values():
        for record in records:
            try:
                event, event_id, time = parse_record(record.value, max_bytes=max_bytes)
            except InvalidEvent as exc:
                dead.append(DeadRecord.of(record, exc.reason))
                continue
            valid.append(
                RecordedFrom(
                    event,
                    record.topic,
                    record.partition,
                    record.offset + bases.get(record.partition, 0),
                    record.key,
                    record.value,
                    event_id,
                    time,
                )
            )
    return valid, dead
