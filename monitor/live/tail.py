"""A command-line client of the event stream: ``python manage.py tail_events``.

It connects to /ws/events/ with a token, asks the server to filter, and
prints each event as one JSON line on stdout: ``{"topic", "partition",
"offset", "event"}``. Gap notices and connection news go to stderr, so
stdout stays a clean stream of events for a pipe.

It keeps, per partition, the last offset it printed (starting from the
welcome's positions, so that even the first connection can be resumed).
When the connection drops it reconnects with backoff and asks for exactly
what it has not printed (``since``); an event is never printed twice, and
anything the server can no longer replay is announced by a gap notice.
With ``--state FILE`` the positions are also kept across runs.

Refusals that another try would not fix (a bad token, a bad filter) end the
program with exit code 2; the others are retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from monitor.live.protocol import FINAL_CLOSE_CODES
from monitor.runtime.backoff import Backoff

BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 15.0


class Refused(Exception):
    """The server refused in a way that retrying would not change."""


@dataclass
class TailOptions:
    url: str  # the site (http[s]://...) or the stream (ws[s]://.../ws/events/)
    token: str
    types: list[str] = field(default_factory=list)
    actor: str | None = None
    subject: str | None = None
    text: str | None = None
    history: int = 0
    since: dict[str, int] | None = None
    state_file: Path | None = None
    count: int | None = None  # stop after printing this many events


def stream_url(url: str) -> str:
    """The /ws/events/ address for a site or stream ``url``."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"not an http(s) or ws(s) address: {url!r}")
    path = parts.path if parts.path.rstrip("/").endswith("/ws/events") else "/ws/events/"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def parse_positions(value: str) -> dict[str, int]:
    """``"0:17,orders/1:5"`` as ``{"0": 17, "orders/1": 5}`` (a partition of the
    events topic, or of another watched topic); raises ValueError."""
    positions: dict[str, int] = {}
    for pair in filter(None, (part.strip() for part in value.split(","))):
        partition, _, offset = pair.rpartition(":")
        int(partition.rpartition("/")[2])  # a partition's number, or ValueError
        positions[partition] = int(offset)
    return positions


class EventTail:
    def __init__(self, options: TailOptions, out: TextIO = sys.stdout, err: TextIO = sys.stderr):
        self.options = options
        self.out = out
        self.err = err
        self.positions: dict[str, int] | None = self._initial_positions()
        self.printed = 0
        self.events_topic = ""  # the welcome names it

    def _initial_positions(self) -> dict[str, int] | None:
        state = self.options.state_file
        if state is not None and state.exists():
            saved = json.loads(state.read_text())
            return {str(p): int(o) for p, o in saved["positions"].items()}
        return dict(self.options.since) if self.options.since is not None else None

    def query(self) -> str:
        """The connection's query string: the filter, and where to start."""
        params: dict[str, str] = {}
        if self.options.types:
            params["types"] = ",".join(self.options.types)
        for name in ("actor", "subject", "text"):
            value = getattr(self.options, name)
            if value:
                params[name] = value
        if self.positions is not None:
            params["since"] = ",".join(f"{p}:{o}" for p, o in sorted(self.positions.items()))
        elif self.options.history:
            params["history"] = str(self.options.history)
        return urlencode(params)

    def _seed(self, welcome_positions: dict[str, int]) -> None:
        """Start keeping positions from the welcome's (the first connection only)."""
        if self.positions is None:
            self.positions = {}
        for partition, offset in welcome_positions.items():
            self.positions.setdefault(partition, offset)
        self._save()

    async def run(self) -> int:
        """Print events until ``count`` is reached (0 returned) or a refusal (2)."""
        backoff = Backoff(BACKOFF_FIRST_SECONDS, BACKOFF_MAX_SECONDS, jitter=True)
        url = stream_url(self.options.url)
        headers = {"Authorization": f"Bearer {self.options.token}"}
        while True:
            try:
                target = f"{url}?{self.query()}" if self.query() else url
                async with connect(target, additional_headers=headers, max_size=None) as ws:
                    backoff.reset()
                    if await self._read(ws):
                        return 0
            except Refused as exc:
                self._note({"type": "refused", "reason": str(exc)})
                return 2
            except InvalidStatus as exc:
                if exc.response.status_code in (401, 403):
                    self._note({"type": "refused", "status": exc.response.status_code})
                    return 2
                self._note({"type": "disconnected", "reason": f"HTTP {exc.response.status_code}"})
            except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError) as exc:
                self._note({"type": "disconnected", "reason": str(exc) or type(exc).__name__})
            wait = backoff.next()
            self._note({"type": "reconnecting", "in_seconds": round(wait, 2)})
            await asyncio.sleep(wait)

    async def _read(self, ws: ClientConnection) -> bool:
        """Handle frames until the connection ends; True once ``count`` is reached."""
        try:
            async for raw in ws:
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "welcome":
                    welcome = frame["positions"]
                    self.events_topic = frame.get("topic", "")
                    # A history's events come after the welcome but before its
                    # positions: they are seeded from it once the history is in.
                    if self.positions is not None or not self.options.history:
                        self._seed(welcome)
                    self._note({"type": "connected", "user": frame.get("user")})
                elif kind == "events":
                    if self._print(frame["events"]):
                        return True
                elif kind == "live":
                    self._seed(welcome)
                    self._note(frame)
                elif kind in ("gap", "error"):
                    self._note(frame)
        except ConnectionClosed:
            pass  # the close code says what to do
        code = ws.close_code
        if code in FINAL_CLOSE_CODES:
            raise Refused(f"{code} {FINAL_CLOSE_CODES[code]} {ws.close_reason or ''}".strip())
        raise ConnectionError(f"closed with code {code} {ws.close_reason or ''}".strip())

    def _print(self, items: list[dict[str, Any]]) -> bool:
        if self.positions is None:
            self.positions = {}  # a history being replayed
        lines = []
        for item in items:
            partition, offset = self._key(item), item["offset"]
            if offset <= self.positions.get(partition, -1):
                continue  # printed before a reconnect already
            self.positions[partition] = offset
            lines.append(json.dumps(item, separators=(",", ":")))
            self.printed += 1
            if self.options.count is not None and self.printed >= self.options.count:
                break
        if lines:
            self.out.write("\n".join(lines) + "\n")
            self.out.flush()
            self._save()
        return self.options.count is not None and self.printed >= self.options.count

    def _key(self, item: dict[str, Any]) -> str:
        """The item's partition as positions are written (see ``since``)."""
        if item["topic"] == self.events_topic:
            return str(item["partition"])
        return f"{item['topic']}/{item['partition']}"

    def _save(self) -> None:
        state = self.options.state_file
        if state is None or self.positions is None:
            return
        # Written whole and renamed: a crash leaves the old state or the new one.
        partial = state.with_name(state.name + ".partial")
        partial.write_text(json.dumps({"positions": self.positions}))
        os.replace(partial, state)

    def _note(self, message: dict[str, Any]) -> None:
        self.err.write(json.dumps(message) + "\n")
        self.err.flush()


def tail(options: TailOptions) -> int:
    """Run the tail until done or interrupted; the process's exit code."""
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(EventTail(options).run())
    return 130
