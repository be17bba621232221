"""``make bench``: measure eventsite on this machine and print a table and a JSON line.

Starts its own embedded stack on free ports (broker, a migrated SQLite file
in a temp dir or the ``DATABASE_URL`` database, daphne and workers as
subprocesses), runs each scenario with bounded counts and time, stops
everything it started (also on failure, Ctrl-C or SIGTERM), prints a
readable table, and prints one JSON object as its last line. Every scenario
checks that each client got every event it is owed; a scenario that fails a
check is marked in the table, its figures are null in the JSON, and the exit
status is 1.

``python -m bench --only fanout,posts`` runs some groups only
(fanout, naive, posts, analytics).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import uvloop

from . import analytics, fanout, posts, slow_client
from .clients import ClientPool
from .report import Report, ScenarioResult
from .source import EventSource
from .stack import Server, Stack, create_sessions, create_topics, forget_run, setup_django
from .usage import BENCH

logger = logging.getLogger("bench")

GROUPS = ("fanout", "naive", "posts", "analytics")
TOTAL_BUDGET_SECONDS = 570
POSTERS = [f"bench-poster-{n}" for n in range(1, posts.POSTERS + 1)]
VIEWER = "bench-viewer"


class Bench:
    def __init__(self, stack: Stack, sessions: dict[str, str], groups: list[str]) -> None:
        self.stack = stack
        self.sessions = sessions
        self.groups = groups
        self.report = Report()
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self.topics = {group: f"{self.prefix}-{group}" for group in ("posts", "analytics")}
        self.broker_pid = stack.broker_pid

    def pids(self, server_pid: int) -> dict[str, int]:
        return {"server": server_pid, BENCH: os.getpid(), "broker": self.broker_pid}

    async def step(
        self,
        name: str,
        limit: float,
        measure: Callable[[ScenarioResult], Awaitable[object]],
        *,
        skip: bool = False,
    ) -> bool:
        """Run one measurement within ``limit`` seconds; a failure is recorded, not raised."""
        result = ScenarioResult(name)
        self.report.results.append(result)
        if skip:
            result.failure = "skipped: an earlier step on the same connections failed"
            return False
        logger.info("%s ...", name)
        started = time.monotonic()
        try:
            async with asyncio.timeout(limit):
                await measure(result)
        except TimeoutError:
            result.failure = f"timed out after {limit:.0f}s"
        except Exception as exc:  # noqa: BLE001 - recorded, printed, and the run fails
            logger.exception("%s failed", name)
            result.failure = f"{type(exc).__name__}: {exc}"[:2000]
        logger.info("%s done in %.0fs", name, time.monotonic() - started)
        return result.failure is None

    async def fresh_broker(self, topics: list[str]) -> None:
        """Restart the broker empty (same address) and create ``topics``.

        The embedded broker's fetches get slower as it holds more records, so
        each scenario starts from an empty one rather than inherit the records
        of those before it. Nothing is connected to it between scenarios.
        """
        self.stack.broker.restart()
        self.broker_pid = self.stack.broker_pid
        await create_topics(topics)

    async def run(self) -> Report:
        runners = {
            "fanout": self.fanout_ours,
            "naive": self.fanout_naive,
            "posts": self.posts,
            "analytics": self.analytics,
        }
        for group in GROUPS:
            if group not in self.groups:
                continue
            try:
                await runners[group]()
            except Exception as exc:  # noqa: BLE001 - set-up failed: record it, go on
                logger.exception("%s: set-up failed", group)
                failed = ScenarioResult(f"{group} (set-up)")
                failed.failure = f"{type(exc).__name__}: {exc}"[:2000]
                self.report.results.append(failed)
        self.ratios()
        return self.report

    @asynccontextmanager
    async def fanout_server(
        self, name: str, application: str = "eventsite.asgi:application"
    ) -> AsyncIterator[tuple[Server, ClientPool, EventSource]]:
        """An empty broker, a topic, a daphne reading it, 1,000 connected clients and an
        event source: each scenario gets its own (see :meth:`fresh_broker`)."""
        topic = f"{self.prefix}-{name}"
        await self.fresh_broker([topic])
        web = await self.stack.start_web(f"web-{name}", topic=topic, application=application)
        pool: ClientPool | None = None
        source: EventSource | None = None
        try:
            pool = await fanout.connect_pool(web, self.sessions[VIEWER])
            source = await EventSource(topic).start()
            yield web, pool, source
        finally:
            if source is not None:
                await source.stop()
            if pool is not None:
                await pool.close()
            self.stack.stop(f"web-{name}")

    async def fanout_ours(self) -> None:
        async with self.fanout_server("throughput") as (web, pool, source):
            await self.step(
                "fan-out throughput (ours)",
                60,
                lambda r: fanout.measure_throughput(
                    r,
                    pool,
                    source,
                    window=fanout.OURS_WINDOW,
                    pids=self.pids(web.pid),
                    key="fanout_deliveries_per_s",
                ),
            )
        async with self.fanout_server("latency") as (web, pool, source):
            await self.step(
                "fan-out latency (ours)",
                60,
                lambda r: fanout.measure_latency(r, pool, source, pids=self.pids(web.pid)),
            )
        phases: dict[str, slow_client.Phase] = {}

        async def baseline(result: ScenarioResult) -> None:
            phases["baseline"] = await slow_client.measure_baseline(
                result, pool, source, server_pid=web.pid, pids=self.pids(web.pid)
            )

        async with self.fanout_server("slow-baseline") as (web, pool, source):
            ok = await self.step("slow client: baseline, nobody slow", 120, baseline)
        async with self.fanout_server("slow-stall") as (web, pool, source):
            ok = await self.step(
                "slow client",
                120,
                lambda r: slow_client.measure_stall(
                    r,
                    pool,
                    source,
                    baseline=phases["baseline"],
                    server_pid=web.pid,
                    pids=self.pids(web.pid),
                ),
                skip=not ok,
            )
            await self.step(
                "slow client's own end",
                150,
                lambda r: slow_client.check_slow_client_end(r, pool, source),
                skip=not ok,
            )

    async def fanout_naive(self) -> None:
        application = "bench.naive_asgi:application"
        async with self.fanout_server("naive", application) as (web, pool, source):
            await self.step(
                "fan-out throughput (naive)",
                90,
                lambda r: fanout.measure_throughput(
                    r, pool, source, window=fanout.NAIVE_WINDOW, pids=self.pids(web.pid), key=None
                ),
            )

    async def posts(self) -> None:
        topic = self.topics["posts"]
        await self.fresh_broker([topic])
        web_on = await self.stack.start_web("web-posts-on", topic=topic)
        web_off = await self.stack.start_web(
            "web-posts-off", topic=topic, extra_env={"EVENTSITE_PUBLISH_EAGERLY": "false"}
        )
        sessions = [self.sessions[name] for name in POSTERS]
        on = await posts.posters_for(web_on, sessions)
        off = await posts.posters_for(web_off, sessions)
        dashboard: posts.Dashboard | None = None
        try:
            pids = {**self.pids(web_on.pid), posts.SERVER_OFF: web_off.pid}
            await self.step(
                "post emit overhead", 60, lambda r: posts.measure_emit_overhead(r, on, off, pids)
            )
            self.stack.stop("web-posts-off")
            dashboard = await posts.Dashboard(web_on, self.sessions[VIEWER]).start()
            pids = self.pids(web_on.pid)
            await self.step(
                "post to screen",
                60,
                lambda r: posts.measure_post_to_screen(r, on, dashboard, pids),
            )
            await self.step(
                "posts throughput", 60, lambda r: posts.measure_posts_per_s(r, on, dashboard, pids)
            )
            await self.step(
                "outbox after posts",
                60,
                lambda r: posts.check_outbox(
                    r, topic, sent=sum(p.posted for p in on), unsent=sum(p.posted for p in off)
                ),
            )
        finally:
            if dashboard is not None:
                await dashboard.close()
            for poster in [*on, *off]:
                await poster.close()
            self.stack.stop("web-posts-on")
            self.stack.stop("web-posts-off")

    async def analytics(self) -> None:
        topic = self.topics["analytics"]
        await self.fresh_broker([topic])

        async def ours(result: ScenarioResult) -> None:
            await analytics.fill_topic(topic)
            await analytics.measure_ours(result, self.stack, topic)

        ok = await self.step("analytics (ours)", 180, ours)
        await self.step(
            "analytics (naive)",
            120,
            lambda r: analytics.measure_naive(r, self.stack, topic),
            skip=not ok,
        )

    def ratios(self) -> None:
        """Ours divided by the naive baseline measured in the same run."""
        pairs = (
            ("fan-out throughput (ours)", "fan-out throughput (naive)", "fanout_vs_naive"),
            ("analytics (ours)", "analytics (naive)", "analytics_vs_naive"),
        )
        results = {result.name: result for result in self.report.results}
        for ours_name, naive_name, key in pairs:
            ours, naive = results.get(ours_name), results.get(naive_name)
            if ours is None or naive is None:
                continue
            # The first figure of each is its rate.
            ours_value = ours.figures[0].value if ours.figures else None
            naive_value = naive.figures[0].value if naive.figures else None
            ratio = None
            if ours_value and naive_value and not (ours.failure or naive.failure):
                ratio = ours_value / naive_value
            naive.add("ours / naive", ratio, "", key)


async def run_until_done_or_stopped(bench: Bench) -> Report:
    """Run every group within the total budget; SIGTERM cancels, so cleanups run in order."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await asyncio.wait_for(bench.run(), TOTAL_BUDGET_SECONDS)


def header(stack: Stack) -> list[str]:
    database = "SQLite file in a temp dir" if stack.is_sqlite else "DATABASE_URL"
    lines = [
        "eventsite benchmark",
        f"machine: {os.cpu_count()} cores shared by everything below; Python"
        f" {platform.python_version()}; database: {database}; broker: embedded Tansu;"
        " everything on 127.0.0.1",
        "server (daphne), broker, workers and the benchmark's own clients and producer"
        " (one process, uvloop) all run on these cores at once: figures are what is left"
        " for the server, not what it would do alone",
    ]
    processes = os.getenv("EVENTSITE_WEB_PROCESSES") or os.cpu_count()
    lines.append(
        f"web tier: {processes} daphne process(es) on one port (EVENTSITE_WEB_PROCESSES),"
        " counted together as 'server'"
    )
    if not stack.is_sqlite:
        lines.append("the database server's own processes count under 'other programs'")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(GROUPS), help="comma-separated groups")
    args = parser.parse_args(argv)
    groups = [group.strip() for group in args.only.split(",") if group.strip()]
    unknown = set(groups) - set(GROUPS)
    if unknown:
        parser.error(f"unknown groups {sorted(unknown)}; choose from {GROUPS}")
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr
    )
    logger.setLevel(logging.INFO)
    logging.getLogger("bench.stack").setLevel(logging.INFO)

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    started = time.monotonic()
    stack = Stack.start()
    try:
        setup_django(stack)
        sessions = create_sessions([VIEWER, *POSTERS])
        bench = Bench(stack, sessions, groups)
        report = bench.report
        report.header = header(stack)
        try:
            uvloop.run(run_until_done_or_stopped(bench))
        except TimeoutError:
            failed = ScenarioResult("whole run")
            failed.failure = f"the run did not finish within {TOTAL_BUDGET_SECONDS}s"
            report.results.append(failed)
        if not stack.is_sqlite:
            forget_run(list(bench.topics.values()), sessions)
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: stopping every process the benchmark started", file=sys.stderr)
        return 130
    finally:
        stack.close()
    report.header.append(f"wall time: {time.monotonic() - started:.0f} s")
    print(report.table())
    for result in report.failures:
        print(f"BENCH FAILED: {result.name}: {result.failure}", file=sys.stderr)
    print(report.json_line(), flush=True)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
