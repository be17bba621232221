"""One tick's events on their way from the hub to its clients.

The hub (:mod:`monitor.live.hub`) gathers the events the reader hands over
within one tick into a :class:`Batch`, and offers each client the batch's
frame for that client's filter (and, after a replay, its floor). A frame is
encoded once per filter in use, however many clients share it; with no
filter, once for all.
"""

from __future__ import annotations

import time

from aiokafka import TopicPartition

from monitor.live.filters import EventFilter
from monitor.live.items import View, position_of, view_of
from monitor.live.protocol import events_frame
from monitor.live.wire import Frame


class Batch:
    """One tick's events, encoded once per filter in use (once in all, without filters)."""

    def __init__(
        self,
        items: list[str],
        views: list[View | None],
        positions: list[tuple[TopicPartition, int] | None] | None = None,
    ) -> None:
        self.items = items
        self.views = views
        self.positions: list[tuple[TopicPartition, int] | None] = (
            positions if positions is not None else [None] * len(items)
        )
        # The live line's ends when this batch was cut: every later batch's
        # events are at or past them.
        self.end: dict[TopicPartition, int] = {}
        self.sent_ms = int(time.time() * 1000)
        self._frames: dict[object, tuple[Frame, int]] = {}

    def frame_for(
        self, event_filter: EventFilter | None, floor: dict[TopicPartition, int] | None = None
    ) -> tuple[Frame, int]:
        """The frame of the events ``event_filter`` lets through, and how many they are.

        With a ``floor`` (per partition, the first offset a client is still
        owed after a replay), events below it are left out.
        """
        key = event_filter if floor is None else (event_filter, tuple(sorted(floor.items())))
        cached = self._frames.get(key)
        if cached is None:
            if event_filter is None and floor is None:
                chosen = self.items
            else:
                chosen = [
                    item
                    for item, view, position in zip(
                        self.items, self._views(), self._positions(), strict=True
                    )
                    if (floor is None or position[1] >= floor.get(position[0], 0))
                    and (event_filter is None or event_filter.matches(view))
                ]
            frame = Frame(events_frame(chosen, sent_ms=self.sent_ms))
            cached = self._frames[key] = (frame, len(chosen))
        return cached

    def passed(self, floor: dict[TopicPartition, int]) -> bool:
        """Whether every later batch is past ``floor``, so that it no longer matters."""
        return all(self.end.get(partition, 0) >= offset for partition, offset in floor.items())

    def _views(self) -> list[View]:
        views: list[View] = []
        for index, view in enumerate(self.views):
            if view is None:  # published without its view: take it from the item
                view = self.views[index] = view_of(self.items[index])
            views.append(view)
        return views

    def _positions(self) -> list[tuple[TopicPartition, int]]:
        positions: list[tuple[TopicPartition, int]] = []
        for index, position in enumerate(self.positions):
            if position is None:
                position = self.positions[index] = position_of(view_of(self.items[index]))
            positions.append(position)
        return positions
