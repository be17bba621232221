"""``make soak``: the embedded default under a long, steady load, then idle.

Starts ``manage.py runstack`` as ``make run`` does (:mod:`bench.soak_stack`:
a temporary var directory, free ports on 127.0.0.1), signs up a user over
HTTP, connects one dashboard client to ``/ws/events/``, then for
``events / rate`` seconds produces events to the topic at a steady rate as
another service would while the user posts a photo every few seconds
(:mod:`bench.soak_load`); then nothing for an idle minute. Every 15 s it
samples CPU and memory of the broker and the web tier, the client's lag and
latency, and the analytics worker's rows (:mod:`bench.soak_sampler`).

It prints one row per sample, the targets of issue 14, and last one JSON
line (:mod:`bench.soak_report`). Every phase has a deadline, so a stack that
falls behind still ends the run on time (under 15 minutes with the
defaults: 300,000 events at 500/s). The exit status is 1 when an event never
reached the client, analytics did not store every event, or fewer events
than planned were acknowledged in time; unmet performance targets are shown,
not failed. Every process it starts is stopped by its PID, also on Ctrl-C
or SIGTERM.

    python -m bench.soak --events 60000 --rate 500
    KAFKA_LIVE_FETCH_WAIT_MS=20 python -m bench.soak --minutes 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import signal
import sys
import time
from pathlib import Path

import uvloop

from .soak_client import SoakClient
from .soak_load import PhotoTrickle, SoakSource
from .soak_report import SoakRun, checks, json_line, samples, summary, table, targets
from .soak_sampler import SOAK, Sampler, analytics_rows
from .soak_stack import SoakStack
from .usage import CpuMeter

logger = logging.getLogger("bench.soak")

# Settings worth naming in the header when they are set (the candidates of item 2).
SHOWN_PREFIXES = ("KAFKA_", "FANOUT_", "STREAM_", "EVENTSITE_WEB_", "ANALYTICS_")
# Set-up (runstack's migrations, sign-up, first connection) and tear-down allowances.
SETUP_SECONDS = 150
TEARDOWN_SECONDS = 60


def options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--events", type=int, default=int(os.getenv("SOAK_EVENTS", "0")) or None)
    parser.add_argument("--rate", type=float, default=float(os.getenv("SOAK_RATE", "500")))
    parser.add_argument(
        "--minutes", type=float, default=None, help="load minutes (events = rate x 60 x minutes)"
    )
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--sample-seconds", type=float, default=15.0)
    parser.add_argument("--linger-ms", type=int, default=2, help="the soak producer's linger_ms")
    parser.add_argument(
        "--post-interval", type=float, default=7.0, help="seconds between photo posts"
    )
    parser.add_argument("--save", type=Path, help="also write the figures and samples here (JSON)")
    args = parser.parse_args(argv)
    if args.events is None:
        args.events = int(args.rate * 60 * args.minutes) if args.minutes else 300_000
    if args.events < 1 or args.rate <= 0:
        parser.error("--events and --rate must be positive")
    return args


async def wait_welcomed(client: SoakClient, timeout: float = 30.0) -> None:
    """Return once the client has its welcome: every event made after it is owed to it."""
    deadline = time.monotonic() + timeout
    while not client.welcomes:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the dashboard client had no welcome within {timeout:.0f}s")
        await asyncio.sleep(0.05)


async def idle_minute(sampler: Sampler, seconds: float) -> dict[str, float]:
    """Nothing is produced or posted for ``seconds``; returns the CPU of each part over
    its second half (the first half lets consumers finish what the load left them)."""
    sampler.phase = "idle"
    await asyncio.sleep(seconds / 2)
    meter = CpuMeter({**sampler.stack.roles(), SOAK: os.getpid()}).start()
    await asyncio.sleep(seconds / 2)
    return meter.stop()


async def load_and_idle(stack: SoakStack, args: argparse.Namespace, started: float) -> SoakRun:
    trickle = await PhotoTrickle(stack, args.post_interval).sign_up()
    topic = os.getenv("KAFKA_EVENTS_TOPIC", "user-events")
    source = SoakSource(stack.broker_address(), topic, args.events, linger_ms=args.linger_ms)
    await source.start()
    client = SoakClient(stack.ws_url, stack.base_url, trickle.session_id, source)
    stop = asyncio.Event()
    client_task = asyncio.create_task(client.run(stop))
    sampler_task: asyncio.Task[None] | None = None
    try:
        await wait_welcomed(client)
        loop = asyncio.get_running_loop()
        load_seconds = args.events / args.rate
        sampler = Sampler(stack, client, trickle, args.sample_seconds)
        sampler_task = asyncio.create_task(sampler.run())
        posting = asyncio.create_task(trickle.run(until=loop.time() + load_seconds))
        await source.run(args.rate, deadline=loop.time() + load_seconds * 1.1 + 15)
        await posting
        logger.info("load done: %d events acknowledged; idle now", source.acknowledged)
        idle_cpu = await idle_minute(sampler, args.idle_seconds)
        sampler_task.cancel()
        if time.monotonic() - sampler.last_taken > 1.0:
            await sampler.take()
        end = time.time()
        stop.set()
        await asyncio.wait({client_task}, timeout=10)
        return SoakRun(
            source=source,
            client=client,
            trickle=trickle,
            samples=sampler.samples,
            rate=args.rate,
            planned=args.events,
            idle_cpu=idle_cpu,
            end=end,
            analytics_rows=await asyncio.to_thread(analytics_rows, stack.database),
            log_bytes=stack.log_bytes(),
            wall_s=time.monotonic() - started,
        )
    finally:
        stop.set()
        for task in (client_task, sampler_task):
            if task is not None:
                task.cancel()
        await source.stop()
        await trickle.close()


async def soak(args: argparse.Namespace) -> SoakRun:
    """Run the whole soak within its budget; SIGTERM cancels it, so clean-ups run."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    started = time.monotonic()
    budget = SETUP_SECONDS + args.events / args.rate * 1.1 + 15 + args.idle_seconds
    async with asyncio.timeout(budget + TEARDOWN_SECONDS):
        stack = await SoakStack.start()
        try:
            return await load_and_idle(stack, args, started)
        finally:
            await asyncio.to_thread(stack.close)


def header(args: argparse.Namespace) -> list[str]:
    shown = {
        name: value for name, value in sorted(os.environ.items()) if name.startswith(SHOWN_PREFIXES)
    }
    return [
        "eventsite soak: manage.py runstack (embedded broker, SQLite), on 127.0.0.1",
        f"machine: {os.cpu_count()} cores shared by everything below; Python"
        f" {platform.python_version()}",
        f"load: {args.events:,} events at {args.rate:g}/s (soak producer linger_ms"
        f" {args.linger_ms}), a photo post every {args.post_interval:g} s, one dashboard"
        f" client; then {args.idle_seconds:g} s idle; a sample every {args.sample_seconds:g} s",
        f"settings given: {shown or 'none (the defaults of make run)'}",
        "CPU in % of one core over each interval (200 = both cores); 'workers' is analytics,"
        " notifications and the relay; 'other' is the rest of the machine",
    ]


def main(argv: list[str] | None = None) -> int:
    args = options(argv)
    # The load's producer is built by monitor.kafka.clients, which reads the settings.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eventsite.settings")
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("bench").setLevel(logging.INFO)

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    try:
        run = uvloop.run(soak(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: every process the soak started is stopped", file=sys.stderr)
        return 130
    except TimeoutError:
        print("SOAK FAILED: the run did not end within its budget", file=sys.stderr)
        return 1
    figures = summary(run)
    print("\n".join(header(args)))
    print()
    print(table(run))
    print()
    print(targets(figures))
    problems = checks(figures)
    for problem in problems:
        print(f"SOAK CHECK FAILED: {problem}", file=sys.stderr)
    if args.save:
        args.save.write_text(json.dumps({"figures": figures, "samples": samples(run)}, indent=1))
    print(json_line(figures), flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
