"""Fan-out to 1,000 WebSocket clients: throughput (ours and the naive baseline) and latency.

Throughput is measured closed-loop: events are produced as fast as the
slowest client receives them, never more than a window ahead, so the server
is kept saturated without an ever-growing backlog. Deliveries are events
received per second summed over all clients. Latency is measured open-loop
at a fixed rate: each event's envelope ``time`` against the moment a client
read the frame that carried it (one clock: everything runs on this machine).
"""

from __future__ import annotations

import asyncio

from .clients import ClientPool, LoopLag, StreamClient
from .report import ScenarioResult
from .source import EventSource, closed_loop
from .stack import Server
from .usage import CpuMeter

CLIENTS = 1000
# Events in flight ahead of the slowest client. Ours: 250 events (~120 KB)
# stay under the product's per-client bounds (256 queued frames, 1 MiB
# unread), so the benchmark itself never forces a gap; larger windows were
# not faster here. Naive: one event per frame at ~1-2 events/s per client,
# so 10 events are already seconds of work queued for the server.
OURS_WINDOW = 250
NAIVE_WINDOW = 10
WARMUP_SECONDS = 2.0
THROUGHPUT_SECONDS = 10.0
LATENCY_RATE = 200
LATENCY_SECONDS = 10.0
DRAIN_SECONDS = 60.0


async def connect_pool(server: Server, session_id: str, count: int = CLIENTS) -> ClientPool:
    pool = ClientPool(
        host="127.0.0.1", port=server.port, session_id=session_id, origin=server.origin
    )
    try:
        await pool.connect(count)
    except BaseException:
        await pool.close()
        raise
    return pool


async def drain(
    pool: ClientPool, source: EventSource, clients: list[StreamClient] | None = None
) -> None:
    """Wait for every acknowledgement and every client to catch up; check the counts."""
    await source.flush()
    await pool.wait_received(source.produced, DRAIN_SECONDS, clients)
    pool.check_counts(source.produced, clients)


async def measure_throughput(
    result: ScenarioResult,
    pool: ClientPool,
    source: EventSource,
    *,
    window: int,
    pids: dict[str, int],
    key: str | None,
) -> float:
    """Closed-loop deliveries per second; fills ``result``; raises if a client missed any."""
    await closed_loop(source, delivered=pool.min_received, window=window, duration=WARMUP_SECONDS)
    await drain(pool, source)
    frames_before = sum(client.frames for client in pool.clients)
    received_before = pool.total_received()
    meter = CpuMeter(pids).start()
    lag = LoopLag()
    lag.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await closed_loop(
        source, delivered=pool.min_received, window=window, duration=THROUGHPUT_SECONDS
    )
    elapsed = loop.time() - started
    delivered = pool.total_received() - received_before
    frames = sum(client.frames for client in pool.clients) - frames_before
    result.cpu = meter.stop()
    lags = lag.stop()
    rate = delivered / elapsed
    result.add("deliveries per second", rate, "events/s", key)
    result.add("events per frame (mean)", delivered / max(frames, 1))
    result.add("client loop lag p99", lags["p99_ms"], "ms")
    result.notes.append(
        f"{len(pool.clients)} clients, closed loop with at most {window} events ahead of the"
        f" slowest client, {THROUGHPUT_SECONDS:.0f} s after {WARMUP_SECONDS:.0f} s warm-up"
    )
    await drain(pool, source)
    return rate


async def measure_latency(
    result: ScenarioResult,
    pool: ClientPool,
    source: EventSource,
    *,
    rate: float = LATENCY_RATE,
    seconds: float = LATENCY_SECONDS,
    pids: dict[str, int],
) -> None:
    """Event time to receipt at ``rate`` events/s over all clients; fills ``result``."""
    await source.at_rate(rate, 1.0)  # warm-up, not recorded
    await drain(pool, source)
    histogram = pool.start_latency()
    meter = CpuMeter(pids).start()
    lag = LoopLag()
    lag.start()
    await source.at_rate(rate, seconds)
    result.cpu = meter.stop()
    lags = lag.stop()
    try:
        await drain(pool, source)
    finally:
        breakdown = pool.stop_latency()
    result.add("latency p50", histogram.percentile(0.50), "ms", "fanout_p50_ms")
    result.add("latency p99", histogram.percentile(0.99), "ms", "fanout_p99_ms")
    result.add("latency max", histogram.percentile(1.0), "ms")
    result.add("to the first client p50", breakdown.first_client.percentile(0.50), "ms")
    result.add("to the first client p99", breakdown.first_client.percentile(0.99), "ms")
    result.add("first to last client p50", breakdown.spread_p50_ms, "ms")
    result.add("first to last client p99", breakdown.spread_p99_ms, "ms")
    result.add("events per frame (mean)", breakdown.events_per_frame)
    result.add("client loop lag p99", lags["p99_ms"], "ms")
    result.notes.append(
        f"{rate:.0f} events/s for {seconds:.0f} s to {len(pool.clients)} clients,"
        f" {histogram.count:,} (event, client) samples; 'to the first client' is Kafka, the"
        " live reader, the hub's tick and the first write; 'first to last' is writing the"
        " frame to every socket and every client reading it (with several web processes,"
        " each process's own frames and clients)"
    )
