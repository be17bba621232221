"""Running a long-lived loop as a process: a stop signal only sets a flag."""

from __future__ import annotations

import asyncio
import signal
from typing import Protocol


class Stoppable(Protocol):
    """A loop that runs until asked to stop, finishing the work in hand first."""

    async def run(self) -> None: ...

    def request_stop(self) -> None: ...


def run_until_stopped(loop_object: Stoppable) -> None:
    """Run ``loop_object`` on a fresh event loop; SIGINT or SIGTERM asks it to stop
    (and nothing more: it finishes and commits what it holds, then returns)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, loop_object.request_stop)
        await loop_object.run()

    asyncio.run(main())
