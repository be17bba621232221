"""The time of the record at an offset: what a consumer group's lag in time is read from.

A group's lag in time is the age of the oldest record it has not committed,
the record at the offset where it resumes (:mod:`monitor.dashboard.lag`).
Its time is the record's timestamp, read by fetching that one record.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from aiokafka import TopicPartition

from monitor.dashboard.lag import RecordTime

Wanted = tuple[TopicPartition, int]


class RecordTimes:
    """Timestamps of the records at given offsets, read with one consumer.

    A read fetches each wanted record at most once, the partitions of a round
    together (a round holds one offset per partition; a partition where groups
    wait at several offsets takes several rounds), and stops after ``budget``
    seconds: a record not read by then is answered with the reason. A
    record's time never changes, so each one read is kept, for the cluster it
    was read from, for as long as some read still wants it: a group waiting
    at the same offset costs one fetch, not one per read.
    """

    def __init__(self) -> None:
        self._known: dict[tuple[str | None, TopicPartition, int], int] = {}

    async def read(
        self, consumer: Any, wanted: Iterable[Wanted], *, cluster: str | None, budget: float
    ) -> dict[Wanted, RecordTime]:
        """For each (partition, offset) of ``wanted``: the timestamp (ms) of the
        first record at or after that offset, or why it is not known."""
        wanted = set(wanted)
        found = {
            (tp, offset): self._known[(cluster, tp, offset)]
            for tp, offset in wanted
            if (cluster, tp, offset) in self._known
        }
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        try:
            for offsets in _rounds(wanted - found.keys()):
                left = deadline - loop.time()
                if left <= 0:
                    break
                found.update(await _read_round(consumer, offsets, left))
        finally:
            # Nothing more is fetched until the next read assigns what it wants.
            consumer.pause(*consumer.assignment())
        self._known = {(cluster, tp, offset): time for (tp, offset), time in found.items()}
        missing = f"not read within {budget:g} s"
        return {key: found.get(key, missing) for key in wanted}


def _rounds(wanted: Iterable[Wanted]) -> Iterator[dict[TopicPartition, int]]:
    """The wanted offsets as rounds of at most one offset per partition, lowest first."""
    per_partition: dict[TopicPartition, list[int]] = defaultdict(list)
    for tp, offset in wanted:
        per_partition[tp].append(offset)
    for offsets in per_partition.values():
        offsets.sort()
    depth = max((len(offsets) for offsets in per_partition.values()), default=0)
    for index in range(depth):
        yield {tp: offsets[index] for tp, offsets in per_partition.items() if index < len(offsets)}


async def _read_round(
    consumer: Any, offsets: dict[TopicPartition, int], timeout: float
) -> dict[Wanted, int]:
    """Fetch from each partition at its offset; each one's first record is
    taken, and the partition paused, so that nothing more is fetched from it."""
    consumer.assign(list(offsets))
    for tp, offset in offsets.items():
        consumer.seek(tp, offset)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    found: dict[Wanted, int] = {}
    waiting = set(offsets)
    while waiting:
        left = deadline - loop.time()
        if left <= 0:
            break
        batches = await consumer.getmany(*waiting, timeout_ms=max(int(left * 1000), 1))
        for tp, records in batches.items():
            first = next((r for r in records if r.offset >= offsets[tp]), None)
            if tp in waiting and first is not None:
                found[(tp, offsets[tp])] = first.timestamp
                waiting.discard(tp)
                consumer.pause(tp)
    return found


async def exact_ends(
    consumer: Any, reported: dict[TopicPartition, int], timeout: float
) -> dict[TopicPartition, int]:
    """The true end of each partition of ``reported`` (its end as the broker
    reported it). The embedded broker reports the first offset of a
    partition's last record batch, plus one, as its end; a fetch from there
    answers with the high watermark, the offset after the last record.
    Partitions not answered within ``timeout`` seconds are left out."""
    asked = {tp: end for tp, end in reported.items() if end > 0}
    if not asked:
        return {}
    consumer.assign(list(asked))
    for tp, end in asked.items():
        consumer.seek(tp, end - 1)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    found: dict[TopicPartition, int] = {}
    waiting = set(asked)
    try:
        while waiting and (left := deadline - loop.time()) > 0:
            await consumer.getmany(*waiting, timeout_ms=max(int(left * 1000), 1))
            for tp in list(waiting):
                mark = consumer.highwater(tp)
                if mark is not None:
                    found[tp] = max(mark, asked[tp])
                    waiting.discard(tp)
                    consumer.pause(tp)
    finally:
        consumer.pause(*consumer.assignment())
    return found
