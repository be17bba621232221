"""What the hub delivers to: one WebSocket client of the live fan-out.

The hub (:mod:`monitor.live.hub`) and replays (:mod:`monitor.live.replay`)
see a client only through :class:`LiveClient`; its two kinds, a socket
written to directly and a bounded queue for ASGI ``send``, are in
:mod:`monitor.live.delivery`.
"""

from __future__ import annotations

from typing import Protocol

from aiokafka import TopicPartition

from monitor.live.filters import EventFilter


class ClientGone(Exception):
    """The client went away (or was closed) while a replay was writing to it."""


class LiveClient(Protocol):
    """A client of the live stream: bounded, and told what it missed.

    Frames reach the client in the order they were offered or sent. A frame
    the client has no room for is counted as missed, never silently lost:
    a ``gap`` frame with the count goes out before the next frame it gets.
    """

    # What this client subscribed to; None: every event.
    filter: EventFilter | None
    # After a replay, per partition, the first offset the hub still owes it
    # (events below it were replayed already); None: no floor.
    floor: dict[TopicPartition, int] | None
    # Events written (or queued) to this client so far.
    delivered: int

    def offer(self, frame: str, events: int) -> bool:
        """Deliver a live frame of ``events`` events, or count them missed while
        the client has no room; True while the client is owed a gap notice."""
        ...

    def flush_gap(self) -> bool:
        """Tell a client that has caught up what it missed; True once nothing is
        owed (or the client was closed for staying behind too long)."""
        ...

    def announce_missed(self) -> None:
        """Tell the client now, after what it was sent so far, what it missed."""
        ...

    def send_now(self, text: str) -> None:
        """Send a control frame after everything sent so far, whatever the bound."""
        ...

    async def send_replay(self, frame: str, events: int) -> None:
        """Send a replayed frame once the client has room (waiting, not dropping);
        raise :class:`ClientGone` if the client goes away meanwhile."""
        ...

    def close(self) -> None:
        """Stop delivering; idempotent."""
        ...
