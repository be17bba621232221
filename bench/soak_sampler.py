"""What the soak samples every 15 seconds, while the load runs and after it.

One :class:`Sample` per interval: the CPU each part of the stack used over
that interval (percent of one core, by process id and its children, see
:class:`bench.usage.CpuMeter`; "other programs" is the rest of the machine),
the broker's and the web tier's resident memory at its end, the dashboard
client's lag (events made, by the source and the trickle, minus events it
received) and the age of the oldest event it is still missing, the latency
percentiles of the events it received during the interval (envelope
``time`` to receipt), the analytics worker's rows, and ``/healthz``'s status.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from .soak_client import SoakClient
from .soak_load import SOURCE, PhotoTrickle
from .soak_stack import BROKER, SoakStack
from .usage import OTHER, CpuMeter, process_tree

logger = logging.getLogger(__name__)

SOAK = "soak"
MB = 1024 * 1024


@dataclass
class Sample:
    at: float  # seconds since the load started
    phase: str  # "load" or "idle"
    produced: int
    received: int
    behind_s: float
    p50_ms: float
    p99_ms: float
    cpu: dict[str, float]
    broker_rss_mb: float
    web_rss_mb: float
    analytics_rows: int
    healthz: int | None

    @property
    def lag(self) -> int:
        return self.produced - self.received


def rss_mb(pid: int | None) -> float:
    """Resident memory of a process and its descendants, in MB (NaN if it is gone)."""
    if pid is None:
        return math.nan
    try:
        members = process_tree(psutil.Process(pid))
    except psutil.Error:
        return math.nan
    total = 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass
    return total / MB


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def analytics_rows(database: Path) -> int:
    """Rows the analytics worker stored for the soak's own events (-1 if unreadable)."""
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as connection:
            (count,) = connection.execute(
                "SELECT COUNT(*) FROM monitor_analyticsevent WHERE source = ?", (SOURCE,)
            ).fetchone()
        return int(count)
    except sqlite3.Error as exc:
        logger.warning("could not count analytics rows: %s", exc)
        return -1


@dataclass
class Sampler:
    stack: SoakStack
    client: SoakClient
    trickle: PhotoTrickle
    interval: float
    started: float = field(default_factory=time.monotonic)
    last_taken: float = 0.0
    phase: str = "load"
    samples: list[Sample] = field(default_factory=list)
    _meter: CpuMeter | None = None

    def pids(self) -> dict[str, int]:
        return {**self.stack.roles(), SOAK: os.getpid()}

    async def run(self) -> None:
        """Take a sample every ``interval`` seconds (from the load's start) until cancelled."""
        self._meter = CpuMeter(self.pids()).start()
        while True:
            due = self.started + self.interval * (len(self.samples) + 1)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await self.take()

    async def take(self) -> Sample:
        assert self._meter is not None
        cpu = self._meter.stop()
        self.last_taken = time.monotonic()
        pids = self.pids()
        self._meter = CpuMeter(pids).start()
        now = time.time()
        latencies = self.client.take_window()
        sample = Sample(
            at=time.monotonic() - self.started,
            phase=self.phase,
            produced=self.client.source.acknowledged + len(self.trickle.sent_at),
            received=self.client.received + len(self.client.post_arrivals),
            behind_s=self.client.oldest_missing_age(now),
            p50_ms=percentile(latencies, 0.50),
            p99_ms=percentile(latencies, 0.99),
            cpu=cpu,
            broker_rss_mb=rss_mb(pids.get(BROKER)),
            web_rss_mb=rss_mb(pids.get("web")),
            analytics_rows=await asyncio.to_thread(analytics_rows, self.stack.database),
            healthz=await self.healthz(),
        )
        self.samples.append(sample)
        logger.info(
            "%4.0fs %s: lag %d, p99 %.0f ms, broker %.0f%% %.0f MB, web %.0f%%, other %.0f%%",
            sample.at,
            sample.phase,
            sample.lag,
            sample.p99_ms,
            cpu.get(BROKER, math.nan),
            sample.broker_rss_mb,
            cpu.get("web", math.nan),
            cpu.get(OTHER, math.nan),
        )
        return sample

    async def healthz(self) -> int | None:
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                return (await client.get(f"{self.stack.base_url}/healthz")).status_code
        except httpx.HTTPError:
            return None
