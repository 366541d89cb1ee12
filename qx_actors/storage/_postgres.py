"""PostgreSQL through psycopg2: session time zone UTC, candles by COPY into a staging table."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

import peewee as pw
import psycopg2.extras

from qx_actors.errors import DatabaseUnavailable, StorageError

from ._backend import CANDLE_COLUMNS, CANDLE_ON_CONFLICT, INSERT_TICK_SQL, Backend, Transaction
from ._models import POSTGRES_FIELD_TYPES, as_utc
from ._url import describe_url

__all__ = [
    "POSTGRES_CREATE_STAGE_SQL",
    "POSTGRES_STAGE_TABLE",
    "POSTGRES_UPSERT_CANDLES_SQL",
    "PostgresBackend",
]

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
    f"%s, %s, FALSE, stable FROM {POSTGRES_STAGE_TABLE} {CANDLE_ON_CONFLICT}"
)


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
        #: statements deferred inside batched(), sent first with the next one
        self._pending: list[tuple[str, tuple[Any, ...]]] = []
        self._batching = False

    def cursor(self) -> Any:
        """A cursor, once the deferred statements are sent (they come first)."""
        cursor = self.db.cursor()  # type: ignore[no-untyped-call]
        if self._pending:
            self._send_pending(cursor, "", ())
        return cursor

    def execute(self, text: str, params: Sequence[Any] = ()) -> Any:
        """Run raw SQL (``?`` placeholders) after the deferred statements, in one round trip
        with them (the cursor holds this statement's result: it comes last)."""
        cursor = self.db.cursor()  # type: ignore[no-untyped-call]
        self._send_pending(cursor, self.sql(text), tuple(params))
        return cursor

    def defer(self, text: str, params: Sequence[Any] = ()) -> None:
        """Inside :meth:`batched`: keep the statement for the next round trip."""
        self.defer_driver_sql(self.sql(text), tuple(params))

    def defer_driver_sql(self, sql: str, params: Sequence[Any]) -> None:
        """:meth:`defer` of SQL in the driver's placeholder style (``%s``)."""
        if self._batching:
            self._pending.append((sql, tuple(params)))
        else:
            self.db.cursor().execute(sql, tuple(params))  # type: ignore[no-untyped-call]

    @contextmanager
    def batched(self) -> Iterator[None]:
        """Deferred statements wait for the next statement or the end of the block; an error
        drops those not sent (the transaction is rolled back anyway)."""
        self._batching = True
        try:
            yield
            if self._pending:
                self._send_pending(self.db.cursor(), "", ())  # type: ignore[no-untyped-call]
        finally:
            self._batching = False
            self._pending = []

    def _send_pending(self, cursor: Any, sql: str, params: tuple[Any, ...]) -> None:
        pending, self._pending = self._pending, []
        statements = [text for text, _ in pending]
        values = [value for _, row in pending for value in row]
        if sql:
            statements.append(sql)
            values += params
        cursor.execute(";\n".join(statements), values)

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
        return Transaction(self.db)

    def read_txn(self) -> AbstractContextManager[Any]:
        """``BEGIN ISOLATION LEVEL REPEATABLE READ``: one snapshot for all queries."""
        return Transaction(self.db, isolation_level="REPEATABLE READ")

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
        self.defer_driver_sql(POSTGRES_UPSERT_CANDLES_SQL, (created_at, created_at))

    def insert_tick_rows(
        self, rows: Sequence[tuple[datetime, float]], created_at: datetime
    ) -> list[Any]:
        """One multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING time``; the times
        inserted."""
        cursor = self.cursor()
        inserted = psycopg2.extras.execute_values(
            cursor,
            INSERT_TICK_SQL.format(values="%s") + " RETURNING time",
            [(t, p, created_at) for t, p in rows],
            page_size=max(len(rows), 1),
            fetch=True,
        )
        return [row[0] for row in inserted]

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
