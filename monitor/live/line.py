"""The live line: how far this process's live reader has read, and what it kept.

The reader (:mod:`monitor.live.reader`) is the only writer. Per partition it
moves the *end* (the offset after the last record it handed over) and keeps
the latest items before it (:mod:`monitor.live.recent`). The hub
(:mod:`monitor.live.hub`) and replays
(:mod:`monitor.live.replay`) only read: every event the hub delivers from
now on has an offset at or past :meth:`LiveLine.ends`, so a replay that has
read up to those ends can hand its client over to the hub without a gap or
a repeat.

Everything here runs on the web process's event loop; between two awaits
the line does not move.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from aiokafka import TopicPartition

from monitor.live.filters import EventFilter
from monitor.live.recent import RecentEvents


class LiveLine:
    """Per partition, the end of what the reader handed over, and the recent events up to it."""

    def __init__(self, recent_size: int) -> None:
        self._ends: dict[TopicPartition, int] = {}
        self._recent = RecentEvents(recent_size)

    # --- written by the reader ---------------------------------------------------

    def restart(self) -> None:
        """Forget every position and event: a reader starts over (a new one, or a new cluster)."""
        self._ends.clear()
        self._recent.clear()

    def begin(self, partition: TopicPartition, offset: int) -> None:
        """The reader starts ``partition`` at ``offset``; a partition already begun
        keeps its end (the call is idempotent)."""
        if partition not in self._ends:
            self._ends[partition] = offset
            self._recent.begin(partition, offset)

    def received(self, partition: TopicPartition, offset: int, item: str, time: datetime) -> None:
        """An event handed to the hub, encoded as ``item``: the line passes it and keeps it."""
        self._ends[partition] = offset + 1
        self._recent.add(partition, offset, item, time)

    # --- read by the hub and by replays --------------------------------------------

    @property
    def partitions(self) -> frozenset[TopicPartition]:
        return frozenset(self._ends)

    def ends(self) -> dict[TopicPartition, int]:
        """Per partition, the offset after the last record handed over (a copy)."""
        return dict(self._ends)

    def end(self, partition: TopicPartition) -> int:
        """The end of ``partition`` (0 for one the reader has not begun)."""
        return self._ends.get(partition, 0)

    def positions(self) -> dict[TopicPartition, int]:
        """Per partition, in order, the last offset before the line (-1: none yet),
        as the welcome frame gives them."""
        return {partition: end - 1 for partition, end in sorted(self._ends.items())}

    def reached_by(self, next_offsets: Mapping[TopicPartition, int]) -> bool:
        """Whether a reader at ``next_offsets`` (per partition, the next offset it
        would read) has read everything up to the line."""
        return all(next_offsets.get(partition, 0) >= end for partition, end in self._ends.items())

    def holds(self, partition: TopicPartition, offset: int) -> bool:
        """Whether every event of ``partition`` from ``offset`` to the line is kept."""
        return self._recent.holds(partition, offset)

    def kept_after(
        self, positions: Mapping[TopicPartition, int], event_filter: EventFilter | None
    ) -> list[str]:
        """The kept events at or past ``positions`` (per partition, the next offset
        wanted) that ``event_filter`` lets through, in the order received."""
        return self._recent.after(positions, event_filter)

    def kept_last(self, count: int, event_filter: EventFilter | None) -> list[str] | None:
        """The ``count`` latest kept events ``event_filter`` lets through, oldest
        first; None if fewer are kept and older ones may exist."""
        return self._recent.last(count, event_filter)
