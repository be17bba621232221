"""The hook a web server runs once a response is sent: the last step of a
request, where an event's eager publishing begins.

Code serving a request (the outbox's ``emit_event`` after commit) hands quick,
thread-safe work to :func:`call_after_response`, so that the work does not
compete with the rest of the request for the process. A server that supports
the hook collects that work in an :class:`AfterResponse` while it prepares a
response on a thread, and runs it once the response is sent. Anywhere else
(a management command, a test, a server without the hook) the work runs at
once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

# The collector of the request the current thread is preparing, if any.
_current = threading.local()


class AfterResponse:
    """The callbacks handed over while one response was prepared, in order."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[], None]] = []

    @contextmanager
    def collecting(self) -> Iterator[AfterResponse]:
        """While inside, :func:`call_after_response` on this thread adds here
        instead of calling at once. Nests: the previous collector comes back after."""
        previous = getattr(_current, "collector", None)
        _current.collector = self
        try:
            yield self
        finally:
            _current.collector = previous

    def add(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def run(self) -> None:
        """Call the callbacks in the order they were handed over, then forget them
        (a second run calls nothing). A failing callback is logged and the
        others still run."""
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # noqa: BLE001 - one failing hand-over must not stop the others
                logger.exception("after-response callback failed")


def call_after_response(callback: Callable[[], None]) -> None:
    """Call ``callback`` once the response of the request this thread is preparing
    has been sent; at once when no server collects for this thread.

    For quick, thread-safe hand-overs (the event publisher's ``submit``): the
    server may call it from another thread than the one that handed it over.
    """
    collector: AfterResponse | None = getattr(_current, "collector", None)
    if collector is None:
        callback()
    else:
        collector.add(callback)
