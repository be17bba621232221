"""The stack a soak runs against: ``manage.py runstack``, as ``make run`` starts it.

:meth:`SoakStack.start` runs ``manage.py runstack`` with nothing changed but
where it lives: a temporary ``EVENTSITE_VAR_DIR`` (so its SQLite file, media
and broker log are new), and free ports on 127.0.0.1 for the site
(``HOST``/``PORT``) and the embedded broker (``EMBEDDED_KAFKA_PORT``). Any
``DATABASE_URL`` or ``KAFKA_BOOTSTRAP_SERVERS`` in the caller's environment
is dropped, so that the embedded default is what is measured; every other
variable (``KAFKA_LIVE_FETCH_WAIT_MS``, ``KAFKA_TOPIC_PARTITIONS``...) passes
through, which is how candidates are compared by settings alone.

The processes runstack starts are told apart by their command lines
(:meth:`SoakStack.roles`), read again at every call, so a child that runstack
restarts is still found. :meth:`SoakStack.close` stops runstack by its PID
(it stops its children), then kills, by PID, any descendant it ever saw
that is still alive; on Linux runstack also gets SIGTERM from the kernel if
the soak dies without cleaning up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from monitor.kafka.embedded import free_port
from monitor.management.processes import killed_with_parent

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
# Set by the caller to measure something else than the embedded default.
DROPPED_VARIABLES = ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "EVENTSITE_VAR_DIR")
# A process whose command line holds one of these is that role; a child of
# runstack that holds none of them is the broker.
WORKER_MARKERS = {
    "runweb": "web",
    "run_analytics": "analytics",
    "run_notifications": "notifications",
    "relay_outbox": "relay",
}
BROKER, SUPERVISOR = "broker", "supervisor"


def role_of(process: psutil.Process) -> str:
    """``web``, ``analytics``, ``notifications``, ``relay``, or ``broker`` for anything else."""
    try:
        command_line = " ".join(process.cmdline())
    except psutil.Error:
        return BROKER
    for marker, role in WORKER_MARKERS.items():
        if marker in command_line:
            return role
    return BROKER


@dataclass
class SoakStack:
    """One ``runstack`` and everything it started, in a directory of its own."""

    workdir: Path
    port: int
    process: subprocess.Popen[bytes]
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    @classmethod
    async def start(cls, timeout: float = 120.0) -> SoakStack:
        """Start runstack and return once ``/healthz`` answers 200."""
        workdir = Path(tempfile.mkdtemp(prefix="eventsite-soak-"))
        port = free_port()
        env = {name: value for name, value in os.environ.items() if name not in DROPPED_VARIABLES}
        env.update(
            EVENTSITE_VAR_DIR=str(workdir / "var"),
            HOST=HOST,
            PORT=str(port),
            EMBEDDED_KAFKA_PORT=str(free_port()),
            PYTHONUNBUFFERED="1",
        )
        with open(workdir / "runstack.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "manage.py", "runstack"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the soak, which stops runstack
                preexec_fn=killed_with_parent(signal.SIGTERM),
            )
        stack = cls(workdir, port, process)
        try:
            await stack._wait_healthy(timeout)
        except BaseException:
            stack.close()
            raise
        logger.info("runstack (pid %d) serving on %s", process.pid, stack.base_url)
        return stack

    async def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=5) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"runstack exited with code {self.process.returncode}:\n{self.log_tail()}"
                    )
                try:
                    if (await client.get(f"{self.base_url}/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.5)
        raise TimeoutError(f"{self.base_url}/healthz did not answer 200 within {timeout:.0f}s")

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws/events/"

    @property
    def database(self) -> Path:
        return self.workdir / "var" / "eventsite.sqlite3"

    @property
    def log(self) -> Path:
        return self.workdir / "runstack.log"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def log_bytes(self) -> int:
        """Bytes written to the logs: runstack's and its children's output, and the
        log files in the var directory (the broker's)."""
        logs = [self.log, *(self.workdir / "var").glob("*.log")]
        return sum(path.stat().st_size for path in logs if path.exists())

    def roles(self) -> dict[str, int]:
        """Each role's top process id (``supervisor`` is runstack itself); a role whose
        process is not running (yet) is left out. The web tier's daphne processes and
        anything else below a role's process count with it (see bench.usage)."""
        found = {SUPERVISOR: self.process.pid}
        try:
            children = psutil.Process(self.process.pid).children()
        except psutil.Error:
            return found
        for child in children:
            found.setdefault(role_of(child), child.pid)
        self._remember(children)
        return found

    def _remember(self, children: list[psutil.Process]) -> None:
        for child in children:
            self.seen.setdefault(child.pid, child)
            try:
                for descendant in child.children(recursive=True):
                    self.seen.setdefault(descendant.pid, descendant)
            except psutil.Error:
                pass

    def broker_address(self) -> str:
        """host:port where the embedded broker listens (read from the kernel's table)."""
        broker = self.roles().get(BROKER)
        if broker is None:
            raise RuntimeError("runstack started no broker process")
        listening = [
            conn.laddr
            for conn in psutil.Process(broker).net_connections(kind="tcp")
            if conn.status == psutil.CONN_LISTEN and conn.laddr
        ]
        if not listening:
            raise RuntimeError(f"the broker (pid {broker}) listens on no TCP port")
        return f"{HOST}:{listening[0].port}"

    def close(self, timeout: float = 30.0) -> None:
        """Stop runstack (SIGTERM, then SIGKILL after ``timeout``), then any process it
        started that is still alive, each by its PID; remove the directory unless
        ``SOAK_KEEP_WORKDIR`` is set."""
        self.roles()  # the latest children, in case one was restarted
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("runstack did not stop within %.0fs; killing it", timeout)
                self.process.kill()
                self.process.wait()
        for pid, process in self.seen.items():
            try:
                if process.is_running():  # same pid and start time: ours, not a reused pid
                    logger.warning("pid %d outlived runstack; killing it", pid)
                    process.kill()
            except psutil.Error:
                pass
        if os.getenv("SOAK_KEEP_WORKDIR"):
            logger.warning("kept %s", self.workdir)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
