"""The product's processes started for tests, and the people who use them over
HTTP.

``Stack`` is the session's running site (the ``stack`` fixture); ``Processes``
starts product processes for one test (the ``processes`` fixture). Every
process gets this run's test database (``child_database_env``) and is stopped
by its PID. ``RunStack`` is ``manage.py runstack`` (what ``make run`` runs) in
a directory of its own, and ``tool_env`` the environment of a command typed
in another terminal beside it. ``Poster`` and ``signed_in_client`` sign up through the real form,
as a browser would; ``make_token`` gives a new user an API token for programs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from django.conf import settings
from django.contrib.auth.models import User

from monitor.kafka.embedded import free_port
from monitor.management.processes import daphne_command, stop_processes
from monitor.management.supervision import MIN_HEALTHY_SECONDS
from monitor.security.tokens import token_create
from tests.support.images import jpeg_bytes
from tests.support.project import ROOT

CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
NEW_TOKEN = re.compile(r'id="new-token"[^>]*value="([^"]+)"')


def child_database_env() -> dict[str, str]:
    """What a child process's environment needs so that Django in it uses this
    run's test database (not the one ``DATABASE_URL`` names).

    Call it once pytest-django has set the test database up (any fixture that
    depends on ``django_db_setup`` or a ``django_db`` test); ``DATABASE_URL``
    keeps its scheme, login, host, port and options, with the test database's
    name in place of its own.
    """
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        return {"DATABASE_URL": f"sqlite:///{database['NAME']}"}
    url = urlsplit(os.environ["DATABASE_URL"])
    return {"DATABASE_URL": url._replace(path="/" + quote(str(database["NAME"]))).geturl()}


def wait_for_http(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Return once ``url`` answers at all (any status); raise RuntimeError if
    ``process`` exits first, TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@dataclass
class Stack:
    """Server processes running against the test database and broker."""

    base_url: str
    ws_url: str
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]]

    @property
    def origin(self) -> str:
        return self.base_url


class Processes:
    """Product processes (web, workers) started for one test, stopped by PID at the end.

    Each process's output goes to ``log_dir/<name>.log`` (appended to across
    restarts). The web process keeps its port across restarts."""

    COMMANDS = {
        "analytics": ["manage.py", "run_analytics"],
        "relay": ["manage.py", "relay_outbox", "--interval", "0.5"],
    }

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.port: int | None = None

    def start(self, name: str) -> subprocess.Popen[bytes]:
        """Start ``name`` ("web" or a key of COMMANDS); for "web", return once
        it answers HTTP."""
        if name == "web":
            self.port = self.port or free_port()
            argv = daphne_command("-b", "127.0.0.1", "-p", str(self.port))
        else:
            argv = [sys.executable, *self.COMMANDS[name]]
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        process = subprocess.Popen(
            argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.running[name] = process
        if name == "web":
            wait_for_http(f"{self.base_url}/healthz", process, timeout=30)
        return process

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self, name: str) -> str:
        """What process ``name`` has written so far ("" if it never ran)."""
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_all(self) -> None:
        stop_processes(self.running.values())


def csrf_token(page: httpx.Response) -> str:
    """The CSRF token of the form in ``page``."""
    match = CSRF_FIELD.search(page.text)
    assert match, f"no CSRF field in {page.request.url}"
    return match.group(1)


def signed_in_client(
    stack: Stack, username: str, password: str, *, staff: bool = False
) -> httpx.Client:
    """An HTTP client that signed up through the real signup form; with
    ``staff``, an operator's (who sees every event on the stream)."""
    client = httpx.Client(base_url=stack.base_url, timeout=10)
    token = csrf_token(client.get("/accounts/signup/"))
    response = client.post(
        "/accounts/signup/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token},
        headers={"Referer": stack.base_url + "/accounts/signup/"},
    )
    assert response.status_code == 302, response.text
    if staff:
        User.objects.filter(username=username).update(is_staff=True)
    return client


class Poster:
    """A user who signed up through the real form and posts photos over HTTP."""

    def __init__(self, base_url: str, username: str) -> None:
        self.base_url = base_url
        self.username = username
        self.client = httpx.Client(base_url=base_url, timeout=30)
        response = self.client.post(
            "/accounts/signup/",
            data={
                "username": username,
                "password": "a-long-pass-phrase-7",
                "csrfmiddlewaretoken": csrf_token(self.client.get("/accounts/signup/")),
            },
            headers={"Referer": base_url + "/accounts/signup/"},
        )
        assert response.status_code == 302, response.text
        self.token = csrf_token(self.client.get("/posts/new/"))
        self.photo = jpeg_bytes()

    def post(self, caption: str) -> int:
        """Post a photo; returns the new post's id."""
        response = self.client.post(
            "/posts/new/",
            data={"caption": caption, "csrfmiddlewaretoken": self.token},
            files={"photo": ("p.jpg", self.photo, "image/jpeg")},
            headers={"Referer": self.base_url + "/posts/new/", "Accept": "application/json"},
        )
        assert response.status_code == 201, response.text
        return int(response.json()["id"])


def make_token(username: str, *, staff: bool = True) -> str:
    """A new user ``username`` (in the test database) and the secret of an API
    token of theirs, for programs that stream events: an operator's (staff,
    who see every event) unless ``staff`` is False (a user's, who see only
    the site's public events)."""
    user = User.objects.create_user(username=username, password="pw-a-long-one-2")
    if staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    return token_create(user=user, name="tail")[1]


# What `make run` and a command in another terminal would not have set.
STACK_VARIABLES = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "DATABASE_URL",
    "EVENTSITE_URL",
    "PORT",
    "HOST",
    "EMBEDDED_KAFKA_PORT",
    "EVENTSITE_VAR_DIR",
)


def tool_env(var_dir: Path) -> dict[str, str]:
    """The environment of a command run in another terminal of the checkout
    whose ``var/`` is ``var_dir``: nothing says where the broker or the site is."""
    env = {key: value for key, value in os.environ.items() if key not in STACK_VARIABLES}
    return {**env, "EVENTSITE_VAR_DIR": str(var_dir), "PYTHONUNBUFFERED": "1"}


def token_of(poster: Poster, *, staff_in: RunStack | None = None) -> str:
    """A new API token of ``poster``'s, made through /settings/tokens/; with
    ``staff_in`` (the stack they signed up on), an operator's, who sees every
    event on the stream."""
    if staff_in is not None:
        staff_in.make_staff(poster.username)
    page = poster.client.get("/settings/tokens/")
    made = poster.client.post(
        "/settings/tokens/",
        data={"name": "tail", "csrfmiddlewaretoken": csrf_token(page)},
        headers={"Referer": poster.base_url + "/settings/tokens/"},
    )
    assert made.status_code == 201, made.text
    match = NEW_TOKEN.search(made.text)
    assert match, made.text
    return match.group(1)


class RunStack:
    """``manage.py runstack`` with its own ``var_dir`` (SQLite, media, broker
    log, ``stack.json``) on free ports, its output in ``var_dir/runstack.log``.
    Stopped by its PID."""

    PARTS = ("broker", "web", "analytics", "notifications", "relay")

    def __init__(self, var_dir: Path, *, port: int = 0, broker_port: int = 0, web: int = 1):
        self.var_dir = var_dir
        self.port = port or free_port()
        self.broker_port = broker_port or free_port()
        self.env = {
            **tool_env(var_dir),
            "PORT": str(self.port),
            "EMBEDDED_KAFKA_PORT": str(self.broker_port),
            "EVENTSITE_WEB_PROCESSES": str(web),
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def make_staff(self, username: str) -> None:
        """Make ``username`` an operator (staff: sees every event on the stream),
        in the stack's own SQLite database."""
        with sqlite3.connect(self.var_dir / "eventsite.sqlite3") as db:
            changed = db.execute(
                "update auth_user set is_staff = 1 where username = ?", (username,)
            )
            assert changed.rowcount == 1, username

    def start(self, timeout: float = 90) -> RunStack:
        """Start it; return once every part runs, /healthz answers 200, and every
        part is past its first-start window (a part that ends within
        ``MIN_HEALTHY_SECONDS`` of its first start stops the stack: it cannot run)."""
        with open(self.var_dir / "runstack.log", "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "runstack"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"runstack did not come up:\n{self.log()[-3000:]}")
            time.sleep(0.3)
        # Every part started before the stack was healthy: past the window from here.
        time.sleep(MIN_HEALTHY_SECONDS + 0.5)
        return self

    def healthy(self) -> bool:
        try:
            parts = self.record()["parts"]
            if sorted(parts) != sorted(self.PARTS):
                return False
            return httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200
        except (OSError, ValueError, KeyError, httpx.HTTPError):
            return False

    def record(self) -> dict[str, Any]:
        """``stack.json`` as it is now (raises OSError if there is none)."""
        record: dict[str, Any] = json.loads((self.var_dir / "stack.json").read_text())
        return record

    def pid_of(self, part: str) -> int | None:
        """The running pid of ``part`` in the record; None while it restarts."""
        try:
            pid = self.record()["parts"][part]["pid"]
        except (OSError, ValueError, KeyError):
            return None
        return int(pid) if pid is not None else None

    def wait_for_restart(self, part: str, old_pid: int, timeout: float = 30) -> float:
        """Seconds until the record shows ``part`` running under another pid."""
        began = time.monotonic()
        while self.pid_of(part) in (None, old_pid):
            assert time.monotonic() - began < timeout, f"{part} not restarted:\n{self.log()}"
            time.sleep(0.05)
        return time.monotonic() - began

    def log(self) -> str:
        path = self.var_dir / "runstack.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM, as Ctrl-C would; SIGKILL after 30 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
