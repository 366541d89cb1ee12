"""The single-writer lock: one engine writes a database at a time.

* PostgreSQL: a session-level advisory lock held by the writer's own session, the one that
  writes: the lock exists exactly as long as the writing session (a server restart or a
  terminated session ends both, and the writer never reconnects on its own). The server
  releases it when that session ends, including when the process dies. The holder is
  recorded in ``qx_writer`` so that a refused engine can name it.
* SQLite: ``fcntl.flock`` on a lock file beside the database (``<db>.lock``), holding the
  holder's description; the kernel releases it when the file is closed or the process dies.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import os
import socket
from datetime import UTC, datetime

import psycopg2

from qx_actors.errors import DatabaseInUseError, DatabaseUnavailable, StorageError

from ._backend import guard
from ._postgres import PostgresBackend
from ._url import describe_url

#: advisory lock key of the writer lock (any fixed 64-bit number; "qx_write")
WRITER_LOCK_KEY = 0x71785F7772697465


def writer_holder(run_id: str) -> str:
    """A holder description naming the run, the process and the host."""
    return f"run {run_id} (pid {os.getpid()} on {socket.gethostname()})"


class WriterLock(abc.ABC):
    """A held writer lock; ``release()`` frees it (idempotent)."""

    def __init__(self, holder: str) -> None:
        self.holder = holder

    @abc.abstractmethod
    def release(self) -> None:
        """Free the lock."""


class NullWriterLock(WriterLock):
    """The lock of a private in-memory database: nobody else can open it."""

    def release(self) -> None:
        """Nothing to free."""


class FileWriterLock(WriterLock):
    """``flock`` on ``<db>.lock``."""

    def __init__(self, db_path: str, holder: str) -> None:
        super().__init__(holder)
        self.path = db_path + ".lock"
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # read-only or full filesystem, permissions: may pass
            raise DatabaseUnavailable(f"writer lock file {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                current = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            finally:
                os.close(fd)
            raise DatabaseInUseError(
                f"database {db_path} is in use by another writer: "
                f"{current or 'unknown holder'} (lock file {self.path})"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{holder}\n".encode(), 0)
        except OSError:
            # A full disk: the flock is what guards, the text only names us to a refused
            # engine. The writes themselves will report the full disk (recoverably).
            pass
        self._fd: int | None = fd

    def release(self) -> None:
        """Empty the file and unlock it (the file stays: deleting it would race a new locker)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass  # closing frees the lock all the same
        finally:
            os.close(fd)


class AdvisoryWriterLock(WriterLock):
    """``pg_try_advisory_lock`` on the writer's session (the backend's one connection)."""

    def __init__(self, backend: PostgresBackend, holder: str, *, timeout_s: float = 0.0) -> None:
        super().__init__(holder)
        if backend.read_only:
            raise StorageError("the writer lock needs a writer backend")
        if backend.db.in_transaction():
            # the lock and the holder row must not depend on a transaction's outcome
            raise StorageError("the writer lock can't be taken inside a transaction")
        self._backend = backend
        url = describe_url(backend.url)
        with guard(backend, f"writer lock on {url}"):
            # peewee runs the session in autocommit: each statement here stands alone
            cur = backend.cursor()
            if timeout_s > 0:
                cur.execute("SET lock_timeout = %s", (f"{int(timeout_s * 1000)}ms",))
                try:
                    cur.execute("SELECT pg_advisory_lock(%s)", (WRITER_LOCK_KEY,))
                    got = True
                except psycopg2.errors.LockNotAvailable:
                    got = False
                finally:
                    cur.execute("RESET lock_timeout")
            else:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (WRITER_LOCK_KEY,))
                row = cur.fetchone()
                got = bool(row and row[0])
            if not got:
                cur.execute("SELECT holder FROM qx_writer WHERE id = 1")
                found = cur.fetchone()
                current = found[0] if found else "unknown holder"
                raise DatabaseInUseError(f"database {url} is in use by another writer: {current}")
            try:
                cur.execute(
                    "INSERT INTO qx_writer (id, holder, acquired_at) VALUES (1, %s, %s) "
                    "ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, "
                    "acquired_at = excluded.acquired_at",
                    (holder, datetime.now(UTC)),
                )
            except BaseException:
                self._unlock()
                raise
        self._held = True

    def _unlock(self) -> None:
        backend = self._backend
        if backend.lost is not None or backend.db.is_closed():
            return  # the session is gone, and the lock with it
        with contextlib.suppress(psycopg2.Error, StorageError):  # a dead session holds no lock
            backend.cursor().execute("SELECT pg_advisory_unlock(%s)", (WRITER_LOCK_KEY,))

    def release(self) -> None:
        """Unlock on the writer's session (which stays open for the storage's own close)."""
        if not self._held:
            return
        self._held = False
        self._unlock()
