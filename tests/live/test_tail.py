"""``manage.py tail_events``: the command-line client, run as a user would run
it, against a real daphne that is restarted under it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from monitor.live.tail import parse_positions, stream_url
from tests.support.events import photo_event, signups
from tests.support.kafka import produce_events as produce
from tests.support.project import ROOT
from tests.support.stack import Processes, make_token

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_it_turns_a_site_address_into_the_stream_address() -> None:
    assert stream_url("http://127.0.0.1:8000") == "ws://127.0.0.1:8000/ws/events/"
    assert stream_url("https://example.com/") == "wss://example.com/ws/events/"
    assert stream_url("ws://h:1/ws/events/") == "ws://h:1/ws/events/"
    with pytest.raises(ValueError):
        stream_url("ftp://example.com")
    assert parse_positions("0:17, 1:-1,orders/2:4") == {"0": 17, "1": -1, "orders/2": 4}


class Tail:
    """``manage.py tail_events`` in a process of its own (stopped with the
    ``processes`` fixture's)."""

    def __init__(self, processes: Processes, token: str, *args: str) -> None:
        self.err_path = processes.log_dir / f"tail-{time.monotonic_ns()}.err"
        env = {**processes.env, "EVENTSITE_TOKEN": token}
        argv = [sys.executable, "manage.py", "tail_events", "--url", processes.base_url, *args]
        with open(self.err_path, "wb") as err:
            self.process = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err
            )
        processes.running[f"tail-{self.process.pid}"] = self.process

    def notes(self) -> list[dict[str, Any]]:
        text = self.err_path.read_text()
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def wait_connected(self, times: int = 1, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while sum(note["type"] == "connected" for note in self.notes()) < times:
            assert self.process.poll() is None, self.err_path.read_text()
            assert time.monotonic() < deadline, self.err_path.read_text()
            time.sleep(0.05)

    def finish(self, timeout: float = 60) -> list[dict[str, Any]]:
        """The events printed, once the process has exited by itself."""
        out, _ = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, self.err_path.read_text()
        return [json.loads(line) for line in out.decode().splitlines()]


def photos(first: int, count: int) -> list[dict[str, Any]]:
    return [photo_event(n, caption=f"tail {n}") for n in range(first, first + count)]


def assert_exactly(printed: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Each expected event printed once, in the order produced within a partition."""
    ids = [item["event"]["id"] for item in printed]
    assert len(ids) == len(set(ids)), "an event was printed twice"
    assert sorted(ids) == sorted(event["id"] for event in expected)
    by_partition: dict[int, list[int]] = {}
    for item in printed:
        by_partition.setdefault(item["partition"], []).append(item["offset"])
    for offsets in by_partition.values():
        assert offsets == sorted(offsets)
    produced_order = {event["id"]: n for n, event in enumerate(expected)}
    for partition in by_partition:
        ranks = [produced_order[i["event"]["id"]] for i in printed if i["partition"] == partition]
        assert ranks == sorted(ranks)


def test_it_prints_filtered_events_and_resumes_across_a_server_restart(
    processes: Processes,
) -> None:
    token = make_token("tailer")
    processes.start("web")
    tail = Tail(processes, token, "--type", "photo.posted", "--count", "40")
    tail.wait_connected()
    before, during, after = photos(5000, 10), photos(5100, 15), photos(5200, 15)
    asyncio.run(produce([*before, *signups(5300, 5)], pause=0.01))
    processes.running["web"].terminate()
    processes.running["web"].wait(10)
    asyncio.run(produce([*during, *signups(5400, 5)], pause=0.01))
    processes.start("web")
    tail.wait_connected(times=2)
    asyncio.run(produce([*after, *signups(5500, 5)], pause=0.01))

    printed = tail.finish()
    assert_exactly(printed, [*before, *during, *after])
    assert {item["event"]["type"] for item in printed} == {"photo.posted"}
    kinds = [note["type"] for note in tail.notes()]
    assert "reconnecting" in kinds
    assert "gap" not in kinds  # nothing was missed, so nothing is announced


def test_a_state_file_resumes_where_the_last_run_stopped(
    processes: Processes, tmp_path: Path
) -> None:
    token = make_token("stateful")
    processes.start("web")
    state = tmp_path / "positions.json"
    first = Tail(processes, token, "--state", str(state), "--count", "8")
    first.wait_connected()
    events = photos(6000, 20)
    asyncio.run(produce(events[:12]))
    printed_first = first.finish()
    assert len(printed_first) == 8
    asyncio.run(produce(events[12:]))
    second = Tail(processes, token, "--state", str(state), "--count", "12")
    printed_second = second.finish()
    assert_exactly([*printed_first, *printed_second], events)


def test_it_stops_with_code_2_on_a_bad_token(processes: Processes) -> None:
    processes.start("web")
    tail = Tail(processes, "es_" + "x" * 43)
    assert tail.process.wait(30) == 2
    refused = [note for note in tail.notes() if note["type"] == "refused"]
    assert refused and "4401" in refused[0]["reason"]


def test_a_history_comes_first_then_the_live_events(processes: Processes) -> None:
    token = make_token("historian")
    processes.start("web")
    older, newer = photos(7000, 10), photos(7100, 3)
    asyncio.run(produce(older))
    tail = Tail(processes, token, "--history", "3", "--count", "6")
    tail.wait_connected()
    asyncio.run(produce(newer))
    printed = tail.finish()
    assert [item["event"]["id"] for item in printed[:3]] == [e["id"] for e in older[-3:]]
    assert_exactly(printed[3:], newer)
