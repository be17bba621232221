"""The keeper of a web process's live reader: started on demand, never stalled in silence.

The hub (:mod:`monitor.live.hub`) asks its :class:`ReaderKeeper` for a
positioned reader whenever a client connects, and stops it once the last
client has gone. The reader checks itself against the broker's end offsets
(:mod:`monitor.live.reader_watch`) and calls the keeper when it is in
trouble; the keeper then acts on the hub's clients (its *audience*):

- **the broker does not answer** (or the reader stopped on an error): every
  client, and every one being replayed to, is closed with
  :data:`~monitor.live.protocol.CLOSE_UNAVAILABLE` (it reconnects and
  resumes from its positions, by a replay), and the next
  client to connect gets a new reader, or is refused while none can be
  positioned;
- **stalled or too far behind while the broker answers**: the reader is
  replaced by one that starts at the ends the broker reported. Once the old
  one has stopped and every event it handed over has been offered, each
  client gets a ``gap`` notice with the exact number of records it will not
  get (all records: unread ones cannot be filtered) and the reason
  (``stalled`` or ``behind``), unless it misses none; then the events after
  the skip. A replay that
  hands its client over below the skip before the new reader is positioned
  is told the same way, by :meth:`ReaderKeeper.owed`. Never a silent jump.

:meth:`ReaderKeeper.health` is what ``/healthz`` and the dashboard show of
the process that serves them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from aiokafka import TopicPartition
from django.conf import settings

from monitor.live.client import LiveClient
from monitor.live.line import LiveLine
from monitor.live.protocol import CLOSE_UNAVAILABLE, gap_frame
from monitor.live.reader import LiveReader, Publish
from monitor.live.reader_watch import ReaderHealth, Trouble

logger = logging.getLogger(__name__)

# How long a skip waits for the old reader to stop, and for the frames before it to go out.
SKIP_STEP_SECONDS = 5.0


@runtime_checkable
class ClosableClient(Protocol):
    """A client that can be closed with a code (both kinds in monitor.live.delivery)."""

    def close_with(self, code: int, reason: str) -> None:
        """Send what is queued, then close with ``code``; idempotent."""
        ...


class Audience(Protocol):
    """The clients a reader's events go to (the hub), and those being replayed to
    on their way there."""

    clients: set[LiveClient]
    replaying: set[LiveClient]

    def detach(self, client: LiveClient) -> None: ...

    async def drained(self) -> None:
        """Return once every event published so far has been offered to the clients."""
        ...


@dataclass(frozen=True)
class Skip:
    """A reader replaced by one at the broker's ends: when, why, how many records."""

    at: float  # seconds since the epoch
    reason: str
    skipped: int

    def as_json(self) -> dict[str, Any]:
        return {"at": self.at, "reason": self.reason, "skipped": self.skipped}


class ReaderKeeper:
    """Starts, watches, replaces and stops the process's live reader."""

    def __init__(self, line: LiveLine, publish: Publish, audience: Audience) -> None:
        self.line = line
        self.publish = publish
        self.audience = audience
        self.reader: LiveReader | None = None
        self.last_skip: Skip | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._recovering_from: ReaderHealth | None = None
        # Where the latest skip started the new reader, until it is positioned.
        self._skipped_to: dict[TopicPartition, int] = {}
        # The reader the latest skip started: not ok until checked against the broker.
        self._skip_reader: LiveReader | None = None

    async def ensure(self, timeout: float) -> None:
        """Start a reader if none runs (or the one running cannot reach the broker);
        return once it is positioned, or raise ConnectionError."""
        if self._recovery is not None:
            await asyncio.shield(self._recovery)
        reader = self.reader
        if reader is None or reader.failed or reader.health().trouble is Trouble.SILENT:
            if reader is not None:
                reader.stop()  # its consumer may be wedged: a new one starts afresh
            reader = self.reader = self._start(None)
        await reader.wait_ready(timeout)

    def stop(self) -> None:
        if self.reader is not None:
            self.reader.stop()
            self.reader = None

    def owed(self, floor: dict[TopicPartition, int]) -> int:
        """Records a client handed over at ``floor`` misses to the skip under way."""
        return skipped_for(floor, floor, self._skipped_to)

    @property
    def skip_reason(self) -> str:
        return self.last_skip.reason if self.last_skip is not None else Trouble.STALLED.value

    def health(self) -> dict[str, Any]:
        """The reader as /healthz and the dashboard show it: ``ok``, ``running``,
        ``behind`` (records; None: unknown), ``seconds_behind``,
        ``seconds_since_advance``, ``reason``, and the latest ``skip``. Not ok
        during a skip, until the new reader has been checked against the broker."""
        reader = self.reader
        if reader is None:
            report = ReaderHealth(None, 0.0, 0.0).as_json()
        else:
            report = reader.health().as_json()
            settled = reader.ready.is_set() and reader.watch.checked
            if report["ok"] and reader is self._skip_reader and not settled:
                reason = f"recovering after a skip ({self.skip_reason})"
                report.update(ok=False, trouble=self.skip_reason, reason=reason)
        if self._recovering_from is not None:
            report.update(self._recovering_from.as_json())
        report["running"] = reader is not None
        report["skip"] = None if self.last_skip is None else self.last_skip.as_json()
        return report

    def _start(self, start_at: dict[TopicPartition, int] | None) -> LiveReader:
        reader = LiveReader(self.line, self.publish, on_trouble=self._in_trouble, start_at=start_at)
        reader.start()
        return reader

    def _in_trouble(
        self, reader: LiveReader, health: ReaderHealth, ends: dict[TopicPartition, int] | None
    ) -> None:
        """Called by the reader at each check that finds it in trouble."""
        if reader is not self.reader or self._recovery is not None:
            return
        if ends is None or health.trouble is Trouble.SILENT:
            self._close_all(f"live stream stalled: {health.reason}")
            return
        logger.warning("%s: starting a new reader at the broker's ends", health.reason)
        self._recovering_from = health
        self._recovery = asyncio.create_task(self._skip_ahead(reader, health, ends))

    def _close_all(self, reason: str) -> None:
        """Close every client, those being replayed to as well (their replays wait
        on the same broker)."""
        clients = [*self.audience.clients, *self.audience.replaying]
        if clients:
            logger.warning("%s: closing %d live clients", reason, len(clients))
        for client in clients:
            if isinstance(client, ClosableClient):
                client.close_with(CLOSE_UNAVAILABLE, reason)
            self.audience.detach(client)

    async def _skip_ahead(
        self, reader: LiveReader, health: ReaderHealth, ends: dict[TopicPartition, int]
    ) -> None:
        """Replace ``reader`` by one at ``ends``; tell every client what it skips."""
        try:
            for step in (reader.stopped, self.audience.drained):
                try:
                    await asyncio.wait_for(step(), SKIP_STEP_SECONDS)
                except TimeoutError:
                    logger.warning("live reader skip: a step took over %ss", SKIP_STEP_SECONDS)
            before = self.line.ends()
            # Never back: the broker may report an end below what was read.
            start_at = {p: max(end, before.get(p, end)) for p, end in ends.items()}
            reason = (health.trouble or Trouble.STALLED).value
            for client in list(self.audience.clients):
                client.announce_missed()
                floor = before if client.floor is None else client.floor
                missed = skipped_for(before, floor, start_at)
                if missed:  # none when the new reader starts where the old one stood
                    client.send_now(gap_frame(missed, reason))
            skipped = skipped_for(before, before, start_at)
            logger.warning("live reader skipped %d records: %s", skipped, health.reason)
            self.last_skip = Skip(at=time.time(), reason=reason, skipped=skipped)
            self._skipped_to = start_at
            if self.reader is reader:
                new = self.reader = self._skip_reader = self._start(start_at)
                try:
                    await new.wait_ready(settings.LIVE_READER_MAX_BEHIND_SECONDS)
                except ConnectionError:
                    pass  # its health says so; the next client to connect replaces it
        except Exception:
            # Nothing a client waits on may fail with it: the next check tries again.
            logger.exception("live reader skip failed")
        finally:
            self._skipped_to = {}
            self._recovery = None
            self._recovering_from = None


def skipped_for(
    line: dict[TopicPartition, int],
    floor: dict[TopicPartition, int],
    start_at: dict[TopicPartition, int],
) -> int:
    """Records a client at ``line`` (owed nothing below ``floor``) does not get when
    the reader starts again at ``start_at``, per partition (partitions missing from
    ``line`` or ``floor`` count none)."""
    return sum(
        max(start - max(line.get(p, start), floor.get(p, start)), 0)
        for p, start in start_at.items()
    )
