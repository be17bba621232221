"""What a worker makes of a poll batch: CloudEvents and dead records.

:func:`split_records` is the first step of every worker's loop (see
:mod:`monitor.workers.base`): each Kafka record is read through
:func:`~monitor.events.received.receive` and becomes either a
:class:`RecordedFrom` (a CloudEvent of any type and source, whether it is
the site's own verified event, and the position it was read from) or a
:class:`DeadRecord` (a record that is not a CloudEvent: its original bytes
and why), never both, and in the order the batch holds them per partition.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from aiokafka import ConsumerRecord, TopicPartition

from monitor.events.received import receive
from monitor.events.schema import Event, encode_event

Batch = Mapping[TopicPartition, Sequence[ConsumerRecord]]

# The namespace of the keys of events that are not the site's own (event_key).
UNVERIFIED_NAMESPACE = uuid.UUID("5d0a4f0e-3c1b-4d7e-9a55-2f6f3b8c1e07")


def event_key(event: Event, *, verified: bool) -> uuid.UUID:
    """The key an event is stored and deduplicated by.

    The site's own verified events keep their id (a UUID). Any other
    CloudEvent's id is unique only with its source and need not be a UUID:
    its key is a UUID 5 over its source and id, in a namespace of its own, so
    that the same event delivered again has the same key, and an unsigned or
    forged event reusing a real event's id never takes the real one's place.
    """
    if verified:
        return uuid.UUID(event["id"])
    return uuid.uuid5(UNVERIFIED_NAMESPACE, f"unverified\n{event['source']}\n{event['id']}")


@dataclass(frozen=True, slots=True)
class RecordedFrom:
    """A CloudEvent with the Kafka position it was read from.

    Only a ``verified`` event (one of the site's own, signed with its key) may
    be acted on; any other is recorded and counted, nothing more. An event
    that is not verified need not have the site's attributes (``subject``,
    ``actor``, ``time``, an object as ``data``).
    """

    event: Event
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    raw: bytes | None = None  # the record's value as read, when it was read from Kafka
    # The event's key (event_key) and time (its own, else the record's), as read;
    # None: worked out from the event again.
    event_id: uuid.UUID | None = None
    time: datetime | None = None
    verified: bool = False


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
    """The batch's CloudEvents and its dead records (not CloudEvents, or over
    ``max_bytes``), each list in the batch's order. Each event's offset is its
    position on the stream: the broker's offset plus its partition's base
    (``bases``, see :mod:`monitor.kafka.shift`); dead records keep the
    broker's offsets."""
    valid: list[RecordedFrom] = []
    dead: list[DeadRecord] = []
    bases = bases or {}
    for records in batch.values():
        for record in records:
            received = receive(record, max_bytes=max_bytes)
            event = received.event
            if event is None:
                dead.append(DeadRecord.of(record, received.reason or "not a CloudEvent"))
                continue
            valid.append(
                RecordedFrom(
                    event,
                    record.topic,
                    record.partition,
                    record.offset + bases.get(record.partition, 0),
                    record.key,
                    record.value,
                    event_key(event, verified=received.verified),
                    received.time,
                    received.verified,
                )
            )
    return valid, dead
