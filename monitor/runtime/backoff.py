"""Waiting longer after each failure, up to a ceiling."""

from __future__ import annotations

import random


class Backoff:
    """Delays that double from ``first`` up to ``most`` seconds.

    :meth:`next` returns the delay to wait now and doubles the one after it;
    :meth:`reset` starts again from ``first`` (after a success). With
    ``jitter``, each delay is drawn between half of it and all of it, so that
    many clients that failed together do not retry together.
    """

    def __init__(self, first: float, most: float, *, jitter: bool = False) -> None:
        if first <= 0 or most < first:
            raise ValueError(f"backoff needs 0 < first <= most, not {first} and {most}")
        self.first = first
        self.most = most
        self.jitter = jitter
        self._delay = first

    def next(self) -> float:
        delay = self._delay
        self._delay = min(delay * 2, self.most)
        if self.jitter:
            delay *= 0.5 + random.random() / 2
        return delay

    def reset(self) -> None:
        self._delay = self.first
