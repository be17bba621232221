"""runstack supervises the stack: a part that dies (the embedded broker, the
web tier, a worker, the relay) is started again with backoff, and logged once;
a part that cannot start stops everything with a clear error; and a killed
supervisor leaves no process behind."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import psutil
import pytest
from pytest_django import Settings

from monitor.kafka import clients as kafka
from monitor.management.supervision import (
    RESTART_FIRST_SECONDS,
    STABLE_SECONDS,
    CannotStart,
    Part,
    Supervisor,
)
from tests.support.project import ROOT
from tests.support.stack import Poster, RunStack


class Clock:
    """The supervisor's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def killed(part: Part) -> None:
    assert part.process is not None
    part.process.kill()
    part.process.wait()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def announced() -> list[str]:
    return []


@pytest.fixture
def supervise(clock: Clock, announced: list[str]) -> Iterator[list[Supervisor]]:
    """Supervisors made by the test, each stopped at the end."""
    made: list[Supervisor] = []
    yield made
    for supervisor in made:
        supervisor.stop_all(timeout=5)


def make(made: list[Supervisor], clock: Clock, announced: list[str], *parts: Part) -> Supervisor:
    supervisor = Supervisor(
        list(parts), announce=announced.append, changed=lambda parts: None, clock=clock
    )
    made.append(supervisor)
    return supervisor


def test_a_part_that_died_is_restarted_after_a_delay_that_doubles_and_resets(
    supervise: list[Supervisor],
    clock: Clock,
    announced: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    part = Part("worker", sleeper)
    supervisor = make(supervise, clock, announced, part)
    supervisor.start_all()
    delays = []
    for uptime in (10, 1, 1, STABLE_SECONDS):
        clock.now += uptime
        first_pid = part.pid
        killed(part)
        caplog.clear()
        with caplog.at_level(logging.WARNING, "monitor.management.supervision"):
            supervisor.check()
            supervisor.check()  # a death is told once
        assert len(caplog.records) == 1, caplog.text
        message = caplog.records[0].getMessage()
        assert message.startswith(f"worker (pid {first_pid}) killed by SIGKILL after "), message
        assert part.restart_due is not None
        delays.append(round(part.restart_due - clock.now, 2))
        assert message.endswith(f"restarting it in {delays[-1]:.1f}s")
        supervisor.check()
        assert part.pid == first_pid  # not before its delay
        clock.now = part.restart_due
        supervisor.check()
        assert part.pid != first_pid and part.process and part.process.poll() is None
        assert announced[-1] == f"started worker (pid {part.pid})"
    # Up 10 s, then twice up 1 s: the delay doubles; after STABLE_SECONDS up, back to the first.
    first = RESTART_FIRST_SECONDS
    assert delays == [first, first * 2, first * 4, first]
    assert part.restarts == 4


def test_a_part_that_ends_right_after_its_first_start_cannot_start(
    supervise: list[Supervisor], clock: Clock, announced: list[str]
) -> None:
    def broken() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])

    supervisor = make(supervise, clock, announced, Part("worker", broken))
    supervisor.start_all()
    killed_or_ended = supervisor.parts[0].process
    assert killed_or_ended is not None
    killed_or_ended.wait()
    clock.now += 1
    with pytest.raises(CannotStart, match=r"^worker exited with code 3 1\.0s after it started$"):
        supervisor.check()


def test_a_restart_that_fails_is_tried_again_after_the_next_delay(
    supervise: list[Supervisor],
    clock: Clock,
    announced: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts = []

    def flaky() -> subprocess.Popen[bytes]:
        attempts.append(clock.now)
        if len(attempts) == 2:
            raise RuntimeError("port 9092 is taken")
        return sleeper()

    part = Part("broker", flaky)
    supervisor = make(supervise, clock, announced, part)
    supervisor.start_all()
    clock.now += 60
    killed(part)
    supervisor.check()
    clock.now += RESTART_FIRST_SECONDS
    with caplog.at_level(logging.WARNING, "monitor.management.supervision"):
        supervisor.check()
    assert "broker could not start again (port 9092 is taken); next try in 1.0s" in caplog.text
    assert len(attempts) == 2 and part.restart_due == clock.now + 1.0
    clock.now += 1.0
    supervisor.check()
    assert len(attempts) == 3 and part.process is not None and part.process.poll() is None


def test_parts_stop_by_rank_the_broker_last(
    supervise: list[Supervisor], clock: Clock, announced: list[str]
) -> None:
    supervisor = make(
        supervise,
        clock,
        announced,
        Part("broker", sleeper, stop_rank=0),
        Part("web", sleeper),
        Part("relay", sleeper),
    )
    supervisor.start_all()
    supervisor.stop_all(timeout=5)
    assert announced[-3:] == ["stopped web", "stopped relay", "stopped broker"]
    assert all(part.process and part.process.poll() is not None for part in supervisor.parts)


@pytest.mark.e2e
def test_runstack_says_in_one_line_that_the_port_is_taken(tmp_path: Path) -> None:
    stack = RunStack(tmp_path)
    with socket.create_server(("127.0.0.1", stack.port)):
        result = subprocess.run(
            [sys.executable, "manage.py", "runstack"],
            cwd=ROOT,
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr == (
        f"CommandError: cannot serve on 127.0.0.1:{stack.port}: the address is in use "
        "(PORT=9000 make run serves on another port)\n"
    )
    assert not (tmp_path / "stack.json").exists()


@pytest.fixture(scope="module")
def poster(running: RunStack) -> Poster:
    return Poster(running.base_url, "survivor")


def wait_until_analysed(stack: RunStack, post_id: int, timeout: float = 90) -> float:
    """Seconds until the stack's analytics stored the post's event."""
    began = time.monotonic()
    query = "SELECT count(*) FROM monitor_analyticsevent WHERE type = ? AND subject = ?"
    with closing(sqlite3.connect(stack.var_dir / "eventsite.sqlite3", timeout=10)) as database:
        while not database.execute(query, ("photo.posted", f"posts/{post_id}")).fetchone()[0]:
            assert time.monotonic() - began < timeout, f"post {post_id} not analysed"
            time.sleep(0.3)
    return time.monotonic() - began


def deaths_logged(stack: RunStack, part: str, pid: int) -> list[str]:
    return [line for line in stack.log().splitlines() if f" {part} (pid {pid}) " in line]


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_a_killed_broker_is_restarted_with_its_topics_and_a_later_post_is_analysed(
    running: RunStack, poster: Poster, settings: Settings
) -> None:
    broker = running.pid_of("broker")
    assert broker is not None
    psutil.Process(broker).kill()
    restart_seconds = running.wait_for_restart("broker", broker)
    assert restart_seconds < 10

    settings.KAFKA_BOOTSTRAP_SERVERS = running.record()["bootstrap_servers"]
    assert settings.KAFKA_BOOTSTRAP_SERVERS == f"127.0.0.1:{running.broker_port}"

    async def topics() -> set[str]:
        consumer = kafka.make_consumer(group_id=None)
        await consumer.start()
        try:
            return set(await consumer.topics())
        finally:
            await consumer.stop()

    assert {settings.KAFKA_EVENTS_TOPIC, settings.KAFKA_DLQ_TOPIC} <= asyncio.run(topics())
    [death] = deaths_logged(running, "broker", broker)
    assert "killed by SIGKILL after" in death and "restarting it in 0.5s" in death
    wait_until_analysed(running, poster.post("after the broker came back"))
    assert running.record()["parts"]["broker"]["restarts"] == 1


@pytest.mark.e2e
@pytest.mark.parametrize("part", ["analytics", "relay"])
def test_a_killed_worker_is_restarted(running: RunStack, poster: Poster, part: str) -> None:
    pid = running.pid_of(part)
    assert pid is not None
    psutil.Process(pid).kill()
    assert running.wait_for_restart(part, pid) < 5
    [death] = deaths_logged(running, part, pid)
    assert "killed by SIGKILL after" in death
    wait_until_analysed(running, poster.post(f"after {part} came back"))


@pytest.mark.e2e
def test_a_killed_web_process_brings_the_web_tier_back(running: RunStack) -> None:
    web = running.pid_of("web")
    assert web is not None
    [daphne] = psutil.Process(web).children()
    daphne.kill()
    running.wait_for_restart("web", web)
    deadline = time.monotonic() + 60
    while not running.healthy():
        assert time.monotonic() < deadline, running.log()[-3000:]
        time.sleep(0.3)
    assert not daphne.is_running()


def gone(process: psutil.Process) -> bool:
    try:
        return bool(process.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_a_killed_supervisor_leaves_no_process_and_the_next_starts_on_the_same_ports(
    tmp_path: Path,
) -> None:
    first = RunStack(tmp_path, web=2)
    children: list[psutil.Process] = []
    try:
        first.start()
        assert first.process is not None
        supervisor = psutil.Process(first.process.pid)
        # runbroker and its broker, runweb and its two daphne processes,
        # analytics, notifications, relay
        children = supervisor.children(recursive=True)
        assert len(children) == 8, [child.cmdline() for child in children]
        recorded = {part["pid"] for part in first.record()["parts"].values()}
        assert recorded <= {child.pid for child in children}

        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
        deadline = time.monotonic() + 10
        while not all(gone(child) for child in children):
            assert time.monotonic() < deadline, [c.cmdline() for c in children if not gone(c)]
            time.sleep(0.1)
    finally:
        first.stop()
        for child in children:
            if not gone(child):
                child.kill()

    second = RunStack(tmp_path, port=first.port, broker_port=first.broker_port)
    try:
        second.start()
        record = second.record()
        assert second.process is not None and record["pid"] == second.process.pid
        assert record["bootstrap_servers"] == f"127.0.0.1:{first.broker_port}"
        assert httpx.get(f"{record['url']}/healthz", timeout=5).status_code == 200
    finally:
        second.stop()
