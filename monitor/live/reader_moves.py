"""How the live reader notices the topic or the broker change under it.

:func:`log_went_back` tells, after each fetch, whether the broker's log of
a partition now ends before the reader's line: the broker was replaced (the
embedded broker rolled over, or came back empty), so the reader checks the
cluster at once instead of at its next periodic check.
:func:`follow_new_partitions` adds partitions created since the reader
started, read from their beginning.
"""

from __future__ import annotations

import logging

from aiokafka import TopicPartition

from monitor.kafka.shift import ShiftedConsumer
from monitor.live.line import LiveLine

logger = logging.getLogger(__name__)


def log_went_back(
    consumer: ShiftedConsumer, assigned: list[TopicPartition], line: LiveLine
) -> bool:
    """Whether a partition's high watermark, as last fetched, is behind ``line``."""
    for tp in assigned:
        mark = consumer.highwater(tp)
        if mark is not None and mark < line.end(tp):
            return True
    return False


async def follow_new_partitions(
    consumer: ShiftedConsumer, topics: list[str], assigned: list[TopicPartition]
) -> list[TopicPartition]:
    """The partitions now assigned: ``assigned``, and those of ``topics`` created
    since (a watched topic created since, too), read from their beginning."""
    # Metadata of every topic: the consumer's own knows only the topics it is
    # assigned (and those there were at its start), never a watched topic created since.
    metadata = await consumer._client.fetch_all_metadata()
    known = set(assigned)
    added = [
        TopicPartition(topic, partition)
        for topic in topics
        for partition in sorted(metadata.partitions_for_topic(topic) or ())
        if TopicPartition(topic, partition) not in known
    ]
    if not added:
        return assigned
    positions = {tp: await consumer.position(tp) for tp in assigned}
    consumer.assign([*assigned, *added])
    for tp, position in positions.items():
        consumer.seek(tp, position)
    await consumer.seek_to_beginning(*added)
    logger.info("live reader now also reads %s", ", ".join(f"{t}/{p}" for t, p in added))
    return [*assigned, *added]
