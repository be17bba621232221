"""Keeping the stack's parts running: ``runstack``'s supervisor.

Each :class:`Part` is one child process (the embedded broker, the web tier,
a worker, the relay) with a way to start it. :meth:`Supervisor.check`, called
every few tenths of a second, notices a part that ended and starts it again
after a delay that doubles with each death in a row (:class:`Backoff`), back
to the shortest once the part had stayed up ``STABLE_SECONDS``. Each death is
logged once, in one line: which part, how it ended, and when it starts again.

A part that ends within ``MIN_HEALTHY_SECONDS`` of its very first start
cannot run here (its port is taken, a setting is wrong): that raises
:class:`CannotStart` instead, and the stack stops with that error. A part
that ran and then died is always started again; a start that fails is
tried again after the next delay.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from monitor.management.processes import exit_description, stop_processes
from monitor.runtime.backoff import Backoff

logger = logging.getLogger(__name__)

RESTART_FIRST_SECONDS = 0.5
RESTART_MOST_SECONDS = 30.0
STABLE_SECONDS = 30.0
MIN_HEALTHY_SECONDS = 5.0


class CannotStart(Exception):
    """A part failed at its first start, or ended at once: it cannot run here."""


def _restart_backoff() -> Backoff:
    return Backoff(RESTART_FIRST_SECONDS, RESTART_MOST_SECONDS)


@dataclass(eq=False)
class Part:
    """One supervised child process.

    ``launch`` starts it and returns its process once it is started (raising
    if it cannot be); ``stop_rank`` orders the stop: higher ranks stop first,
    together, then the next (the broker last, once nothing uses it).
    """

    name: str
    launch: Callable[[], subprocess.Popen[bytes]]
    stop_rank: int = 1
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    restart_due: float | None = None  # set between a death and the next start
    last_exit: str | None = None
    backoff: Backoff = field(default_factory=_restart_backoff)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class Supervisor:
    """Starts the parts, restarts those that die, stops them all.

    ``announce`` receives the lines for the operator's console (a part
    started, a part stopped); ``changed`` is given the parts after each
    start, death and failed restart, so that the stack's record can be
    written again.
    """

    def __init__(
        self,
        parts: list[Part],
        *,
        announce: Callable[[str], None],
        changed: Callable[[Sequence[Part]], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.parts = parts
        self.announce = announce
        self.changed = changed
        self.clock = clock

    def start_all(self, stopping: Callable[[], bool] = lambda: False) -> None:
        """Start every part in order (unless ``stopping`` says to stop);
        raises CannotStart naming the part that failed."""
        for part in self.parts:
            if stopping():
                return
            try:
                self._start(part)
            except Exception as exc:
                raise CannotStart(f"{part.name} could not start: {exc}") from exc

    def check(self) -> None:
        """One round: note the parts that ended, and start again those whose
        delay is over. Raises CannotStart for a part that ended right after
        its first start."""
        for part in self.parts:
            if part.restart_due is not None:
                if self.clock() >= part.restart_due:
                    self._restart(part)
                continue
            code = part.process.poll() if part.process is not None else None
            if code is not None:
                self._died(part, code)

    def stop_all(self, timeout: float = 10.0) -> None:
        """Stop every running part by its PID, highest ``stop_rank`` first:
        SIGTERM, then SIGKILL after ``timeout`` seconds."""
        for rank in sorted({part.stop_rank for part in self.parts}, reverse=True):
            running = {
                part.name: part.process
                for part in self.parts
                if part.stop_rank == rank and part.process and part.process.poll() is None
            }
            stop_processes(running.values(), timeout)
            for name in running:
                self.announce(f"stopped {name}")

    def _start(self, part: Part) -> None:
        part.process = part.launch()
        part.started = self.clock()
        self.announce(f"started {part.name} (pid {part.process.pid})")
        self.changed(self.parts)

    def _died(self, part: Part, code: int) -> None:
        uptime = self.clock() - part.started
        part.last_exit = exit_description(code)
        if part.restarts == 0 and uptime < MIN_HEALTHY_SECONDS:
            raise CannotStart(f"{part.name} {part.last_exit} {uptime:.1f}s after it started")
        if uptime >= STABLE_SECONDS:
            part.backoff.reset()
        delay = part.backoff.next()
        part.restart_due = self.clock() + delay
        logger.warning(
            "%s (pid %s) %s after %s up; restarting it in %.1fs",
            part.name,
            part.pid,
            part.last_exit,
            _duration(uptime),
            delay,
        )
        self.changed(self.parts)

    def _restart(self, part: Part) -> None:
        part.restart_due = None
        part.restarts += 1
        try:
            self._start(part)
        except Exception as exc:  # whatever stops a start, the next try may pass
            delay = part.backoff.next()
            part.restart_due = self.clock() + delay
            logger.warning(
                "%s could not start again (%s); next try in %.1fs", part.name, exc, delay
            )
            self.changed(self.parts)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}min"
    return f"{seconds / 3600:.1f}h"
