"""Where the two cores go: CPU of each process over a window, and a server's RSS."""

from __future__ import annotations

import asyncio
import os
import time

import psutil

BENCH = "bench (clients)"
OTHER = "other programs"
KERNEL = "kernel irq"


class CpuMeter:
    """CPU used by named processes between :meth:`start` and :meth:`stop`, in percent
    of one core (200 means both cores of a 2-core machine).

    Also reports what the rest of the machine used meanwhile: other programs
    (all user and system time minus the named processes) and interrupt work
    charged to no process (much of the loopback network's softirq time).

    A named process counts with its children (a web tier is one ``runweb``
    and its daphne processes), except the benchmark's own process, whose
    children are the programs it measures.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._start: dict[str, dict[int, float]] = {}
        self._wall = 0.0
        self.elapsed = 0.0

    def _cpu(self) -> dict[str, dict[int, float]]:
        """CPU seconds so far, per name and process id."""
        times = psutil.cpu_times()
        seconds = {
            OTHER: {0: times.user + times.nice + times.system},  # guest is within user
            KERNEL: {0: getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0)},
        }
        for name, process in self.processes.items():
            seconds[name] = {}
            for member in process_tree(process):
                try:
                    times = member.cpu_times()
                    seconds[name][member.pid] = times.user + times.system
                except psutil.Error:
                    pass  # gone meanwhile: its last figures are lost
        return seconds

    def start(self) -> CpuMeter:
        self._start = self._cpu()
        self._wall = time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        self.elapsed = elapsed = time.monotonic() - self._wall
        end = self._cpu()
        used = {}
        for name, members in end.items():
            before = self._start.get(name, {})
            if not members:
                used[name] = float("nan")
                continue
            spent = sum(value - before.get(pid, 0.0) for pid, value in members.items())
            used[name] = spent / elapsed * 100
        used[OTHER] -= sum(value for name, value in used.items() if name not in (OTHER, KERNEL))
        return {name: round(max(value, 0.0), 1) for name, value in used.items()}


def process_tree(process: psutil.Process) -> list[psutil.Process]:
    """The process and its descendants; only the process itself if it is this one."""
    if process.pid == os.getpid():
        return [process]
    try:
        return [process, *process.children(recursive=True)]
    except psutil.Error:
        return [process]


class RssSampler:
    """Samples the resident memory of a process and its children every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None

    def rss(self) -> int:
        total = 0
        for member in process_tree(self.process):
            try:
                total += member.memory_info().rss
            except psutil.Error:
                pass
        return total

    def start(self) -> RssSampler:
        self.samples = [(time.monotonic(), self.rss())]
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.samples.append((time.monotonic(), self.rss()))

    def stop(self) -> dict[str, float]:
        """Baseline (first sample), peak and last RSS in MB, and the growth to the peak."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.samples.append((time.monotonic(), self.rss()))
        first = self.samples[0][1]
        peak = max(rss for _, rss in self.samples)
        mb = 1024 * 1024
        return {
            "start_mb": round(first / mb, 1),
            "peak_mb": round(peak / mb, 1),
            "end_mb": round(self.samples[-1][1] / mb, 1),
            "growth_mb": round((peak - first) / mb, 1),
        }
