"""Where the running stack is: the record ``manage.py runstack`` keeps in ``VAR_DIR``.

``runstack`` writes ``VAR_DIR/stack.json`` once its parts start, again each
time one of them dies or starts again, and removes it when it stops cleanly.
The commands run from another terminal (the workers, the relay, the web
tier, ``redrive_dead_letters``, ``tail_events``) read it when they are not
told where the broker or the site is, so that they work with ``make run`` up
and nothing else set.

The record is JSON::

    {"pid": 4242, "url": "http://127.0.0.1:8000",
     "bootstrap_servers": "127.0.0.1:9092", "embedded_broker": true,
     "started_at": "2026-11-24T10:15:30Z",
     "parts": {"broker": {"pid": 4243, "state": "running", "restarts": 0,
                          "last_exit": null}, "web": {...}, ...}}

``url`` is one a client can connect to (a wildcard listening address is
given as the loopback address). Each write replaces the whole file at once
(a new file renamed over the old), so a reader sees the old record or the
new one, never a mix. A record whose ``pid`` is no longer a running
``runstack`` (the supervisor was killed) counts as nothing running.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError

logger = logging.getLogger(__name__)

RECORD_NAME = "stack.json"
NOTHING_RUNNING = (
    "eventsite is not running from {var_dir} (no live {record}); start it with `make run`"
)


@dataclass
class PartState:
    """One supervised part as the record shows it."""

    pid: int | None
    state: str  # "running", or "restarting" between a death and the next start
    restarts: int = 0
    last_exit: str | None = None  # how it ended last time, e.g. "killed by SIGKILL"


@dataclass
class StackRecord:
    pid: int
    url: str
    bootstrap_servers: str
    embedded_broker: bool
    started_at: str
    parts: dict[str, PartState] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str) -> StackRecord:
        """Raises ValueError (or KeyError, TypeError) when ``text`` is not a record."""
        data: dict[str, Any] = json.loads(text)
        parts = {name: PartState(**state) for name, state in data.get("parts", {}).items()}
        return cls(
            pid=int(data["pid"]),
            url=str(data["url"]),
            bootstrap_servers=str(data["bootstrap_servers"]),
            embedded_broker=bool(data["embedded_broker"]),
            started_at=str(data["started_at"]),
            parts=parts,
        )


def record_path(var_dir: Path | None = None) -> Path:
    return (var_dir or settings.VAR_DIR) / RECORD_NAME


def connectable_url(host: str, port: int) -> str:
    """``http://host:port`` for a client: a wildcard listening address
    (``0.0.0.0``, ``::``, empty) becomes the loopback address."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def write_record(record: StackRecord, var_dir: Path | None = None) -> None:
    """Replace the record at once: written beside it, then renamed over it."""
    path = record_path(var_dir)
    draft = path.with_name(f".{RECORD_NAME}.{os.getpid()}")
    draft.write_text(json.dumps(asdict(record), indent=2) + "\n")
    os.replace(draft, path)


def remove_record(pid: int, var_dir: Path | None = None) -> None:
    """Remove the record if it is the one process ``pid`` wrote (a later
    stack's record is left alone)."""
    path = record_path(var_dir)
    try:
        if StackRecord.from_json(path.read_text()).pid == pid:
            path.unlink()
    except (OSError, ValueError, KeyError, TypeError):
        pass


def is_running_stack(pid: int) -> bool:
    """True while ``pid`` is a live ``runstack`` process. Where ``/proc`` can
    tell, a zombie or a process that reused the pid for something else is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's: /proc below tells what it is
    proc = Path("/proc") / str(pid)
    if not proc.is_dir():
        return True
    try:
        # The state follows the command name, which is in parentheses and may hold spaces.
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        command_line = (proc / "cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    return state != "Z" and b"runstack" in command_line


def running_stack(var_dir: Path | None = None) -> StackRecord | None:
    """The record of the stack running from ``var_dir`` (``VAR_DIR`` by
    default), or None if there is none, it cannot be read, or its supervisor
    is gone."""
    path = record_path(var_dir)
    try:
        record = StackRecord.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring %s, which is not a stack record: %s", path, exc)
        return None
    return record if is_running_stack(record.pid) else None


def nothing_running(instead: str) -> CommandError:
    """The one-line error of a command that found no running stack;
    ``instead`` says what else the user can give."""
    where = NOTHING_RUNNING.format(var_dir=settings.VAR_DIR, record=RECORD_NAME)
    return CommandError(f"{where}, or {instead}")


def use_running_broker() -> str:
    """The broker this process is to use: ``KAFKA_BOOTSTRAP_SERVERS`` if set,
    otherwise the running stack's, which is then set in the settings and the
    environment (for the processes this one starts). Raises CommandError
    when neither is there."""
    if settings.KAFKA_BOOTSTRAP_SERVERS:
        return str(settings.KAFKA_BOOTSTRAP_SERVERS)
    record = running_stack()
    if record is None:
        raise nothing_running("set KAFKA_BOOTSTRAP_SERVERS to a Kafka broker")
    settings.KAFKA_BOOTSTRAP_SERVERS = record.bootstrap_servers
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = record.bootstrap_servers
    return record.bootstrap_servers


def running_site_url() -> str:
    """Where the site is for a client on this machine: ``EVENTSITE_URL`` if
    set, else ``http://HOST:PORT`` if ``PORT`` is set, else the running
    stack's. Raises CommandError when none is there."""
    if url := os.getenv("EVENTSITE_URL", ""):
        return url
    if port := os.getenv("PORT", ""):
        try:
            return connectable_url(os.getenv("HOST", "127.0.0.1"), int(port))
        except ValueError:
            raise CommandError(f"PORT must be a port number, got {port!r}") from None
    record = running_stack()
    if record is None:
        raise nothing_running("give --url, EVENTSITE_URL or PORT")
    return record.url
