"""Positions that keep growing when the embedded broker rolls over.

The embedded broker keeps everything in memory, so it is rolled over from
time to time (:mod:`monitor.management.rolling`): it starts again empty, as
a new cluster, once the site's consumer groups have processed all it held.
Its offsets then start again at 0. Each life of the broker has *bases*, per
topic and partition, that continue the offsets of the life before
(:class:`~monitor.models.BrokerEpoch`): a record at offset ``o`` of the new
cluster is at position ``base + o`` on the live stream, as on a Kafka broker
whose retention deleted the old records.

:class:`ShiftedConsumer` is a consumer that speaks positions: the records it
returns, and every offset it takes or gives (seek, position, beginning and
end offsets, high watermark), are the broker's offsets plus the bases it was
given for the cluster it reads (:meth:`ShiftedConsumer.shift_to`). With no
bases (Apache Kafka), positions are the broker's offsets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

# Per topic, per partition: what is added to the broker's offsets.
Bases = Mapping[str, Mapping[int, int]]


class ShiftedConsumer(AIOKafkaConsumer):  # type: ignore[misc]
    """An AIOKafkaConsumer whose offsets are positions (see the module's text)."""

    def __init__(self, *topics: str, **options: Any) -> None:
        super().__init__(*topics, **options)
        self._bases: dict[str, dict[int, int]] = {}

    def shift_to(self, bases: Bases) -> None:
        """Use ``bases`` from now on (those of the cluster the consumer reads)."""
        self._bases = {topic: dict(parts) for topic, parts in bases.items()}

    def base(self, tp: TopicPartition) -> int:
        return self._bases.get(tp.topic, {}).get(tp.partition, 0)

    def _shifted(self, offsets: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        return {tp: offset + self.base(tp) for tp, offset in offsets.items()}

    def _records(
        self, tp: TopicPartition, records: Iterable[ConsumerRecord[Any, Any]]
    ) -> list[Any]:
        base = self.base(tp)
        if not base:
            return list(records)
        return [dataclasses.replace(record, offset=record.offset + base) for record in records]

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]:
        batch: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]
        batch = await super().getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)
        if not self._bases:
            return batch
        return {tp: self._records(tp, records) for tp, records in batch.items()}

    def seek(self, partition: TopicPartition, offset: int) -> None:
        super().seek(partition, max(0, offset - self.base(partition)))

    async def position(self, partition: TopicPartition) -> int:
        position: int = await super().position(partition)
        return position + self.base(partition)

    def highwater(self, partition: TopicPartition) -> int | None:
        mark: int | None = super().highwater(partition)
        return None if mark is None else mark + self.base(partition)

    async def beginning_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        return self._shifted(await super().beginning_offsets(partitions))

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return self._shifted(await super().end_offsets(partitions))
