"""How many messages a WebSocket client may send: a token bucket per connection.

A client may send ``per_second`` messages a second, with bursts of up to
``burst``. A message over that is dropped, and the first of a run of dropped
messages is answered with a ``rate_limited`` error frame (answering each one
would let a flood make the server write as much as it reads). Dropped
messages are counted down at the same rate; a client whose count passes
``burst`` keeps flooding regardless and is closed with code 4429.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum
from typing import Any

from django.conf import settings

CLOSE_RATE_LIMITED = 4429


class Verdict(Enum):
    TAKE = "take"
    DROP_AND_TELL = "drop_and_tell"
    DROP = "drop"
    CLOSE = "close"


class MessageRate:
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


async def admitted(consumer: Any) -> bool:
    """Whether the message ``consumer`` just received is within its client's
    rate; if not, the client is told (once per run) or closed."""
    rate: MessageRate | None = getattr(consumer, "message_rate", None)
    if rate is None:
        rate = consumer.message_rate = MessageRate(
            settings.WS_MESSAGES_PER_SECOND, settings.WS_MESSAGE_BURST
        )
    verdict = rate.judge()
    if verdict is Verdict.TAKE:
        return True
    if verdict is Verdict.DROP_AND_TELL:
        await consumer.send_error(
            "rate_limited",
            f"at most {rate.per_second:g} messages a second (bursts of {rate.burst}): "
            "this message and those over the rate after it are dropped",
        )
    elif verdict is Verdict.CLOSE:
        await consumer.send_error("rate_limited", "too many messages: the connection is closed")
        await consumer.close(code=CLOSE_RATE_LIMITED)
    return False
