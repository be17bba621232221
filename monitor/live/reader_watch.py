"""How far the live reader is behind the topic, and whether it has stalled.

The live reader (:mod:`monitor.live.reader`) asks the broker for the topic's
end offsets every few seconds and tells a :class:`ReaderWatch` what it
answered (or that it did not answer); it also tells the watch each time its
line moved. The watch compares the broker's ends with the process's
:class:`~monitor.live.line.LiveLine` and gives a :class:`ReaderHealth`:

- ``behind``: records between the line and the ends the broker last
  reported (None while the broker does not answer);
- ``seconds_behind``: how long ago the topic held records the reader has
  still not read (0 once it has read up to the last ends reported);
- ``seconds_since_advance``: how long the reader has been behind without its
  line moving (0 while it is level with the broker).

The reader is in trouble, and the health says why, when the broker has not
answered for ``max_behind_seconds`` (:attr:`Trouble.SILENT`), when it has
not advanced for that long while records wait (:attr:`Trouble.STALLED`), or
when it has not read, that long after, what the topic held
(:attr:`Trouble.BEHIND`: it reads slower than the topic grows). A burst it
reads within the bound, however large, is no trouble. What to do about it is
the hub's (:mod:`monitor.live.hub`). Everything here runs on the web
process's event loop; nothing awaits.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from monitor.live.line import LiveLine

Clock = Callable[[], float]
# Ends reported at earlier checks that the line has not reached yet, oldest
# first; older ones are dropped past this many (the watch then under-states
# how far behind it is, by then long past any bound).
MAX_UNREACHED = 100


class Trouble(enum.Enum):
    """Why a live reader is not keeping up; the value is the gap notice's reason."""

    SILENT = "broker_silent"
    STALLED = "stalled"
    BEHIND = "behind"


@dataclass(frozen=True)
class ReaderHealth:
    """One look at a live reader; ``trouble`` None means it keeps up."""

    behind: int | None
    seconds_behind: float
    seconds_since_advance: float
    trouble: Trouble | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.trouble is None

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "trouble": None if self.trouble is None else self.trouble.value,
            "behind": self.behind,
            "seconds_behind": round(self.seconds_behind, 1),
            "seconds_since_advance": round(self.seconds_since_advance, 1),
            "reason": self.reason,
        }


class ReaderWatch:
    """The live reader's progress against the broker's end offsets."""

    def __init__(
        self,
        line: LiveLine,
        *,
        max_behind_seconds: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self.line = line
        self.max_behind_seconds = max_behind_seconds
        self._clock = clock
        self._unreached: deque[tuple[float, dict[TopicPartition, int]]] = deque(
            maxlen=MAX_UNREACHED
        )
        self._latest: dict[TopicPartition, int] = {}
        self._answered_at = self._advanced_at = self._level_at = clock()
        self._silent = False
        # Whether the broker has answered a check since the line (re)started.
        self.checked = False

    def reset(self) -> None:
        """Forget what was reported: the line starts over (a new cluster)."""
        self._unreached.clear()
        self._latest = {}
        self._answered_at = self._advanced_at = self._level_at = self._clock()
        self._silent = False
        self.checked = False

    def advanced(self) -> None:
        """The reader moved its line (it handed records over)."""
        self._advanced_at = self._clock()

    def observed(self, ends: Mapping[TopicPartition, int] | None) -> None:
        """The broker's end offsets per partition, or None: it did not answer."""
        now = self._clock()
        if ends is None:
            self._silent = True
            return
        self._silent = False
        self.checked = True
        self._answered_at = now
        self._latest = dict(ends)  # replaced, never changed: other threads may read it
        self._unreached.append((now, self._latest))
        self._drop_reached()
        if not self._unreached:
            self._level_at = now

    def health(self) -> ReaderHealth:
        """How the reader stands now, against the ends last reported. Reads only,
        so that another thread (a sync view) may ask."""
        now = self._clock()
        silent_for = now - self._answered_at
        since_advance = now - max(self._advanced_at, self._level_at)
        if self._silent and silent_for > self.max_behind_seconds:
            return ReaderHealth(
                behind=None,
                seconds_behind=silent_for,
                seconds_since_advance=since_advance,
                trouble=Trouble.SILENT,
                reason=f"the broker has not answered the live reader for {silent_for:.0f} s",
            )
        behind = self._behind()
        unreached = self._first_unreached()
        if unreached is None:
            return ReaderHealth(behind=behind, seconds_behind=0.0, seconds_since_advance=0.0)
        return self._judge(ReaderHealth(behind, now - unreached, since_advance))

    def _judge(self, health: ReaderHealth) -> ReaderHealth:
        bound = self.max_behind_seconds
        behind = health.behind
        if health.seconds_since_advance > bound:
            trouble = Trouble.STALLED
            reason = (
                f"the live reader has not advanced for {health.seconds_since_advance:.0f} s"
                f" while {behind} events wait"
            )
        elif health.seconds_behind > bound:
            trouble = Trouble.BEHIND
            reason = (
                f"the live reader is {health.seconds_behind:.0f} s ({behind} events)"
                f" behind the topic's end (at most {bound:g} s)"
            )
        else:
            return health
        return ReaderHealth(
            behind, health.seconds_behind, health.seconds_since_advance, trouble, reason
        )

    def _behind(self) -> int:
        """Records between the line and the ends last reported (0 where the broker
        reports an end at or below the line)."""
        line = self.line
        return sum(max(end - line.end(partition), 0) for partition, end in self._latest.items())

    def _drop_reached(self) -> None:
        line = self.line
        while self._unreached and all(
            line.end(partition) >= end for partition, end in self._unreached[0][1].items()
        ):
            self._unreached.popleft()

    def _first_unreached(self) -> float | None:
        """When the broker reported the oldest ends the line has not reached (None: all)."""
        line = self.line
        for reported_at, ends in tuple(self._unreached):
            if any(line.end(partition) < end for partition, end in ends.items()):
                return reported_at
        return None
