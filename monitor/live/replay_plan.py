"""What a client asks to be replayed, and where reading each partition starts.

A client asks, when it connects (``?since=0:17,1:5`` or ``?history=N``) or
in a later ``subscribe`` (``"since": {"0": 17}`` or ``"history": N``), for
either the events after the last offsets it saw, or the N most recent
events. A position of a watched topic other than the events topic names its
topic: ``orders/0:4`` (see :func:`monitor.live.items.position_key`).
:class:`ReplayRequest` is that request, checked (:class:`BadReplay` says
what is wrong with one); :func:`plan_replay` turns it into start offsets,
given where each partition's log begins and ends, and counts what
cannot be replayed by reason. Both are pure: :mod:`monitor.live.replay`
does the reading.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from monitor.live.items import parse_position_key

HISTORY_MAX = 1000
Positions = Mapping[TopicPartition, int]


class BadReplay(ValueError):
    """A ``since`` or ``history`` the server cannot take; the message says why."""


@dataclass(frozen=True)
class ReplayRequest:
    """What a client asked to be sent before the live stream."""

    since: Positions | None = None  # per partition, the last offset seen
    history: int = 0

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> ReplayRequest | None:
        """The request in a subscribe message (``since`` object or ``history``), if any."""
        since, history = message.get("since"), message.get("history")
        if since is not None:
            if not isinstance(since, dict):
                raise BadReplay('since must be an object of partition: offset, like {"0": 17}')
            return cls(since=_positions(since.items()))
        if history is not None:
            return cls(history=_history(history))
        return None

    @classmethod
    def from_query(cls, params: Mapping[str, list[str]]) -> ReplayRequest | None:
        """The request in a connection's query string: ``since=0:17,1:5`` or ``history=N``."""
        if params.get("since"):
            pairs = []
            for pair in ",".join(params["since"]).split(","):
                partition, colon, offset = pair.partition(":")
                if not colon:
                    raise BadReplay("since is a list of partition:offset, like since=0:17,1:5")
                pairs.append((partition, offset))
            return cls(since=_positions(pairs))
        if params.get("history"):
            return cls(history=_history(params["history"][-1]))
        return None


def _positions(pairs: Iterable[tuple[Any, Any]]) -> dict[TopicPartition, int]:
    positions = {}
    for partition, offset in pairs:
        try:
            part, last = parse_position_key(str(partition)), int(offset)
        except (TypeError, ValueError):
            raise BadReplay(f"not a partition and offset: {partition!r}: {offset!r}") from None
        if isinstance(offset, bool) or last < -1:
            raise BadReplay(f"not a partition and offset: {partition!r}: {offset!r}")
        positions[part] = last
    return positions


def _history(value: Any) -> int:
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise BadReplay(f"history is a number of events, up to {HISTORY_MAX}") from None
    if isinstance(value, bool) or not 0 <= count <= HISTORY_MAX:
        raise BadReplay(f"history is a number of events, up to {HISTORY_MAX}")
    return count


@dataclass
class Plan:
    """Where to start reading each partition, and what is announced as missed:
    per gap reason, how many events (None: an unknown number)."""

    starts: dict[TopicPartition, int]
    missed: dict[str, int | None] = field(default_factory=dict)

    def miss(self, reason: str, count: int | None) -> None:
        before = self.missed.get(reason, 0)
        self.missed[reason] = None if before is None or count is None else before + count


def plan_replay(
    request: ReplayRequest,
    begin: Positions,
    end: Positions,
    *,
    scan: int,
    limit: int,
    exact_from: Positions | None = None,
) -> Plan:
    """Start offsets per partition for ``request``, given each partition's first
    offset (``begin``) and the offset after its last (``end``).

    For ``since``: the offset after the last one seen; a partition the client
    gave no position for is read from its beginning. Positions past the end
    (the log started over) are a ``reset``, those before the beginning
    ``expired`` (a ``reset`` if the records below the beginning are not
    counted exactly from there: ``exact_from``, per partition), and more
    than ``limit`` events behind a ``limit``. For ``history``: the last
    ``scan`` events of each partition.
    """
    plan = Plan(starts={})
    for partition in sorted(end):
        first, stop = begin.get(partition, 0), end[partition]
        if request.since is None:
            plan.starts[partition] = max(first, stop - scan)
            continue
        start = request.since.get(partition, first - 1) + 1
        if start > stop:
            plan.miss("reset", None)
            start = first
        elif start < first and start < (exact_from or {}).get(partition, 0):
            plan.miss("reset", None)
            start = first
        elif start < first:
            plan.miss("expired", first - start)
            start = first
        if stop - start > limit:
            plan.miss("limit", stop - start - limit)
            start = stop - limit
        plan.starts[partition] = start
    return plan
