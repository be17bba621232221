"""How many messages a WebSocket client may send: a token bucket per connection.

A client may send ``per_second`` messages a second, with bursts of up to
``burst``. A message over that is dropped, and the first of a run of dropped
messages is answered with a ``rate_limited`` error frame (answering each one
would let a flood make the server write as much as it reads). Dropped
messages are counted down at the same rate; a client whose count passes
``burst`` keeps flooding regardless and is closed with code 4429
(:data:`~monitor.live.protocol.CLOSE_RATE_LIMITED`). :class:`MessageRate`
only judges; :class:`~monitor.live.json_socket.JsonSocket` acts on its verdict.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum


class Verdict(Enum):
    """What to do with one message: take it, drop it (telling the client or not), or close."""

    TAKE = "take"
    DROP_AND_TELL = "drop_and_tell"
    DROP = "drop"
    CLOSE = "close"


class MessageRate:
    """One connection's token bucket; ``per_second`` 0 or less takes everything."""

    def __init__(
        self, per_second: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_second = per_second
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self.dropped = 0.0
        self.last = clock()
        self.closed = False

    def judge(self) -> Verdict:
        """What to do with the message that just arrived."""
        if self.per_second <= 0:
            return Verdict.TAKE
        if self.closed:
            return Verdict.DROP
        now = self.clock()
        refill = (now - self.last) * self.per_second
        self.last = now
        self.tokens = min(float(self.burst), self.tokens + refill)
        self.dropped = max(0.0, self.dropped - refill)
        if self.tokens >= 1:
            self.tokens -= 1
            return Verdict.TAKE
        first = self.dropped < 1
        self.dropped += 1
        if self.dropped > self.burst:
            self.closed = True
            return Verdict.CLOSE
        return Verdict.DROP_AND_TELL if first else Verdict.DROP
