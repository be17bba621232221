"""The commands find the stack `make run` started, from another terminal with
nothing set, through the record runstack keeps (``var/stack.json``); with
nothing running each says so in one line."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from pytest_django import Settings

from monitor.workers import groups
from tests.support.kafka import produce
from tests.support.project import ROOT
from tests.support.stack import Poster, RunStack, token_of, tool_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

T = TypeVar("T")


def manage(
    env: dict[str, str], *argv: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def pending_letters(var_dir: Path) -> list[str]:
    """``redrive_dead_letters --list`` run from another terminal: one line each."""
    listed = manage(tool_env(var_dir), "redrive_dead_letters", "--list")
    assert listed.returncode == 0, listed.stderr
    return listed.stdout.splitlines()


def wait_for(condition: Callable[[], T], timeout: float, message: str) -> T:
    """``condition()``'s first true result, asked every half second."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, message
        time.sleep(0.5)
    return result


def test_it_records_where_the_broker_and_the_site_are(running: RunStack) -> None:
    assert running.process is not None
    record = running.record()
    assert record["pid"] == running.process.pid
    assert record["url"] == running.base_url
    assert record["bootstrap_servers"] == f"127.0.0.1:{running.broker_port}"
    assert record["embedded_broker"] is True
    assert datetime.fromisoformat(record["started_at"])
    for name, part in record["parts"].items():
        assert part["state"] == "running" and part["restarts"] == 0, name
        os.kill(part["pid"], 0)  # alive
    assert httpx.get(record["url"] + "/healthz", timeout=5).status_code == 200


def test_redrive_dead_letters_finds_the_broker_from_another_terminal(
    running: RunStack, settings: Settings
) -> None:
    settings.KAFKA_BOOTSTRAP_SERVERS = running.record()["bootstrap_servers"]
    asyncio.run(produce(settings.KAFKA_EVENTS_TOPIC, [b"{not json at all"]))

    # Each worker group refuses the record: one letter, naming every group.
    every_group = ",".join(sorted(groups.ALL))

    def listed_for_every_group() -> list[str]:
        letters = pending_letters(running.var_dir)
        return letters if any(line.split("\t")[1] == every_group for line in letters) else []

    first = wait_for(listed_for_every_group, 60, "the stack's workers did not all dead-letter it")
    assert len(first) == 1, first
    assert "value is not JSON" in first[0], first

    redriven = manage(tool_env(running.var_dir), "redrive_dead_letters", "--all")
    assert redriven.returncode == 0, redriven.stderr
    assert "re-drove 1 of 1 dead letters" in redriven.stdout

    # Back on the stack's topic, every group refuses the record again: the same
    # letter, pending again, with a second attempt per group (one text for all
    # groups once they all say the same).
    def refused_again() -> list[str]:
        lines = pending_letters(running.var_dir)
        return [line for line in lines if line.endswith("(2 attempts)") and "; " not in line]

    again = wait_for(refused_again, 60, "the re-driven record did not reach the stack's broker")
    assert [line.split("\t")[:2] for line in again] == [first[0].split("\t")[:2]]


def tail_one_post(env: dict[str, str], caption: str) -> dict[str, Any]:
    """The first post with ``caption`` that ``tail_events`` prints, from the history."""
    argv = ["--type", "photo.posted", "--text", caption, "--history", "10", "--count", "1"]
    tailed = manage(env, "tail_events", *argv)
    assert tailed.returncode == 0, tailed.stderr
    printed: dict[str, Any] = json.loads(tailed.stdout.splitlines()[0])
    return printed


def test_tail_events_finds_the_site_from_another_terminal(running: RunStack) -> None:
    poster = Poster(running.base_url, "tailed")
    post_id = poster.post("found without an address")
    env = {**tool_env(running.var_dir), "EVENTSITE_TOKEN": token_of(poster)}

    printed = tail_one_post(env, "found without an address")
    assert printed["event"]["data"]["post_id"] == post_id


def test_tail_events_follows_port(running: RunStack, tmp_path: Path) -> None:
    poster = Poster(running.base_url, "porter")
    post_id = poster.post("found by PORT")
    # Another checkout, where nothing runs: PORT alone says where the site is.
    env = {**tool_env(tmp_path), "PORT": str(running.port), "EVENTSITE_TOKEN": token_of(poster)}

    printed = tail_one_post(env, "found by PORT")
    assert printed["event"]["data"]["post_id"] == post_id


COMMANDS = {
    "run_analytics": ["run_analytics"],
    "run_notifications": ["run_notifications"],
    "relay_outbox": ["relay_outbox"],
    "runweb": ["runweb", "--port", "0"],
    "redrive_dead_letters": ["redrive_dead_letters", "--all"],
    "tail_events": ["tail_events", "--count", "1"],
}


@pytest.mark.parametrize("stale", [False, True], ids=["no record", "supervisor gone"])
def test_with_nothing_running_each_command_says_so_in_one_line(tmp_path: Path, stale: bool) -> None:
    if stale:  # the record of a runstack that was killed: its pid is gone
        gone = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        record = {
            "pid": int(gone.stdout),
            "url": "http://127.0.0.1:1",
            "bootstrap_servers": "127.0.0.1:1",
            "embedded_broker": True,
            "started_at": "2026-01-01T00:00:00Z",
            "parts": {},
        }
        (tmp_path / "stack.json").write_text(json.dumps(record))
    env = {**tool_env(tmp_path), "EVENTSITE_TOKEN": "es_unused"}
    for name, argv in COMMANDS.items():
        began = time.monotonic()
        result = manage(env, *argv, timeout=30)
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, name
        assert result.stderr.startswith("CommandError: eventsite is not running from "), name
        assert "start it with `make run`" in result.stderr, name
        assert time.monotonic() - began < 20, name
