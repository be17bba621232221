"""Making a batch durable: step 3 of every worker's loop (see :mod:`monitor.workers.base`).

:meth:`DurableWriter.write` runs the worker's ``consume_batch`` and lists the
batch's dead letters in one database transaction, on one thread that keeps
its connection between batches. While the database is unavailable (down,
locked, connection lost) it retries with backoff; a record the database
refuses for good is found, dead-lettered and left out, so that it cannot
stall its partition. It keeps the batches read until they are committed
(:class:`~monitor.workers.held.HeldRecords`), for what listing dead letters
needs of them: the records' headers, and which letter a re-driven record
re-drives (a group's part of that letter is marked stored, or counts one
more attempt, with the batch). Nothing here commits offsets: the caller does, once
:meth:`DurableWriter.write` returned True.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Protocol

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction

from monitor.runtime.backoff import Backoff
from monitor.runtime.database_thread import DatabaseThread
from monitor.workers.deadletters import record_dead_letters, settle_redriven
from monitor.workers.held import HeldRecords, Listing
from monitor.workers.records import DeadRecord, RecordedFrom

logger = logging.getLogger(__name__)

# Errors that say "the database is unavailable now" (down, locked, connection
# lost), as opposed to "the database refuses this data".
TRANSIENT_DB_ERRORS = (OperationalError, InterfaceError)

FIRST_RETRY_SECONDS = 0.1


class BatchOwner(Protocol):
    """What the writer needs of the worker it writes for."""

    group_id: str
    stopping: bool

    def consume_batch(self, records: list[RecordedFrom]) -> None: ...

    async def dead_letter(self, dead: list[DeadRecord]) -> None: ...

    async def wait_unless_stopped(self, seconds: float) -> None: ...


class DurableWriter:
    """Writes one worker's batches; :meth:`close` when the worker lets go."""

    def __init__(self, owner: BatchOwner) -> None:
        self.owner = owner
        # One thread keeps one connection between batches (DATABASE_CONN_MAX_AGE):
        # opening one per batch cost as much as writing the batch.
        self.database = DatabaseThread(f"{owner.group_id}-db")
        self.held = HeldRecords()

    async def write(self, valid: list[RecordedFrom], dead: list[DeadRecord]) -> bool:
        """Write the batch, retrying with backoff while the database is unavailable.

        A record the database refuses for good (bad data, not a lost
        connection or a lock) is dead-lettered instead. Returns False only if
        a stop was requested while the database was unavailable.
        """
        group = self.owner.group_id
        most = max(FIRST_RETRY_SECONDS, settings.WORKER_DB_RETRY_MAX_SECONDS)
        backoff = Backoff(FIRST_RETRY_SECONDS, most)
        attempt = 0
        while True:
            attempt += 1
            try:
                listing = self.held.about(valid, dead)
                await self.database.run(self._in_one_transaction, valid, dead, listing)
                if attempt > 1:
                    logger.info("%s: database back after %d attempts", group, attempt)
                return True
            except TRANSIENT_DB_ERRORS as exc:
                if self.owner.stopping:
                    return False
                delay = backoff.next()
                logger.warning(
                    "%s: database write failed (attempt %d), retrying in %.1fs: %s",
                    group,
                    attempt,
                    delay,
                    exc,
                )
            except Exception as exc:  # noqa: BLE001 - refused for good: find the culprits
                logger.warning("%s: batch refused (%s); writing records one by one", group, exc)
                valid, dead = await self._isolate_refused(valid, dead)
                continue
            await self.owner.wait_unless_stopped(delay)

    async def close(self) -> None:
        """Close the database thread's connection, then the thread. Never raises
        for a lost connection."""
        self.held.clear()
        await self.database.close()

    async def _isolate_refused(
        self, valid: list[RecordedFrom], dead: list[DeadRecord]
    ) -> tuple[list[RecordedFrom], list[DeadRecord]]:
        """Try each record alone; those refused for good become dead letters.

        Returns the batch to write again: the accepted records (idempotent,
        so writing them twice is harmless) and the dead letters, old and new.
        A transient error here propagates to :meth:`write`'s retry.
        """
        accepted: list[RecordedFrom] = []
        refused: list[DeadRecord] = []
        listing = self.held.about(valid, [])
        for record in valid:
            try:
                await self.database.run(self._in_one_transaction, [record], [], listing)
                accepted.append(record)
            except TRANSIENT_DB_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - this record is the culprit
                reason = f"could not be stored: {type(exc).__name__}: {exc}"[:1000]
                refused.append(DeadRecord.from_event(record, reason))
        if refused:
            await self.owner.dead_letter(refused)
        return accepted, [*dead, *refused]

    def _in_one_transaction(
        self, valid: list[RecordedFrom], dead: list[DeadRecord], listing: Listing
    ) -> None:
        """The records and the dead letters, together or not at all (on the
        database thread). Re-driven records the group has stored are left out."""
        group = self.owner.group_id
        try:
            with transaction.atomic():
                valid = settle_redriven(group, valid, listing.letters)
                if valid:
                    self.owner.consume_batch(valid)
                if dead:
                    record_dead_letters(group, dead, listing)
        except BaseException:
            # Whatever failed, the next attempt starts on a fresh connection
            # (a lost one would fail again).
            with contextlib.suppress(DatabaseError):
                connection.close()
            raise
