"""Opening a database by URL, and what differs between SQLite and PostgreSQL.

Everything backend-specific lives here: URL parsing, connection settings, the raw SQL of the hot
paths, how times and booleans travel, how driver errors map into the error tree.
"""

from __future__ import annotations

import abc
import functools
import io
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote

import peewee as pw
import psycopg2
import psycopg2.extras

from qx_actors.errors import DatabaseBusyError, DatabaseUnavailable, StorageError
from qx_actors.redact import redact_text, redact_url, register_url_secret

from ._models import (
    POSTGRES_FIELD_TYPES,
    SQLITE_FIELD_TYPES,
    as_utc,
    from_utc_text,
    to_utc_text,
)

#: seconds SQLite waits for a lock before reporting the database busy (the default of
#: ``open_backend``/``open_storage``; tests pass a shorter one)
SQLITE_BUSY_TIMEOUT_S = 5.0

CANDLE_COLUMNS = "time, open, high, low, close, volume, created_at, updated_at, gap, stable"
_CANDLE_ON_CONFLICT = (
    "ON CONFLICT (time) DO UPDATE SET open = excluded.open, high = excluded.high, "
    "low = excluded.low, close = excluded.close, volume = excluded.volume, "
    "updated_at = excluded.updated_at, gap = FALSE, stable = excluded.stable"
)
#: SQLite candle upsert, run with ``executemany``; a row is ``(epoch_seconds, open, high, low,
#: close, volume, created_at_text, updated_at_text, stable)``. SQLite formats the (whole-second)
#: epoch time itself: ~30 % faster than formatting the text in Python.
_SQLITE_CANDLE_ROW = (
    "(strftime('%Y-%m-%dT%H:%M:%S', ?, 'unixepoch') || '.000000Z', ?, ?, ?, ?, ?, ?, ?, FALSE, ?)"
)
SQLITE_UPSERT_CANDLES_SQL = (
    f"INSERT INTO ohlc_candles ({CANDLE_COLUMNS}) VALUES {_SQLITE_CANDLE_ROW} {_CANDLE_ON_CONFLICT}"
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
    """
    values = ", ".join([_SQLITE_CANDLE_ROW] * rows)
    return f"INSERT INTO ohlc_candles ({CANDLE_COLUMNS}) VALUES {values} {_CANDLE_ON_CONFLICT}"


@functools.cache
def _sqlite_insert_ticks_sql(rows: int) -> str:
    return _INSERT_TICK_SQL.format(values=", ".join(["(?, ?, ?)"] * rows))


#: PostgreSQL: the staging table that a batch is COPYed into (text format, tab separated)
POSTGRES_STAGE_TABLE = "qx_candles_stage"
POSTGRES_CREATE_STAGE_SQL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {POSTGRES_STAGE_TABLE} (time TIMESTAMPTZ, "
    "open DOUBLE PRECISION, high DOUBLE PRECISION, low DOUBLE PRECISION, "
    "close DOUBLE PRECISION, volume DOUBLE PRECISION, stable BOOLEAN) ON COMMIT DELETE ROWS"
)
#: PostgreSQL: staged batch -> ``ohlc_candles``; parameters ``(created_at, updated_at)``
POSTGRES_UPSERT_CANDLES_SQL = (
    f"INSERT INTO ohlc_candles ({CANDLE_COLUMNS}) SELECT time, open, high, low, close, volume, "
    f"%s, %s, FALSE, stable FROM {POSTGRES_STAGE_TABLE} {_CANDLE_ON_CONFLICT}"
)

_INSERT_TICK_SQL = (
    "INSERT INTO price_ticks (time, last_price, created_at) VALUES {values} "
    "ON CONFLICT (time) DO NOTHING"
)
_INSERT_SETTLEMENT_SQL = (
    "INSERT INTO funding_settlements (id, time, fixing_price, funding_rate, created_at) "
    "VALUES ({p}, {p}, {p}, {p}, {p}) ON CONFLICT DO NOTHING"
)


def _read_only_uri(path: str, *, immutable: bool = False) -> str:
    """The ``file:`` URI opening ``path`` read-only (``immutable``: no locking at all)."""
    uri = f"file:{quote(os.path.abspath(path))}?mode=ro"
    return uri + "&immutable=1" if immutable else uri


def _sqlite_path(url: str) -> str:
    rest = url[len("sqlite:///") :]
    if not rest:
        raise StorageError(f"no path in database URL {url!r}")
    return rest if rest == ":memory:" else unquote(rest)


def describe_url(url: str) -> str:
    """The URL without its password (for messages): one implementation, :func:`redact_url`."""
    return redact_url(url)


DRIVER_ERRORS: tuple[type[Exception], ...] = (pw.PeeweeException, sqlite3.Error, psycopg2.Error)

#: SQLite primary result codes (``sqlite_errorcode & 0xFF``)
_SQLITE_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED
#: SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN
_SQLITE_UNAVAILABLE_CODES = frozenset({8, 10, 13, 14})
_SQLITE_UNAVAILABLE_TEXTS = (
    "database or disk is full",
    "attempt to write a readonly database",
    "disk i/o error",
    "unable to open database file",
)
#: SQLSTATE classes of a server that can't serve us now: connection exception, insufficient
#: resources (disk full, out of memory, too many connections), operator intervention
#: (terminated by an administrator, shutting down, starting up)
_PG_UNAVAILABLE_CLASSES = ("08", "53", "57")


def driver_cause(exc: BaseException) -> BaseException | None:
    """The deepest sqlite3/psycopg2 error behind ``exc``, or None.

    peewee re-raises a driver error as its own (the driver's error in ``args[0]``, and as
    ``__context__`` since it raises inside the driver's ``except``); inside a transaction a
    failed commit is followed by a failed rollback, so the real cause can sit several levels
    down. Walks ``args[0]``, ``__cause__`` and ``__context__``, each error once.
    """
    best: BaseException | None = None
    best_depth = -1
    seen: set[int] = set()
    stack: list[tuple[BaseException, int]] = [(exc, 0)]
    while stack:
        node, depth = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, sqlite3.Error | psycopg2.Error) and depth > best_depth:
            best, best_depth = node, depth
        links: list[BaseException] = []
        if node.args and isinstance(node.args[0], BaseException):
            links.append(node.args[0])
        if node.__cause__ is not None:
            links.append(node.__cause__)
        if node.__context__ is not None:
            links.append(node.__context__)
        stack.extend((link, depth + 1) for link in reversed(links))
    return best


def _error_type(cause: BaseException | None) -> type[StorageError]:
    if isinstance(cause, sqlite3.Error):
        code = getattr(cause, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        text = str(cause).lower()
        if primary in _SQLITE_BUSY_CODES or "locked" in text or "busy" in text:
            return DatabaseBusyError
        if primary in _SQLITE_UNAVAILABLE_CODES or any(
            known in text for known in _SQLITE_UNAVAILABLE_TEXTS
        ):
            return DatabaseUnavailable
        return StorageError
    if isinstance(cause, psycopg2.Error):
        # OperationalError covers refused/lost connections, failed authentication, a server
        # starting up or shutting down, DiskFull; InterfaceError a connection already closed
        if isinstance(cause, psycopg2.OperationalError | psycopg2.InterfaceError):
            return DatabaseUnavailable
        if (cause.pgcode or "")[:2] in _PG_UNAVAILABLE_CLASSES:
            return DatabaseUnavailable
    # constraint violations, bad SQL or data, schema trouble: retrying can't help
    return StorageError


def _redact(text: str, url: str | None) -> str:
    if url is not None:
        register_url_secret(url)  # every form of the password (encoded, decoded, escaped)
    return redact_text(text)


def map_error(exc: BaseException, what: str, url: str | None = None) -> StorageError:
    """The error-tree equivalent of a driver (or peewee) error raised while doing ``what``.

    The message is ``"<what>: <driver's message>"`` on one line; ``url`` (the database's)
    lets a password the driver may have echoed be replaced by ``***``.
    """
    cause = driver_cause(exc)
    detail = " ".join(str(cause if cause is not None else exc).split())
    message = _redact(f"{what}: {detail}" if detail else what, url)
    return _error_type(cause)(message)


class _Transaction:
    """One transaction (a savepoint when nested) whose error is never replaced by its rollback's.

    When the body or the COMMIT fails, the database may already have rolled back by itself
    (SQLite does on a full disk) or the connection may be gone; the ROLLBACK then fails too,
    and peewee's ``atomic`` would raise that error ("cannot rollback - no transaction is
    active") instead of the real one. Here a failing rollback is swallowed and the original
    error propagates (``guard`` maps it). Either way nothing of the batch is committed.
    """

    def __init__(self, db: pw.Database, **begin: Any) -> None:
        self._db = db
        self._begin = begin
        self._savepoint: Any = None

    def __enter__(self) -> None:
        db = self._db
        if db.transaction_depth() > 0:  # type: ignore[no-untyped-call]
            savepoint = db.savepoint()  # type: ignore[no-untyped-call]
            savepoint.__enter__()
            self._savepoint = savepoint
            return
        db.begin(**self._begin)
        # peewee's own bookkeeping, so that nested atomic() blocks become savepoints and
        # close() refuses to run inside the transaction
        db.push_transaction(db.transaction(**self._begin))  # type: ignore[no-untyped-call]

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if self._savepoint is None:
            self._db.pop_transaction()  # type: ignore[no-untyped-call]
        if exc_type is None:
            try:
                if self._savepoint is None:
                    self._db.commit()  # type: ignore[no-untyped-call]
                else:
                    self._savepoint.commit(begin=False)
            except BaseException:
                self._rollback()
                raise
            return
        self._rollback()

    def _rollback(self) -> None:
        if self._db.is_closed():
            return
        with suppress(*DRIVER_ERRORS):
            if self._savepoint is None:
                self._db.rollback()  # type: ignore[no-untyped-call]
            else:
                self._savepoint.rollback(begin=False)


class _WriterPostgresqlDatabase(pw.PostgresqlDatabase):  # type: ignore[misc]
    """A PostgreSQL database that connects once.

    The writer's session holds the writer lock (a session advisory lock): a session that
    peewee would open on the next use after a lost one would write without holding it. Every
    connect after the first raises ``DatabaseUnavailable`` with ``refusal`` instead.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.refusal: str | None = None
        super().__init__(*args, **kwargs)

    def _connect(self) -> Any:
        if self.refusal is not None:
            raise DatabaseUnavailable(self.refusal)
        conn = super()._connect()  # type: ignore[misc]
        self.refusal = "the writer's database session is closed"
        return conn


class Backend(abc.ABC):
    """One open peewee database and the backend-specific ways of talking to it."""

    name: str
    url: str
    db: pw.Database
    #: the parameter placeholder of the driver
    param: str
    #: False for the writer (``open_storage``), True for the read API
    read_only: bool
    #: why this writer's connection can't be used any more (it was lost), else None
    lost: str | None = None

    @abc.abstractmethod
    def time_param(self, value: datetime) -> Any:
        """A UTC time as a driver parameter."""
        ...

    @abc.abstractmethod
    def time_value(self, value: Any) -> datetime:
        """A time column value as an aware UTC datetime."""
        ...

    @abc.abstractmethod
    def write_txn(self) -> AbstractContextManager[Any]:
        """A write transaction (one per batch)."""
        ...

    @abc.abstractmethod
    def read_txn(self) -> AbstractContextManager[Any]:
        """A read transaction that sees one consistent snapshot."""
        ...

    @abc.abstractmethod
    def upsert_candle_rows(self, rows: Sequence[tuple[Any, ...]], created_at: datetime) -> None:
        """Upsert ``(time, open, high, low, close, volume, stable)`` rows (time as a datetime)."""
        ...

    @abc.abstractmethod
    def insert_tick_rows(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """Insert ``(time, last_price, created_at)`` rows, ignoring known times; count inserted."""
        ...

    def insert_settlement_rows(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """Insert settlement rows, ignoring known ids/times; count inserted."""
        cursor = self.cursor()
        sql = _INSERT_SETTLEMENT_SQL.format(p=self.param)
        inserted = 0
        for row in rows:
            cursor.execute(sql, row)
            inserted += max(cursor.rowcount, 0)
        return inserted

    def cursor(self) -> Any:
        """A DB-API cursor on this thread's connection (connecting if needed)."""
        return self.db.cursor()  # type: ignore[no-untyped-call]

    def sql(self, text: str) -> str:
        """``text`` written with ``?`` placeholders, in this driver's placeholder style."""
        return text if self.param == "?" else text.replace("?", self.param)

    def execute(self, text: str, params: Sequence[Any] = ()) -> Any:
        """Run raw SQL (``?`` placeholders) and return the cursor."""
        cursor = self.cursor()
        cursor.execute(self.sql(text), tuple(params))
        return cursor

    def check_usable(self) -> None:
        """Raise ``DatabaseUnavailable`` if this writer's connection was lost."""
        if self.lost is not None:
            raise DatabaseUnavailable(self.lost)

    def recover(self, error: StorageError) -> None:  # noqa: B027 - SQLite has nothing to drop
        """After ``error``: drop a dead connection (a reader reconnects on next use; a writer
        never does, see ``lost``)."""

    def close(self) -> None:
        """Close this thread's connection."""
        if not self.db.is_closed():
            self.db.close()


class SqliteBackend(Backend):
    """SQLite in WAL mode; times as fixed-width UTC text."""

    name = "sqlite"
    param = "?"

    def __init__(self, url: str, *, read_only: bool, busy_timeout_s: float) -> None:
        self.url = url
        self.read_only = read_only
        self.path = _sqlite_path(url)
        self.memory = self.path == ":memory:"
        if not self.memory and not read_only:
            parent = os.path.dirname(os.path.abspath(self.path))
            try:
                os.makedirs(parent, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"can't create directory for {self.path}: {exc}") from exc
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
            database = _read_only_uri(self.path, immutable=immutable)
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

    def time_param(self, value: datetime) -> Any:
        """A UTC time as fixed-width text."""
        return to_utc_text(value)

    def time_value(self, value: Any) -> datetime:
        """Parse the fixed-width text."""
        return from_utc_text(value)

    def write_txn(self) -> AbstractContextManager[Any]:
        """``BEGIN IMMEDIATE``."""
        return _Transaction(self.db, lock_type="IMMEDIATE")

    def read_txn(self) -> AbstractContextManager[Any]:
        """``BEGIN DEFERRED``: the WAL snapshot is taken at the first read."""
        return _Transaction(self.db, lock_type="DEFERRED")

    def upsert_candle_rows(self, rows: Sequence[tuple[Any, ...]], created_at: datetime) -> None:
        """Multi-row statements of :func:`sqlite_upsert_candles_sql` (whole-minute times)."""
        now = to_utc_text(created_at)
        cursor = self.cursor()
        step = SQLITE_ROWS_PER_STATEMENT
        for first in range(0, len(rows), step):
            chunk = rows[first : first + step]
            params = [
                value
                for t, o, h, lo, c, v, s in chunk
                for value in (t.timestamp(), o, h, lo, c, v, now, now, s)
            ]
            cursor.execute(sqlite_upsert_candles_sql(len(chunk)), params)

    def insert_tick_rows(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """Multi-row ``INSERT ... ON CONFLICT DO NOTHING``; counts the rows inserted."""
        cursor = self.cursor()
        inserted = 0
        step = SQLITE_ROWS_PER_STATEMENT
        for first in range(0, len(rows), step):
            chunk = rows[first : first + step]
            params = [value for t, p, c in chunk for value in (to_utc_text(t), p, to_utc_text(c))]
            cursor.execute(_sqlite_insert_ticks_sql(len(chunk)), params)
            inserted += max(int(cursor.rowcount), 0)
        return inserted


class PostgresBackend(Backend):
    """PostgreSQL through psycopg2; session time zone UTC; candles via COPY + upsert."""

    name = "postgresql"
    param = "%s"

    def __init__(self, url: str, *, read_only: bool) -> None:
        self.url = url
        self.read_only = read_only
        settings: dict[str, Any] = {
            "field_types": POSTGRES_FIELD_TYPES,
            # a reader's every transaction is READ ONLY: it can't write, even by mistake
            "options": "-c TimeZone=UTC"
            + (" -c default_transaction_read_only=on" if read_only else ""),
            "application_name": "qx_actors-reader" if read_only else "qx_actors",
            "connect_timeout": 10,
            # a peer that vanished without closing (host down, network cut) is noticed in
            # about a minute instead of the kernel's two hours
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        }
        if read_only:
            self.db = pw.PostgresqlDatabase(url, **settings)
        else:
            # One session for every thread: the session that holds the writer lock is the one
            # that writes (peewee would otherwise open one connection per thread).
            self.db = _WriterPostgresqlDatabase(url, thread_safe=False, **settings)
        self._staged: object | None = None

    def server_version(self) -> int:
        """The server's version number (e.g. 150004 for 15.4), once per connection."""
        conn = self.db.connection()  # type: ignore[no-untyped-call]
        return int(conn.server_version)

    def time_param(self, value: datetime) -> Any:
        """Aware datetimes travel as ``timestamptz``."""
        return value

    def time_value(self, value: Any) -> datetime:
        """psycopg2 returns aware datetimes in the session zone (UTC)."""
        return as_utc(value)

    def write_txn(self) -> AbstractContextManager[Any]:
        """``BEGIN`` (read committed)."""
        return _Transaction(self.db)

    def read_txn(self) -> AbstractContextManager[Any]:
        """``BEGIN ISOLATION LEVEL REPEATABLE READ``: one snapshot for all queries."""
        return _Transaction(self.db, isolation_level="REPEATABLE READ")

    def upsert_candle_rows(self, rows: Sequence[tuple[Any, ...]], created_at: datetime) -> None:
        """COPY into a temporary staging table, then one ``INSERT ... ON CONFLICT``."""
        conn = self.db.connection()  # type: ignore[no-untyped-call]
        cursor = conn.cursor()
        if self._staged is not conn:
            cursor.execute(POSTGRES_CREATE_STAGE_SQL)
            self._staged = conn
        buffer = io.StringIO(
            "".join(
                [
                    f"{t.isoformat()}\t{o!r}\t{h!r}\t{lo!r}\t{c!r}\t{v!r}\t{'t' if s else 'f'}\n"
                    for t, o, h, lo, c, v, s in rows
                ]
            )
        )
        cursor.copy_from(buffer, POSTGRES_STAGE_TABLE)
        cursor.execute(POSTGRES_UPSERT_CANDLES_SQL, (created_at, created_at))

    def insert_tick_rows(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """One multi-row ``INSERT ... RETURNING`` (exact count of new rows)."""
        cursor = self.cursor()
        inserted = psycopg2.extras.execute_values(
            cursor,
            _INSERT_TICK_SQL.format(values="%s") + " RETURNING 1",
            list(rows),
            page_size=max(len(rows), 1),
            fetch=True,
        )
        return len(inserted)

    def recover(self, error: StorageError) -> None:
        """Forget a connection the server closed.

        A reader reconnects on next use. The writer does not: its writer lock died with the
        session, so every later use raises ``DatabaseUnavailable`` (naming ``error``) until
        a new storage is opened and takes the lock again.
        """
        if self.db.is_closed():
            return
        dead = bool(self.db.connection().closed)  # type: ignore[no-untyped-call]
        if self.read_only:
            if dead or not self.db.is_connection_usable():
                self.db.dispose()
                self._staged = None
            return
        if dead:
            self.lost = (
                f"the writer's session on {describe_url(self.url)} was lost ({error}); "
                "the writer lock went with it: open the database again"
            )
            self.db.refusal = self.lost  # type: ignore[attr-defined]
            self.db.dispose()
            self._staged = None

    def close(self) -> None:
        """Close this thread's connection."""
        self._staged = None
        super().close()


def open_backend(
    url: str, *, read_only: bool = False, busy_timeout_s: float | None = None
) -> Backend:
    """The backend for ``url`` (``sqlite:///path`` or ``postgresql://...``); connects once.

    ``busy_timeout_s`` (SQLite): how long a statement waits for another connection's lock
    before ``DatabaseBusyError`` (default ``SQLITE_BUSY_TIMEOUT_S``). A writer
    (``read_only=False``) on PostgreSQL never reconnects: once its session is lost every use
    raises ``DatabaseUnavailable``.
    """
    register_url_secret(url)  # any message that quotes it is scrubbed from now on
    backend: Backend
    if url.startswith("sqlite:///"):
        backend = SqliteBackend(
            url,
            read_only=read_only,
            busy_timeout_s=SQLITE_BUSY_TIMEOUT_S if busy_timeout_s is None else busy_timeout_s,
        )
    elif url.startswith(("postgresql://", "postgres://")):
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://") :]
        backend = PostgresBackend(url, read_only=read_only)
    else:
        raise StorageError(
            f"unsupported database URL {describe_url(url)!r}: "
            "expected sqlite:///path.db or postgresql://user:pass@host:port/db"
        )
    try:
        with guard(backend, f"open {describe_url(url)}"):
            backend.db.connect()
    except BaseException:
        # e.g. a pragma failed after the file was opened: don't leave the connection behind
        with suppress(Exception):
            backend.db.close()
        raise
    return backend


@contextmanager
def guard(backend: Backend | None, what: str) -> Iterator[None]:
    """Map driver errors raised inside into the error tree (``raise ... from exc``)."""
    try:
        yield
    except DRIVER_ERRORS as exc:
        error = map_error(exc, what, None if backend is None else backend.url)
        if backend is not None:
            with suppress(*DRIVER_ERRORS):
                backend.recover(error)
        raise error from exc
