"""The single-writer lock: one engine writes a database at a time.

* PostgreSQL: a session-level advisory lock held by a dedicated connection for the whole run;
  the server releases it when that connection closes, including when the process dies. The
  holder is recorded in ``qx_writer`` so that a refused engine can name it.
* SQLite: ``fcntl.flock`` on a lock file beside the database (``<db>.lock``), holding the
  holder's description; the kernel releases it when the file is closed or the process dies.
"""

from __future__ import annotations

import abc
import fcntl
import os
import socket
from datetime import UTC, datetime

import psycopg2

from qx_actors.errors import DatabaseInUseError

from ._backend import describe_url, map_error

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
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
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
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{holder}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        """Empty the file and unlock it (the file stays: deleting it would race a new locker)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)


class AdvisoryWriterLock(WriterLock):
    """``pg_try_advisory_lock`` on a dedicated connection."""

    def __init__(self, url: str, holder: str, *, timeout_s: float = 0.0) -> None:
        super().__init__(holder)
        what = f"writer lock on {describe_url(url)}"
        try:
            conn = psycopg2.connect(
                url, options="-c TimeZone=UTC", application_name="qx_actors-writer-lock"
            )
        except psycopg2.Error as exc:
            raise map_error(exc, what) from exc
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                if timeout_s > 0:
                    cur.execute("SET lock_timeout = %s", (f"{int(timeout_s * 1000)}ms",))
                    try:
                        cur.execute("SELECT pg_advisory_lock(%s)", (WRITER_LOCK_KEY,))
                        got = True
                    except psycopg2.errors.LockNotAvailable:
                        got = False
                    cur.execute("RESET lock_timeout")
                else:
                    cur.execute("SELECT pg_try_advisory_lock(%s)", (WRITER_LOCK_KEY,))
                    row = cur.fetchone()
                    got = bool(row and row[0])
                if not got:
                    cur.execute("SELECT holder FROM qx_writer WHERE id = 1")
                    found = cur.fetchone()
                    current = found[0] if found else "unknown holder"
                    raise DatabaseInUseError(
                        f"database {describe_url(url)} is in use by another writer: {current}"
                    )
                cur.execute(
                    "INSERT INTO qx_writer (id, holder, acquired_at) VALUES (1, %s, %s) "
                    "ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, "
                    "acquired_at = excluded.acquired_at",
                    (holder, datetime.now(UTC)),
                )
        except psycopg2.Error as exc:
            conn.close()
            raise map_error(exc, what) from exc
        except BaseException:
            conn.close()
            raise
        self._conn: psycopg2.extensions.connection | None = conn

    def release(self) -> None:
        """Unlock and close the dedicated connection."""
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (WRITER_LOCK_KEY,))
        except psycopg2.Error:
            pass  # closing the connection releases it anyway
        finally:
            conn.close()
