"""SQLite: WAL mode, times as fixed-width UTC text, multi-row statements on the hot paths."""

from __future__ import annotations

import ctypes
import functools
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, cast

import peewee as pw

from qx_actors.errors import StorageError

from ._backend import CANDLE_COLUMNS, CANDLE_ON_CONFLICT, INSERT_TICK_SQL, Backend, Transaction
from ._models import SQLITE_FIELD_TYPES, from_utc_text, to_utc_text
from ._url import read_only_uri, sqlite_path

__all__ = [
    "SQLITE_BUSY_TIMEOUT_S",
    "SQLITE_RETURNING",
    "SQLITE_ROWS_PER_STATEMENT",
    "SQLITE_UPSERT_CANDLES_SQL",
    "SqliteBackend",
    "limit_malloc_arenas",
    "sqlite_upsert_candles_sql",
    "statement_chunks",
]

#: seconds SQLite waits for a lock before reporting the database busy (the default of
#: ``open_backend``/``open_storage``; tests pass a shorter one)
SQLITE_BUSY_TIMEOUT_S = 5.0

#: SQLite candle upsert, run with ``executemany``; a row is ``(epoch_seconds, open, high, low,
#: close, volume, created_at_text, updated_at_text, stable)``. SQLite formats the (whole-second)
#: epoch time itself: ~30 % faster than formatting the text in Python.
_SQLITE_CANDLE_ROW = (
    "(strftime('%Y-%m-%dT%H:%M:%S', ?, 'unixepoch') || '.000000Z', ?, ?, ?, ?, ?, ?, ?, FALSE, ?)"
)
SQLITE_UPSERT_CANDLES_SQL = (
    f"INSERT INTO ohlc_candles ({CANDLE_COLUMNS}) VALUES {_SQLITE_CANDLE_ROW} {CANDLE_ON_CONFLICT}"
)
#: Rows per multi-row statement: 9 parameters a candle row, 3 a tick row, under SQLite's
#: 32,766 variables (SQLite >= 3.32; older builds allow 999).
SQLITE_ROWS_PER_STATEMENT = 1000 if sqlite3.sqlite_version_info >= (3, 32, 0) else 100


@functools.cache
def sqlite_upsert_candles_sql(rows: int) -> str:
    """The candle upsert for ``rows`` rows in one statement (cached: one prepared statement).

    One statement per batch instead of ``executemany``: sqlite3 releases the GIL around every
    row it steps, and a busy thread elsewhere in the process then makes each row wait a whole
    switch interval; measured here with one CPU-bound thread beside it, ``executemany`` fell to
    ~200 rows/s while one multi-row statement kept ~60k rows/s (and ~520k rows/s against ~430k
    without contention).

    Parameters: ``?1`` the ``created_at``/``updated_at`` text (the same for every row: bound
    once), then ``(epoch_seconds, open, high, low, close, volume, stable)`` per row.
    """
    values = ", ".join(
        f"(strftime('%Y-%m-%dT%H:%M:%S', ?{b}, 'unixepoch') || '.000000Z', ?{b + 1}, "
        f"?{b + 2}, ?{b + 3}, ?{b + 4}, ?{b + 5}, ?1, ?1, FALSE, ?{b + 6})"
        for b in range(2, 7 * rows + 2, 7)
    )
    return f"INSERT INTO ohlc_candles ({CANDLE_COLUMNS}) VALUES {values} {CANDLE_ON_CONFLICT}"


def statement_chunks(count: int) -> Iterator[tuple[int, int]]:
    """``(first, rows)`` of the multi-row statements that write ``count`` rows: full statements
    of :data:`SQLITE_ROWS_PER_STATEMENT` rows, then the rest as powers of two, largest first.

    Every distinct row count is a prepared statement of its own in sqlite3's statement cache
    (128 a connection, up to ~70 KB each at 1000 rows): with any count allowed, the batches of a
    long run (ticks after each outage, the last page of each range) filled it, and the
    engine's memory grew by tens of MB over hours (measured: +55 MB after 1000 sizes, +3 MB
    with these). About a dozen statements a kind; a batch takes at most ~10.
    """
    first = 0
    while count - first >= SQLITE_ROWS_PER_STATEMENT:
        yield first, SQLITE_ROWS_PER_STATEMENT
        first += SQLITE_ROWS_PER_STATEMENT
    rest = count - first
    while rest:
        rows = 1 << (rest.bit_length() - 1)
        yield first, rows
        first += rows
        rest -= rows


#: ``RETURNING`` came with SQLite 3.35; older builds look the known times up first
SQLITE_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)


@functools.cache
def _sqlite_insert_ticks_sql(rows: int, returning: bool) -> str:
    """The tick insert of ``rows`` rows: ``?1`` is ``created_at`` (the same for every row of a
    batch: bound once), then time and price of each row."""
    values = ", ".join(f"(?{2 * i + 2}, ?{2 * i + 3}, ?1)" for i in range(rows))
    return INSERT_TICK_SQL.format(values=values) + (" RETURNING time" if returning else "")


def _glibc_function(name: str, *argtypes: Any) -> Callable[..., int] | None:
    """A function of glibc (``None`` elsewhere: another C library or OS)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = getattr(ctypes.CDLL(None), name)  # the process's own C library
    except (OSError, AttributeError):  # musl and others have neither
        return None
    function.argtypes = list(argtypes)
    function.restype = ctypes.c_int
    return cast("Callable[..., int]", function)


#: Hands the C heap's free pages back to the OS (see :meth:`SqliteBackend.close`).
_MALLOC_TRIM = _glibc_function("malloc_trim", ctypes.c_size_t)
_MALLOPT = _glibc_function("mallopt", ctypes.c_int, ctypes.c_int)
_M_ARENA_MAX = -8  # glibc's malloc.h
#: Whether closing a connection trims the C heap (off once arenas are shared: see
#: :func:`limit_malloc_arenas`).
_trim_on_close = _MALLOC_TRIM is not None


def limit_malloc_arenas(count: int = 1) -> bool:
    """Share ``count`` malloc arenas among all threads of this process (glibc; call it before
    any thread starts: ``qx-actors`` does, first thing). Returns whether it took effect.

    For a process that runs an engine for days. glibc gives threads up to 8 arenas a core, and
    a DB writer restarted after a database fault is a new thread: its page cache (up to 16 MiB)
    may fill an arena of its own while the old writer's freed cache stays resident in another.
    Closing a connection then trims the heap (:meth:`SqliteBackend.close`), and the memory goes
    up and down by a page cache at every restart. With one arena for all threads the next
    writer reuses the freed cache in place, and closing no longer trims: the memory stays flat.
    Measured (accelerated soak, a database fault every 3 minutes at 1000 ticks/s): one arena
    held the engine at 87.8 MB; two still grew by about 1 MB at some restarts (a cache split
    between the arenas). One arena is no point of contention here: the engine's threads take
    most of their memory from Python's own allocator, under the GIL.
    """
    global _trim_on_close
    if _MALLOPT is None or _MALLOPT(_M_ARENA_MAX, count) != 1:
        return False
    _trim_on_close = False
    return True


class SqliteBackend(Backend):
    """SQLite in WAL mode; times as fixed-width UTC text."""

    name = "sqlite"
    param = "?"

    def __init__(self, url: str, *, read_only: bool, busy_timeout_s: float) -> None:
        self.url = url
        self.read_only = read_only
        self.path = sqlite_path(url)
        self.memory = self.path == ":memory:"
        #: whether opening the writer creates the file (a new, empty database)
        self.creates_file = False
        #: no stored tick is later than this time text (None: no tick; unknown until the
        #: first tick write asks)
        self._ticks_until: str | None = None
        if not self.memory and not read_only and not os.path.exists(self.path):
            # A new database only where its directory exists: a mistyped path must not
            # silently grow directories and a fresh database to backfill into.
            parent = os.path.dirname(os.path.abspath(self.path))
            if not os.path.isdir(parent):
                raise StorageError(
                    f"no directory {parent} for the SQLite database {self.path} "
                    "(create it first, or check the path)"
                )
            self.creates_file = True
        pragmas: list[tuple[str, Any]] = [
            ("busy_timeout", int(busy_timeout_s * 1000)),
            ("synchronous", "NORMAL"),
            # 16 MiB of page cache: the writer appends in time order, so a larger cache buys
            # little and costs resident memory (the engine targets <= 150 MB).
            ("cache_size", -16_384),
            ("temp_store", "MEMORY"),
            ("foreign_keys", 0),
        ]
        database = self.path
        connect: dict[str, Any] = {}
        if read_only and not self.memory:
            # SQLite's read-only mode: never writes the file (a reader of a file it may only
            # read must not try to switch it to WAL; the WAL mode is the file's own). Without
            # a -wal file and no way to create one (a read-only directory or filesystem), no
            # writer can be at work on the file either: it is read as immutable.
            immutable = not os.path.exists(self.path + "-wal") and not os.access(
                os.path.dirname(os.path.abspath(self.path)), os.W_OK
            )
            database = read_only_uri(self.path, immutable=immutable)
            connect = {"uri": True}
        elif not self.memory:
            pragmas.insert(0, ("journal_mode", "wal"))
        if read_only:
            pragmas.append(("query_only", 1))
        self.db = pw.SqliteDatabase(
            database,
            pragmas=pragmas,
            timeout=busy_timeout_s,
            field_types=SQLITE_FIELD_TYPES,
            # the writer takes the write lock at BEGIN: no deadlock upgrading a read lock
            lock_type="IMMEDIATE",
            # one shared connection for :memory: (each connection would be a new database)
            thread_safe=not self.memory,
            check_same_thread=False,
            **connect,
        )

    def close(self) -> None:
        """Close this thread's connection, and hand the memory its page cache held back to the
        OS (glibc): the cache (up to 16 MiB) lives in the malloc arena of the thread that used
        the connection. A DB writer restarted after a database fault is a new thread, which
        glibc may give an arena of its own, and the freed pages of the old one stay resident:
        a 2-hour soak grew by about a page cache after a database fault. Trimming costs a few
        milliseconds, once per connection; not done where :func:`limit_malloc_arenas` made the
        threads share arenas (the freed cache is reused in place)."""
        was_open = not self.db.is_closed()
        super().close()
        if was_open and _trim_on_close and _MALLOC_TRIM is not None:
            _MALLOC_TRIM(0)

    def time_param(self, value: datetime) -> Any:
        """A UTC time as fixed-width text."""
        return to_utc_text(value)

    def time_value(self, value: Any) -> datetime:
        """Parse the fixed-width text."""
        return from_utc_text(value)

    def write_txn(self) -> AbstractContextManager[Any]:
        """``BEGIN IMMEDIATE``."""
        return Transaction(self.db, lock_type="IMMEDIATE")

    def read_txn(self) -> AbstractContextManager[Any]:
        """``BEGIN DEFERRED``: the WAL snapshot is taken at the first read."""
        return Transaction(self.db, lock_type="DEFERRED")

    def upsert_candle_rows(self, rows: Sequence[tuple[Any, ...]], created_at: datetime) -> None:
        """Multi-row statements of :func:`sqlite_upsert_candles_sql` (whole-minute times)."""
        now = to_utc_text(created_at)
        cursor = self.cursor()
        for first, size in statement_chunks(len(rows)):
            params: list[Any] = [now]
            for t, o, h, lo, c, v, s in rows[first : first + size]:
                params += (t.timestamp(), o, h, lo, c, v, s)  # ~40 % faster than a comprehension
            cursor.execute(sqlite_upsert_candles_sql(size), params)

    def insert_tick_rows(
        self, rows: Sequence[tuple[datetime, float]], created_at: datetime
    ) -> list[Any]:
        """Multi-row ``INSERT ... ON CONFLICT DO NOTHING``; the times inserted (as text).

        The usual batch comes after every stored tick (this writer knows the latest stored
        time: the one writer of the database): it is inserted without reading anything back.
        Fetching ``RETURNING`` rows steps SQLite once per row and sqlite3 releases the GIL
        around every step (and every statement): with a busy thread elsewhere in the process
        (the stream's decoder) each may wait a whole switch interval to get it back (a
        1000-tick batch took tens of ms instead of one). A batch reaching back among the
        stored ticks is inserted with ``RETURNING time`` (SQLite < 3.35: after a look-up of
        the known times).
        """
        cursor = self.cursor()
        inserted: list[Any] = []
        created = to_utc_text(created_at)
        if self._ticks_until is None:
            self._ticks_until = cursor.execute("SELECT MAX(time) FROM price_ticks").fetchone()[0]
        for first, size in statement_chunks(len(rows)):
            chunk = rows[first : first + size]
            texts = [to_utc_text(t) for t, _ in chunk]
            params: list[Any] = [created]
            params += [v for text, (_, p) in zip(texts, chunk, strict=True) for v in (text, p)]
            latest = self._ticks_until
            if latest is None or min(texts) > latest:
                cursor.execute(_sqlite_insert_ticks_sql(len(chunk), False), params)
                if cursor.rowcount == len(chunk):
                    inserted += texts
                else:  # ticks written meanwhile by someone without the writer lock
                    inserted += self._created_in(cursor, texts, created)
            elif SQLITE_RETURNING:
                cursor.execute(_sqlite_insert_ticks_sql(len(chunk), True), params)
                inserted += [row[0] for row in cursor.fetchall()]
            else:
                cursor.execute(
                    "SELECT time FROM price_ticks WHERE time >= ? AND time <= ?",
                    (min(texts), max(texts)),
                )
                known = {row[0] for row in cursor.fetchall()}
                cursor.execute(_sqlite_insert_ticks_sql(len(chunk), False), params)
                inserted += [t for t in texts if t not in known]
            # an upper bound of the stored times, also if this transaction is rolled back
            self._ticks_until = max(texts) if latest is None else max(latest, max(texts))
        return inserted

    @staticmethod
    def _created_in(cursor: Any, texts: list[str], created: str) -> list[str]:
        """Which of ``texts`` are stored with ``created_at`` = ``created`` (the rows this
        statement inserted, unless another one used the same creation time)."""
        cursor.execute(
            "SELECT time FROM price_ticks WHERE time >= ? AND time <= ? AND created_at = ?",
            (min(texts), max(texts), created),
        )
        stored = {row[0] for row in cursor.fetchall()}
        return [t for t in texts if t in stored]
