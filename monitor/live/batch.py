"""One tick's events on their way from the hub to its clients.

The hub (:mod:`monitor.live.hub`) gathers the events the reader hands over
within one tick into a :class:`Batch`, and offers each client the batch's
frame for that client's filter (and, after a replay, its floor). A frame is
encoded once per filter in use, however many clients share it; with no
filter, once for all.
"""

from __future__ import annotations

import json
import time

from monitor.events.schema import Event
from monitor.live.filters import EventFilter
from monitor.live.protocol import events_frame
from monitor.live.wire import Frame


class Batch:
    """One tick's events, encoded once per filter in use (once in all, without filters)."""

    def __init__(
        self,
        items: list[str],
        events: list[Event | None],
        positions: list[tuple[int, int] | None] | None = None,
    ) -> None:
        self.items = items
        self.events = events
        self.positions: list[tuple[int, int] | None] = (
            positions if positions is not None else [None] * len(items)
        )
        # The live line's ends when this batch was cut: every later batch's
        # events are at or past them.
        self.end: dict[int, int] = {}
        self.sent_ms = int(time.time() * 1000)
        self._frames: dict[object, tuple[Frame, int]] = {}

    def frame_for(
        self, event_filter: EventFilter | None, floor: dict[int, int] | None = None
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
                    for item, event, position in zip(
                        self.items, self._envelopes(), self._positions(), strict=True
                    )
                    if (floor is None or position[1] >= floor.get(position[0], 0))
                    and (event_filter is None or event_filter.matches(event))
                ]
            frame = Frame(events_frame(chosen, sent_ms=self.sent_ms))
            cached = self._frames[key] = (frame, len(chosen))
        return cached

    def passed(self, floor: dict[int, int]) -> bool:
        """Whether every later batch is past ``floor``, so that it no longer matters."""
        return all(self.end.get(partition, 0) >= offset for partition, offset in floor.items())

    def _envelopes(self) -> list[Event]:
        envelopes: list[Event] = []
        for index, event in enumerate(self.events):
            if event is None:  # published without its envelope: take it from the item
                event = self.events[index] = json.loads(self.items[index])["event"]
            envelopes.append(event)
        return envelopes

    def _positions(self) -> list[tuple[int, int]]:
        positions: list[tuple[int, int]] = []
        for index, position in enumerate(self.positions):
            if position is None:
                item = json.loads(self.items[index])
                position = self.positions[index] = (item["partition"], item["offset"])
            positions.append(position)
        return positions
