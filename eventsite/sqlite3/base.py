"""Django's SQLite backend, with the threads of one process taking turns to write.

SQLite allows one writer at a time. A connection that finds the database
locked does not queue: its busy handler sleeps and polls, in steps growing
to 100 ms, while newcomers may take the lock first. With a pool of web
threads posting at once, some requests starved for over a second. Here a
process-wide lock orders the write transactions of the process's threads
(``BEGIN IMMEDIATE`` is taken only after it), so a waiting thread is woken
the moment the previous transaction ends. Other processes (the workers) are
still kept apart by SQLite's own lock and busy timeout.
"""

from __future__ import annotations

import threading

from django.db.backends.sqlite3 import base

_writer = threading.Lock()


class DatabaseWrapper(base.DatabaseWrapper):
    _holds_writer = False

    def _start_transaction_under_autocommit(self) -> None:
        # Waits no longer than SQLite itself would; past that, SQLite decides
        # (and, if the database is still locked, raises as it always has).
        timeout = self.settings_dict["OPTIONS"].get("timeout", 5)
        self._holds_writer = _writer.acquire(timeout=timeout)
        try:
            super()._start_transaction_under_autocommit()  # type: ignore[misc]
        except BaseException:
            self._release_writer()
            raise

    def _release_writer(self) -> None:
        if self._holds_writer:
            self._holds_writer = False
            _writer.release()

    def _commit(self) -> None:
        try:
            super()._commit()  # type: ignore[misc]
        finally:
            self._release_writer()

    def _rollback(self) -> None:
        try:
            super()._rollback()  # type: ignore[misc]
        finally:
            self._release_writer()

    def _close(self) -> None:
        try:
            super()._close()  # type: ignore[misc]
        finally:
            self._release_writer()
