"""An event loop on a thread of its own, for async clients used from sync code."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundLoop:
    """An event loop running on a daemon thread, started on first use.

    Synchronous code (a Django view, a request's after-response hook) hands
    it coroutines; clients made on it (aiokafka's) stay on it between calls.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coroutine`` on the loop; its result comes through the future."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._started())

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coroutine`` and wait for its result; TimeoutError after ``timeout``
        seconds (the coroutine is then cancelled)."""
        future = self.submit(asyncio.wait_for(coroutine, timeout))
        try:
            return future.result(timeout + 1)
        except TimeoutError:
            future.cancel()
            raise

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` on the loop's thread, if the loop runs."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and wait for its thread (within ``timeout``); a later
        :meth:`submit` starts a new one."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=loop.run_forever, name=self.name, daemon=True
                )
                self._thread.start()
                self._loop = loop
            return self._loop
