"""`manage.py runstack` (what `make run` calls) brings the product up and takes it down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from monitor.kafka.embedded import free_port
from tests.support.project import ROOT


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as stopped.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def _child_pids(output: str) -> list[int]:
    pids = []
    for line in output.splitlines():
        if "(pid " in line:
            pids.append(int(line.split("(pid ")[1].split(")")[0]))
    return pids


@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_it_serves_everything_and_stops_every_process(tmp_path, signum) -> None:
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}
    }
    env.update(
        EVENTSITE_VAR_DIR=str(tmp_path),
        PORT=str(port),
        EMBEDDED_KAFKA_PORT=str(free_port()),
        EVENTSITE_WEB_PROCESSES="2",
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "runstack.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runstack"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                if health.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert health is not None and health.status_code == 200, log.read_text()
        assert health.json()["broker"]["ok"]
        assert (tmp_path / "eventsite.sqlite3").exists()
        login = httpx.get(f"http://127.0.0.1:{port}/accounts/login/", timeout=5)
        assert login.status_code == 200 and 'name="username"' in login.text
        pids = _child_pids(log.read_text())
        # broker, web (runweb) and its two daphne processes, analytics, notifications, relay
        assert len(pids) == 7, log.read_text()
        assert all(_alive(pid) for pid in pids)
    finally:
        process.send_signal(signum)
        process.wait(30)
    assert process.returncode == 0, log.read_text()
    assert not [pid for pid in pids if _alive(pid)], log.read_text()
