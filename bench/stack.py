"""The embedded stack the benchmark measures: broker, database, daphne and workers.

Everything runs on 127.0.0.1 on free ports, against a SQLite file in a temp
directory (or the database in ``DATABASE_URL`` when it is set), migrated with
``manage.py migrate``. Every process the stack starts is stopped by its PID
in :meth:`Stack.close`, which the caller runs in a ``finally`` (Ctrl-C and
SIGTERM included). As a last resort, on Linux each child also gets SIGTERM
from the kernel if the benchmark process dies without cleaning up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from monitor.kafka.embedded import EmbeddedBroker, free_port
from monitor.management.processes import killed_with_parent, stop_processes

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


@dataclass
class Server:
    """A web tier serving one ASGI application: ``runweb`` and its daphne processes."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws/events/"

    @property
    def origin(self) -> str:
        return self.base_url

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class Stack:
    """Broker, database and server processes for one benchmark run."""

    workdir: Path
    database_url: str
    broker: EmbeddedBroker
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    owns_workdir: bool = True

    @classmethod
    def start(cls) -> Stack:
        """Start the broker and prepare the database; nothing serves yet."""
        workdir = Path(tempfile.mkdtemp(prefix="eventsite-bench-"))
        (workdir / "media").mkdir()
        database_url = os.getenv("DATABASE_URL") or f"sqlite:///{workdir / 'bench.sqlite3'}"
        broker = EmbeddedBroker(log=workdir / "broker.log")
        stack = cls(workdir=workdir, database_url=database_url, broker=broker, env={})
        try:
            broker.start()
            stack.env = stack._base_env()
            stack.migrate()
        except BaseException:
            stack.close()
            raise
        return stack

    def _base_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap_servers,
            "DJANGO_MEDIA_ROOT": str(self.workdir / "media"),
            "EVENTSITE_VAR_DIR": str(self.workdir),
            # Production-like: no query log, no debug pages.
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": os.getenv("DJANGO_SECRET_KEY") or secrets.token_urlsafe(40),
            "OUTBOX_RELAY_AFTER_SECONDS": "2",
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
            "FANOUT_IDLE_STOP_SECONDS": "2",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            # Every simulated poster comes from 127.0.0.1: limits far above the
            # load keep the counters' cost in the figures without refusing it
            # (BENCH_RATE_LIMITS=off measures without them).
            "EVENTSITE_RATE_LIMITS": os.getenv(
                "BENCH_RATE_LIMITS", "post=1000000/60,like=1000000/60,comment=1000000/60"
            ),
        }

    @property
    def broker_pid(self) -> int:
        assert self.broker.process is not None
        return self.broker.process.pid

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def migrate(self) -> None:
        result = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py migrate failed:\n{result.stderr.decode()[-3000:]}")

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start ``python argv...`` in the repo; output goes to ``<workdir>/<name>.log``.

        Call this from the main thread: the kernel's parent-death signal is
        tied to the thread that forked.
        """
        if name in self.processes and self.processes[name].poll() is None:
            raise RuntimeError(f"{name} is already running")
        log_path = self.workdir / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, *argv],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the benchmark, which stops us in order
                preexec_fn=killed_with_parent(signal.SIGTERM),
            )
        self.processes[name] = process
        logger.info("started %s (pid %d)", name, process.pid)
        return process

    async def start_web(
        self,
        name: str,
        *,
        topic: str,
        application: str = "eventsite.asgi:application",
        extra_env: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Server:
        """Start the web tier (``manage.py runweb``: ``EVENTSITE_WEB_PROCESSES`` daphne
        processes on one port) reading ``topic``; return once /healthz answers."""
        port = free_port()
        env = {**self.env, **topic_env(topic), **(extra_env or {})}
        argv = ["manage.py", "runweb", "--host", HOST, "--port", str(port)]
        argv += ["--application", application]
        process = self.spawn(name, argv, env)
        server = Server(name, port, process, self.workdir / f"{name}.log")
        await wait_for_http(f"{server.base_url}/healthz", process, timeout, log=server.log)
        return server

    def start_worker(
        self, name: str, command: list[str], *, topic: str, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        env = {**self.env, **topic_env(topic), **(extra_env or {})}
        return self.spawn(name, ["manage.py", *command], env)

    def stop(self, name: str, timeout: float = 10.0) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            stop_processes([process], timeout)
            logger.info("stopped %s (pid %d)", name, process.pid)

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def close(self) -> None:
        """Stop every process this stack started (by PID), the broker last."""
        for name in list(self.processes):
            try:
                self.stop(name)
            except Exception:  # noqa: BLE001 - keep stopping the others
                logger.exception("could not stop %s", name)
        self.broker.stop()
        if self.owns_workdir and not os.getenv("BENCH_KEEP_WORKDIR"):
            shutil.rmtree(self.workdir, ignore_errors=True)


def topic_env(topic: str) -> dict[str, str]:
    return {"KAFKA_EVENTS_TOPIC": topic, "KAFKA_DLQ_TOPIC": f"{topic}.dlq"}


async def wait_for_http(
    url: str, process: subprocess.Popen[bytes], timeout: float, *, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:] if log else ""
                raise RuntimeError(f"server exited with code {process.returncode}\n{tail}")
            try:
                await client.get(url)
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def setup_django(stack: Stack) -> None:
    """Load Django in this process against the stack's database and broker."""
    for name in (
        "DATABASE_URL",
        "KAFKA_BOOTSTRAP_SERVERS",
        "DJANGO_MEDIA_ROOT",
        "EVENTSITE_VAR_DIR",
        "DJANGO_DEBUG",
        "DJANGO_SECRET_KEY",
    ):
        os.environ[name] = stack.env[name]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eventsite.settings")
    import django

    django.setup()


def create_sessions(usernames: list[str]) -> dict[str, str]:
    """Create (or reuse) users and a logged-in session for each; returns session ids.

    Users get an unusable password: sessions are made directly, so no
    password hashing slows the set-up.
    """
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.sessions.backends.db import SessionStore

    sessions = {}
    for username in usernames:
        user, created = get_user_model().objects.get_or_create(username=username)
        if created:
            user.set_unusable_password()
            user.save()
        store = SessionStore()
        store[SESSION_KEY] = str(user.pk)
        store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        store[HASH_SESSION_KEY] = user.get_session_auth_hash()
        store.save()
        assert store.session_key is not None
        sessions[username] = store.session_key
    return sessions


async def create_topics(names: list[str]) -> None:
    """Create each named events topic and its dead-letter topic."""
    from monitor.kafka import clients as kafka

    await kafka.ensure_topics([topic for name in names for topic in (name, f"{name}.dlq")])


def forget_run(topics: list[str], sessions: dict[str, str]) -> None:
    """Delete what a run left in a database that outlives it (PostgreSQL via DATABASE_URL).

    Per-minute analytics counts cannot be told apart from real ones and stay.
    """
    from django.contrib.auth import get_user_model
    from django.contrib.sessions.models import Session

    from monitor.models import AnalyticsEvent, DeadLetter, OutboxEvent, Post

    usernames = list(sessions)
    AnalyticsEvent.objects.filter(topic__in=topics).delete()
    OutboxEvent.objects.filter(topic__in=topics).delete()
    DeadLetter.objects.filter(topic__in=topics).delete()
    Post.objects.filter(author__username__in=usernames).delete()
    get_user_model().objects.filter(username__in=usernames).delete()
    Session.objects.filter(session_key__in=list(sessions.values())).delete()
