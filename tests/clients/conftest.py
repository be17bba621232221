"""Fixtures of the tests with Kafka clients nobody here wrote: kafkajs, run by
this machine's Node.js from ``node_modules/`` (which ``make test`` installs
from package-lock.json with ``npm ci``), and confluent-kafka (librdkafka,
from requirements-dev.txt).

Without Node.js or kafkajs the kafkajs tests are skipped with the reason,
except on CI (``CI=true``), where ``.ci/run`` installs npm and their absence
fails them. Every Node.js process a test starts is stopped by its PID."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from monitor.management.processes import killed_with_parent, stop_processes
from tests.support.project import ROOT

SCRIPTS = Path(__file__).resolve().parent / "node"
KAFKAJS = ROOT / "node_modules" / "kafkajs" / "package.json"
ON_CI = os.getenv("CI") == "true"


def kafkajs_missing() -> str | None:
    """Why the kafkajs scripts cannot run here, or None if they can."""
    if shutil.which("node") is None:
        return "Node.js is not installed (apt-get install npm)"
    if not KAFKAJS.exists():
        return "kafkajs is not in node_modules/ (`make test` installs it with `npm ci`)"
    return None


class NodeScripts:
    """The scripts of tests/clients/node/, run with this machine's Node.js.

    Each script's output (stdout and stderr) goes to ``log_dir/<script>.log``.
    A process still running at the end is stopped by its PID (:meth:`stop_all`)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: dict[str, subprocess.Popen[bytes]] = {}

    def _env(self, env: Mapping[str, str]) -> dict[str, str]:
        # kafkajs 2 prints a notice about its default partitioner on every run.
        return {**os.environ, **env, "KAFKAJS_NO_PARTITIONER_WARNING": "1"}

    def log(self, script: str) -> str:
        path = self.log_dir / f"{script}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def run(self, script: str, env: Mapping[str, str], timeout: float = 30) -> str:
        """Run ``script`` to its end; its standard output. Fails the test if it
        exits with an error or is still running after ``timeout`` seconds."""
        try:
            done = subprocess.run(
                ["node", str(SCRIPTS / script)],
                cwd=ROOT,
                env=self._env(env),
                capture_output=True,
                text=True,
                timeout=timeout,
                preexec_fn=killed_with_parent(),
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{script} did not end within {timeout:g} s: {exc.stderr!r}")
        assert done.returncode == 0, f"{script} exited with {done.returncode}:\n{done.stderr}"
        return done.stdout

    def start(self, script: str, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        """Start ``script``, which runs until it is stopped."""
        with open(self.log_dir / f"{script}.log", "ab") as log:
            process = subprocess.Popen(
                ["node", str(SCRIPTS / script)],
                cwd=ROOT,
                env=self._env(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=killed_with_parent(),
            )
        self.started[script] = process
        return process

    def wait_for_line(self, script: str, line: str, timeout: float) -> list[str]:
        """The lines ``script`` (started with :meth:`start`) has printed, once one
        of them is ``line``; fails after ``timeout`` seconds or if it ends first."""
        deadline = time.monotonic() + timeout
        while line not in (lines := self.log(script).splitlines()):
            exited = self.started[script].poll() is not None
            if exited or time.monotonic() > deadline:
                why = "ended" if exited else f"did not print it within {timeout:g} s"
                pytest.fail(f"{script} {why} ({line!r}):\n{self.log(script)[-3000:]}")
            time.sleep(0.2)
        return lines

    def stop_all(self) -> None:
        stop_processes(self.started.values(), timeout=5)


@pytest.fixture
def kafkajs(tmp_path: Path) -> Iterator[NodeScripts]:
    """The kafkajs scripts, ready to run; skipped (failed on CI) without them."""
    missing = kafkajs_missing()
    if missing is not None:
        if ON_CI:
            pytest.fail(f"{missing}: CI runs the kafkajs tests")
        pytest.skip(missing)
    scripts = NodeScripts(tmp_path)
    try:
        yield scripts
    finally:
        scripts.stop_all()
