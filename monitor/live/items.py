"""A record as the stream shows it: its item (the JSON an ``events`` frame
carries) and its view (what filters read), built once when it is read.

The three kinds :mod:`monitor.events.received` tells apart all become items:
the site's verified events and other CloudEvents carry ``event`` (the
envelope, verbatim) and ``verified``; a record that is not a CloudEvent
carries ``record`` (key, headers, a bounded preview of its value) and the
``reason`` it is not one.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, NamedTuple

from aiokafka import TopicPartition
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from monitor.events.received import Received, preview
from monitor.live.protocol import encode_item, encode_record_item

View = dict[str, Any]

# Kafka's own rule for a topic's name.
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def watched_topics() -> list[str]:
    """The topics the live stream shows: the events topic first, then those
    ``KAFKA_WATCH_TOPICS`` adds. Raises ImproperlyConfigured for a name that
    cannot be a topic's."""
    topics = [settings.KAFKA_EVENTS_TOPIC]
    for name in settings.KAFKA_WATCH_TOPICS:
        if not TOPIC_NAME.fullmatch(name):
            raise ImproperlyConfigured(f"KAFKA_WATCH_TOPICS: {name[:64]!r} is not a topic name")
        if name not in topics:
            topics.append(name)
    return topics


class Shown(NamedTuple):
    partition: TopicPartition
    offset: int
    item: str  # as encoded in a frame
    view: View  # topic, verified, and event or record: what filters read
    time: datetime  # the event's time, else the record's


def shown(received: Received, *, offset: int | None = None) -> Shown:
    """``received`` as an item, at ``offset`` (its position on the stream) if given."""
    position = received.offset if offset is None else offset
    topic, partition = received.topic, received.partition
    if received.event is None:
        record = preview(received.record)
        reason = received.reason or "not a CloudEvent"
        item = encode_record_item(
            topic,
            partition,
            position,
            timestamp=received.timestamp_ms,
            reason=reason,
            record=json.dumps(record, separators=(",", ":"), ensure_ascii=False),
        )
        view: View = {"topic": topic, "verified": False, "record": record}
    else:
        value = received.record.value
        assert value is not None  # a CloudEvent was read from it
        item = encode_item(
            topic,
            partition,
            position,
            value,
            timestamp=received.timestamp_ms,
            verified=received.verified,
            reason=received.reason,
        )
        view = {"topic": topic, "verified": received.verified, "event": received.event}
    return Shown(TopicPartition(topic, partition), position, item, view, received.time)


def view_of(item: str) -> View:
    """The view of an encoded item (decoded again: kept items hold only their text)."""
    decoded: View = json.loads(item)
    return decoded


def position_key(part: TopicPartition) -> str:
    """How a position's partition is written on the wire: ``"0"`` for the events
    topic's partition 0, ``"orders/0"`` for another topic's."""
    if part.topic == settings.KAFKA_EVENTS_TOPIC:
        return str(part.partition)
    return f"{part.topic}/{part.partition}"


def parse_position_key(key: str) -> TopicPartition:
    """The partition a wire key names (see :func:`position_key`); ValueError if none."""
    topic, slash, partition = key.rpartition("/")
    if not slash:
        topic = settings.KAFKA_EVENTS_TOPIC
    elif not TOPIC_NAME.fullmatch(topic):
        raise ValueError(f"not a topic: {topic[:64]!r}")
    number = int(partition)
    if number < 0:
        raise ValueError(f"not a partition: {partition!r}")
    return TopicPartition(topic, number)


def position_of(view: View) -> tuple[TopicPartition, int]:
    """Where the item whose view is ``view`` is: its topic's partition, and its offset."""
    return TopicPartition(view["topic"], view["partition"]), view["offset"]
