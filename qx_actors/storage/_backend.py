"""What every backend offers the storage: transactions, the hot-path writes, raw SQL.

The two backends have their own rooms (``_sqlite.py``, ``_postgres.py``); ``_open.py`` picks one
by URL; ``_errors.py`` maps driver errors; ``_url.py`` reads URLs.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from datetime import datetime
from typing import Any, Self

import peewee as pw

from qx_actors.errors import DatabaseUnavailable, StorageError

from ._errors import DRIVER_ERRORS, map_error

__all__ = [
    "CANDLE_COLUMNS",
    "CANDLE_ON_CONFLICT",
    "INSERT_TICK_SQL",
    "Backend",
    "Closing",
    "Transaction",
    "guard",
]

CANDLE_COLUMNS = "time, open, high, low, close, volume, created_at, updated_at, gap, stable"
CANDLE_ON_CONFLICT = (
    "ON CONFLICT (time) DO UPDATE SET open = excluded.open, high = excluded.high, "
    "low = excluded.low, close = excluded.close, volume = excluded.volume, "
    "updated_at = excluded.updated_at, gap = FALSE, stable = excluded.stable"
)
INSERT_TICK_SQL = (
    "INSERT INTO price_ticks (time, last_price, created_at) VALUES {values} "
    "ON CONFLICT (time) DO NOTHING"
)
_INSERT_SETTLEMENT_SQL = (
    "INSERT INTO funding_settlements (id, time, fixing_price, funding_rate, created_at) "
    "VALUES ({p}, {p}, {p}, {p}, {p}) ON CONFLICT DO NOTHING"
)


class Closing(abc.ABC):
    """A database opened through a backend (``Database``, ``Storage``): the end of a ``with``
    block closes it."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the database (each handle its own way)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Transaction:
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
    def insert_tick_rows(
        self, rows: Sequence[tuple[datetime, float]], created_at: datetime
    ) -> list[Any]:
        """Insert ``(time, last_price)`` rows (distinct times) created at ``created_at``,
        ignoring known times; the times inserted, as column values (``INSERT ... ON CONFLICT
        DO NOTHING RETURNING time``: no look-up of the known times first)."""
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

    def defer(self, text: str, params: Sequence[Any] = ()) -> None:
        """Run raw SQL (``?`` placeholders) whose result nobody reads: at once here; inside
        :meth:`batched` a backend may send it later, in order, with the next statement."""
        self.execute(text, params)

    def batched(self) -> AbstractContextManager[None]:
        """A block in which deferred statements (:meth:`defer`) may travel together
        (PostgreSQL: with the next statement, or at the end of the block: fewer round trips).
        Use it inside a transaction."""
        return nullcontext()

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
