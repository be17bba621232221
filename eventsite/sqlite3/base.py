"""Django's SQLite backend, with writers taking turns instead of polling.

SQLite allows one writer at a time. A connection that finds the database
locked does not queue: its busy handler sleeps and polls, in steps growing
to 100 ms, while newcomers may take the lock first. With a pool of web
threads posting at once, some requests starved for over a second.

Here a write transaction first takes its turn: a lock shared by the
process's threads, then an exclusive ``flock`` on a file beside the
database shared by every process (web processes and workers), polled every
millisecond. ``BEGIN IMMEDIATE`` follows, and the turn is given back when
the transaction commits, rolls back or its connection closes. A writer
waits no longer than SQLite's own busy timeout; past that it goes ahead
and SQLite decides, as it always has. Single statements outside a
transaction do not take a turn.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time

from django.db.backends.sqlite3 import base, creation

POLL_SECONDS = 0.001


class WriterTurn:
    """Turns to write one database file, across threads and processes."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._threads = threading.Lock()
        self._fd: int | None = None

    def _file(self) -> int | None:
        if self.path is None:
            return None
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._fd

    def acquire(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the turn: True once held (give it
        back with ``release``), False if the wait ran out (nothing is held)."""
        deadline = time.monotonic() + timeout
        if not self._threads.acquire(timeout=max(timeout, 0)):
            return False
        fd = self._file()
        while fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self._threads.release()
                    return False
                time.sleep(POLL_SECONDS)
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()


_turns: dict[str, WriterTurn] = {}
_turns_lock = threading.Lock()


def turn_for(database: str) -> WriterTurn:
    """The WriterTurn of a database file (in-memory databases: threads only)."""
    with _turns_lock:
        turn = _turns.get(database)
        if turn is None:
            in_memory = database == ":memory:" or "mode=memory" in database
            turn = _turns[database] = WriterTurn(None if in_memory else f"{database}-writers")
        return turn


class DatabaseCreation(creation.DatabaseCreation):
    """Django's, also removing the test database's turn file when it is destroyed."""

    def _destroy_test_db(self, test_database_name: str, verbosity: int) -> None:
        super()._destroy_test_db(test_database_name, verbosity)  # type: ignore[misc]  # private, not in django-stubs
        if not self.is_in_memory_db(test_database_name):
            try:
                os.remove(f"{test_database_name}-writers")
            except FileNotFoundError:
                pass


class DatabaseWrapper(base.DatabaseWrapper):
    """Django's SQLite connection, taking a writer's turn for each transaction
    and giving it back when the transaction ends or the connection closes."""

    creation_class = DatabaseCreation
    _turn: WriterTurn | None = None

    def _start_transaction_under_autocommit(self) -> None:
        turn = turn_for(str(self.settings_dict["NAME"]))
        if turn.acquire(timeout=self.settings_dict["OPTIONS"].get("timeout", 5)):
            self._turn = turn
        try:
            super()._start_transaction_under_autocommit()  # type: ignore[misc]  # private, not in django-stubs
        except BaseException:
            self._end_turn()
            raise

    def _end_turn(self) -> None:
        turn, self._turn = self._turn, None
        if turn is not None:
            turn.release()

    def _commit(self) -> None:
        try:
            super()._commit()  # type: ignore[misc]  # private, not in django-stubs
        finally:
            self._end_turn()

    def _rollback(self) -> None:
        try:
            super()._rollback()  # type: ignore[misc]  # private, not in django-stubs
        finally:
            self._end_turn()

    def _close(self) -> None:
        try:
            super()._close()  # type: ignore[misc]  # private, not in django-stubs
        finally:
            self._end_turn()
