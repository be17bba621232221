"""The most recent events a web process has read, kept for replays.

Most resumes are short (a dropped connection, a laptop lid, a restart of one
web process behind a balancer) and most histories are small: both are
served from here, without a broker round trip, when the events asked for
are still held. Per partition, everything from :meth:`RecentEvents.start`
up to the hub's live line is held .
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import NamedTuple

from aiokafka import TopicPartition

from monitor.live.filters import EventFilter
from monitor.live.items import View, view_of


class Recent(NamedTuple):
    partition: TopicPartition
    offset: int
    item: str  # as encoded in a frame
    time: datetime

    @property
    def view(self) -> View:
        # Decoded again when a filter needs it: holding every envelope decoded
        # would cost several times the memory of its text.
        return view_of(self.item)


class RecentEvents:
    """A bounded window of the latest events, contiguous per partition."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: deque[Recent] = deque()
        # Per partition, the first offset held from which on nothing is missing.
        self.start: dict[TopicPartition, int] = {}

    def clear(self) -> None:
        self.entries.clear()
        self.start.clear()

    def begin(self, partition: TopicPartition, offset: int) -> None:
        """Hold ``partition``'s events from ``offset`` on (where the reader starts it)."""
        self.start[partition] = offset

    def add(self, partition: TopicPartition, offset: int, item: str, time: datetime) -> None:
        if self.size <= 0:
            self.start[partition] = offset + 1
            return
        if len(self.entries) >= self.size:
            oldest = self.entries.popleft()
            self.start[oldest.partition] = oldest.offset + 1
        self.entries.append(Recent(partition, offset, item, time))

    def holds(self, partition: TopicPartition, offset: int) -> bool:
        """Whether every event of ``partition`` from ``offset`` on is held."""
        start = self.start.get(partition)
        return start is not None and start <= offset

    def after(
        self, positions: Mapping[TopicPartition, int], event_filter: EventFilter | None
    ) -> list[str]:
        """The held events at or past ``positions`` (per partition, the next offset
        wanted) that ``event_filter`` lets through, in arrival order."""
        return [
            entry.item
            for entry in self.entries
            if entry.offset >= positions.get(entry.partition, entry.offset + 1)
            and (event_filter is None or event_filter.matches(entry.view))
        ]

    def last(self, count: int, event_filter: EventFilter | None) -> list[str] | None:
        """The ``count`` latest held events ``event_filter`` lets through, chosen as a
        replay from the broker chooses them (:func:`latest_in_partition_order` over
        each partition's latest ``count``); None if fewer are held and older ones
        may exist."""
        if count <= 0:
            return []
        kept: dict[TopicPartition, list[Recent]] = {}
        full = 0
        for entry in reversed(self.entries):
            chosen = kept.setdefault(entry.partition, [])
            if len(chosen) == count or (
                event_filter is not None and not event_filter.matches(entry.view)
            ):
                continue
            chosen.append(entry)
            if len(chosen) == count:
                full += 1
                if full >= len(self.start):
                    break
        lists = [[(e.time, e.item) for e in reversed(chosen)] for chosen in kept.values()]
        items = latest_in_partition_order(lists, count)
        if len(items) < count and any(start > 0 for start in self.start.values()):
            return None
        return items


def latest_in_partition_order(
    partitions: Iterable[Iterable[tuple[datetime, str]]], count: int
) -> list[str]:
    """The ``count`` latest items by event time, oldest first, each partition's
    in the order given (offset order): a partition's events need not be in time
    order (an event published late by the outbox relay comes after newer ones)."""
    lists = [list(entries) for entries in partitions]
    times = sorted(moment for entries in lists for moment, _ in entries)
    if not times or count <= 0:
        return []
    cutoff = times[-count] if len(times) >= count else times[0]
    chosen = [[entry for entry in entries if entry[0] >= cutoff] for entries in lists]
    merged = list(heapq.merge(*chosen, key=lambda entry: entry[0]))
    # Ties at the cutoff may let in a few too many: the oldest go.
    return (
        [item for _, item in merged[len(merged) - count :]]
        if len(merged) > count
        else [item for _, item in merged]
    )
