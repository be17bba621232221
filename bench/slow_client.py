"""One client stops reading while events flow: what it costs the server and the others.

Two phases of the same length and event rate, each on an empty broker and a
fresh server with 1,000 connections (the embedded broker's fetches slow
down as it fills, so phases that share one would not compare). The last
client is never measured; the other 999 are:

1. the baseline: every client reads;
2. the stall: the last client stops reading (its socket is paused, so kernel
   buffers fill and the server must hold or drop what it cannot send), then
   reads again.

Figures: growth of the server's RSS during the stall, and the others' p99
latency during the stall divided by their p99 in the baseline. The others
must receive every event in both phases. The stalled client is checked while
events go on flowing after it resumed (:func:`check_slow_client_end`): it
must have every event it is owed apart from those ``gap`` frames announced,
or have been closed with a clear code; a drop without a code, with events
missing, is a silent loss and fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .clients import (
    CLOSE_ABNORMAL,
    CLOSE_NO_STATUS,
    Breakdown,
    ClientFailure,
    ClientPool,
    LatencyHistogram,
    LoopLag,
    StreamClient,
)
from .fanout import drain
from .report import ScenarioResult
from .source import EventSource
from .usage import CpuMeter, RssSampler

RATE = 1000
SLOW_SECONDS = 30.0
# Events go on flowing this long after the stalled client resumed, to see how it ends.
AFTER_SECONDS = 15.0
CATCH_UP_SECONDS = 90.0


@dataclass
class Phase:
    histogram: LatencyHistogram
    breakdown: Breakdown
    memory: dict[str, float]
    cpu: dict[str, float]
    loop_lag_p99_ms: float


async def run_phase(
    pool: ClientPool,
    source: EventSource,
    measured: list[StreamClient],
    *,
    server_pid: int,
    pids: dict[str, int],
    first: Callable[[], None] | None = None,
    then: Callable[[], None] | None = None,
) -> Phase:
    """After a warm-up, ``first()``, ``RATE`` events/s for ``SLOW_SECONDS``, then
    ``then()``; every measured client must get every event."""
    await source.at_rate(RATE, 1.0)  # warm-up at this rate, not recorded
    await drain(pool, source)
    if first is not None:
        first()
    histogram = pool.start_latency()
    rss = RssSampler(server_pid).start()
    meter = CpuMeter(pids).start()
    lag = LoopLag()
    lag.start()
    try:
        await source.at_rate(RATE, SLOW_SECONDS)
        cpu = meter.stop()
        lags = lag.stop()
        if then is not None:
            then()
        await drain(pool, source, measured)
    finally:
        breakdown = pool.stop_latency()
        memory = rss.stop()
    return Phase(histogram, breakdown, memory, cpu, lags["p99_ms"])


def add_phase_figures(result: ScenarioResult, phase: Phase) -> None:
    result.cpu = phase.cpu
    result.add("others p50", phase.histogram.percentile(0.5), "ms")
    result.add("others p99", phase.histogram.percentile(0.99), "ms")
    result.add("events per frame", phase.breakdown.events_per_frame)
    result.add("client loop lag p99", phase.loop_lag_p99_ms, "ms")


async def measure_baseline(
    result: ScenarioResult,
    pool: ClientPool,
    source: EventSource,
    *,
    server_pid: int,
    pids: dict[str, int],
) -> Phase:
    """Every client reads; fills ``result`` and returns the phase for the comparison."""
    pool.clients[-1].record_latency = False
    phase = await run_phase(pool, source, pool.clients, server_pid=server_pid, pids=pids)
    add_phase_figures(result, phase)
    result.add("server RSS growth", phase.memory["growth_mb"], "MB")
    result.notes.append(
        f"{RATE} events/s for {SLOW_SECONDS:.0f} s to {len(pool.clients)} clients, all"
        " reading; latency of all but the last"
    )
    return phase


async def measure_stall(
    result: ScenarioResult,
    pool: ClientPool,
    source: EventSource,
    *,
    baseline: Phase,
    server_pid: int,
    pids: dict[str, int],
) -> None:
    """The last client stops reading for ``SLOW_SECONDS``; fails only if one of the
    others missed an event (how the stalled client ends is checked afterwards)."""
    others, slow = pool.clients[:-1], pool.clients[-1]
    slow.record_latency = False
    stall_started = 0

    def stop_reading() -> None:
        nonlocal stall_started
        stall_started = source.produced
        slow.pause()

    stall = await run_phase(
        pool,
        source,
        others,
        server_pid=server_pid,
        pids=pids,
        first=stop_reading,
        then=slow.resume,
    )
    p99_without = baseline.histogram.percentile(0.99)
    result.add(
        "server RSS growth, slow client",
        stall.memory["growth_mb"],
        "MB",
        "slow_client_rss_growth_mb",
    )
    result.add("server RSS at the end of the stall", stall.memory["end_mb"], "MB")
    result.add(
        "others p99 with / without",
        stall.histogram.percentile(0.99) / p99_without,
        "",
        "slow_client_others_p99_ratio",
    )
    add_phase_figures(result, stall)
    result.notes.append(
        f"{RATE} events/s for {SLOW_SECONDS:.0f} s to {len(pool.clients)} clients, the last"
        " one not reading; latency of the others; CPU during the stall. When it resumed,"
        f" the stalled client had read {slow.received_at_resume - stall_started} of the"
        f" {RATE * SLOW_SECONDS:.0f} events of the stall"
    )


async def check_slow_client_end(
    result: ScenarioResult, pool: ClientPool, source: EventSource
) -> None:
    """Events go on for ``AFTER_SECONDS`` after the stall; then the stalled client must
    have every event since it connected, delivered or announced by a gap frame, or
    have been closed with a clear code.

    An abort (no close frame: 1006) with events neither delivered nor announced is a
    silent loss and fails.
    """
    others, slow = pool.clients[:-1], pool.clients[-1]
    await source.at_rate(RATE, AFTER_SECONDS)
    await drain(pool, source, others)
    owed = source.produced
    try:
        await pool.wait_received(owed, CATCH_UP_SECONDS, [slow])
    except ClientFailure as exc:
        raise ClientFailure(f"the stalled client never caught up: {exc}") from None
    accounted = slow.received + slow.missed
    result.add("stalled client: events received", slow.received)
    result.add("stalled client: announced missed", slow.missed)
    result.add("stalled client: gap frames", slow.gap_frames)
    if slow.problems:
        raise ClientFailure(f"the stalled client saw protocol problems: {slow.problems[:3]}")
    if slow.closed.done():
        code = slow.closed.result()
        since_resume = slow.closed_at - slow.resumed_at
        if code in (CLOSE_ABNORMAL, CLOSE_NO_STATUS) and accounted < owed:
            result.add("stalled client: neither delivered nor announced", owed - accounted)
            raise ClientFailure(
                f"the stalled client's connection was dropped without a close code ({code})"
                f" {since_resume:.1f} s after it resumed reading; {owed - accounted} events"
                " since then were neither delivered nor announced by a gap frame"
            )
        result.notes.append(f"closed with code {code}, {since_resume:.1f} s after resuming")
        return
    pool.check_counts(owed, [slow], allow_gaps=True)
    result.notes.append(
        f"still connected; {slow.gap_frames} gap frame(s) announced the {slow.missed} events"
        " it missed, every other event arrived in order"
    )
