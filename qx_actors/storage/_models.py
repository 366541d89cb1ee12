"""Peewee models of the tables (the database representation) and the UTC time column.

Times are stored exactly, as UTC:

* PostgreSQL: ``TIMESTAMPTZ`` (microsecond precision); the session time zone is UTC.
* SQLite: fixed-width text ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (27 characters, e.g.
  ``2026-01-01T00:00:00.000000Z``): sorts like the time, is readable in plain SQL and is
  understood by SQLite's date functions (``unixepoch(time)``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import peewee as pw

from qx_actors.domain.timeutil import require_utc
from qx_actors.domain.values import RESOLUTIONS

#: the column type name that each backend maps to its own UTC time type
UTC_DATETIME = "UTC_DATETIME"
SQLITE_FIELD_TYPES = {UTC_DATETIME: "TEXT"}
POSTGRES_FIELD_TYPES = {UTC_DATETIME: "TIMESTAMPTZ"}


def to_utc_text(value: datetime) -> str:
    """The SQLite text form of a time: ``2026-01-01T00:00:00.000000Z``."""
    if value.tzinfo is not UTC:
        value = require_utc(value)
    return value.isoformat(timespec="microseconds")[:-6] + "Z"


def from_utc_text(text: str) -> datetime:
    """Parse the SQLite text form back into an aware UTC datetime."""
    return datetime.fromisoformat(text)


def as_utc(value: datetime) -> datetime:
    """An aware datetime as ``tzinfo=UTC`` (drivers may hand back an equal other UTC object)."""
    return value if value.tzinfo is UTC else value.astimezone(UTC)


class UtcDateTimeField(pw.Field):
    """An aware UTC datetime: ``TIMESTAMPTZ`` on PostgreSQL, fixed-width text on SQLite."""

    field_type = UTC_DATETIME

    def _is_sqlite(self) -> bool:
        return isinstance(self.model._meta.database, pw.SqliteDatabase)

    def db_value(self, value: Any) -> Any:
        """Python -> column value."""
        if value is None or not isinstance(value, datetime):
            return value
        if self._is_sqlite():
            return to_utc_text(value)
        return require_utc(value)

    def python_value(self, value: Any) -> Any:
        """Column value -> aware UTC datetime."""
        if isinstance(value, str):
            return from_utc_text(value)
        if isinstance(value, datetime):
            return as_utc(value)
        return value


class _Base(pw.Model):
    class Meta:
        legacy_table_names = False


class _Ohlc(_Base):
    """The columns every candle table starts with: the bucket start and its OHLCV (no table
    of its own)."""

    time = UtcDateTimeField(primary_key=True)
    open = pw.DoubleField()
    high = pw.DoubleField()
    low = pw.DoubleField()
    close = pw.DoubleField()
    volume = pw.DoubleField()


class OhlcCandle(_Ohlc):
    """``ohlc_candles``: one row per stored 1-minute candle."""

    created_at = UtcDateTimeField()
    updated_at = UtcDateTimeField()
    #: the first candle after a detected hole
    gap = pw.BooleanField(default=False)
    #: false while the exchange may still revise the candle (younger than 1 h, or near a hole)
    stable = pw.BooleanField(default=False)

    class Meta:
        table_name = "ohlc_candles"
        without_rowid = True


class PriceTickRow(_Base):
    """``price_ticks``: one row per stored last-price tick."""

    time = UtcDateTimeField(primary_key=True)
    last_price = pw.DoubleField()
    created_at = UtcDateTimeField()

    class Meta:
        table_name = "price_ticks"
        without_rowid = True


class FundingSettlementRow(_Base):
    """``funding_settlements``: one row per funding settlement."""

    id = pw.UUIDField(primary_key=True)
    time = UtcDateTimeField(unique=True)
    fixing_price = pw.DoubleField()
    funding_rate = pw.DoubleField()
    created_at = UtcDateTimeField()

    class Meta:
        table_name = "funding_settlements"


class OhlcVerifiedEmpty(_Base):
    """``ohlc_verified_empty``: inclusive minute ranges the exchange confirmed have no candles."""

    first_minute = UtcDateTimeField(primary_key=True)
    last_minute = UtcDateTimeField()
    verified_at = UtcDateTimeField()

    class Meta:
        table_name = "ohlc_verified_empty"


class OhlcCoverage(_Base):
    """``ohlc_coverage``: the maximal runs of consecutive stored candle minutes (inclusive).

    Maintained by the writer in the same transaction as the candles (schema version 2): the
    runs are disjoint, never adjacent, and together hold exactly the minutes of
    ``ohlc_candles``. The holes between them are what is missing, anywhere in the history.
    """

    first_minute = UtcDateTimeField(primary_key=True)
    last_minute = UtcDateTimeField()

    class Meta:
        table_name = "ohlc_coverage"


class OhlcRollup(_Ohlc):
    """A rollup table ``ohlc_rollup_<resolution>`` (schema version 3): one row per bucket.

    Kept by the writer in the same transaction as the 1-minute candles it is built from:
    ``time`` is the bucket start (epoch-aligned), ``open`` the first stored minute's open,
    ``high``/``low`` the extremes, ``close`` the last stored minute's close, ``volume`` the sum,
    ``minutes`` how many stored minutes it holds, ``stable`` whether every one of them is
    stable (whether the bucket has ended is decided when reading), ``gap`` whether one of them
    is the first after a hole. Buckets without a stored minute have no row.
    """

    minutes = pw.IntegerField()
    stable = pw.BooleanField()
    gap = pw.BooleanField()

    class Meta:
        without_rowid = True


def bucket_seconds(resolution: str) -> int:
    """The bucket length of a resolution (``"1h"``: 3600), as the tables store buckets."""
    return RESOLUTIONS[resolution] // timedelta(seconds=1)


#: resolution of each rollup table -> the rollup it is built from (None: ``ohlc_candles``).
#: Each is built from the coarsest finer level that divides it, so one minute written costs a
#: few rows per level, never a re-read of a day of minutes. 10m, 45m, 2h and 3h have no table:
#: the reader consolidates them from a rollup that divides them.
_ROLLUP_SOURCES: dict[str, str | None] = {
    "3m": None,
    "5m": None,
    "15m": "5m",
    "30m": "15m",
    "1h": "30m",
    "4h": "1h",
    "1d": "4h",
}
#: the rollups: (resolution name, bucket seconds, source rollup or None for ``ohlc_candles``);
#: since schema version 5 only :data:`KEPT_ROLLUP_LEVELS` are tables, the others views
ROLLUP_LEVELS: tuple[tuple[str, int, str | None], ...] = tuple(
    (name, bucket_seconds(name), source) for name, source in _ROLLUP_SOURCES.items()
)


def rollup_table(name: str) -> str:
    """The table of the rollup ``name`` (e.g. ``ohlc_rollup_1h``)."""
    return f"ohlc_rollup_{name}"


def _rollup_model(name: str) -> type[OhlcRollup]:
    meta = type("Meta", (), {"table_name": rollup_table(name), "without_rowid": True})
    model_name = f"OhlcRollup{name.upper()}"
    return type(model_name, (OhlcRollup,), {"Meta": meta, "__module__": __name__})


#: the rollups the writer keeps as tables (schema version 5), each built from the coarsest kept
#: one that divides it (None: ``ohlc_candles``): (resolution name, bucket seconds, source). The
#: finer ones (3m ... 30m) were nine tenths of the rollup rows written per minute; they are
#: views now (:data:`VIEW_ROLLUPS`), consolidated from the minutes when read.
KEPT_ROLLUP_LEVELS: tuple[tuple[str, int, str | None], ...] = tuple(
    (name, bucket_seconds(name), source)
    for name, source in {"1h": None, "4h": "1h", "1d": "4h"}.items()
)
#: the rollups of ``ROLLUP_LEVELS`` that are views over ``ohlc_candles`` (schema version 5):
#: always exactly the minutes' buckets, computed by the query that reads them
VIEW_ROLLUPS: tuple[str, ...] = tuple(
    name for name, _, _ in ROLLUP_LEVELS if name not in {n for n, _, _ in KEPT_ROLLUP_LEVELS}
)

#: one model per rollup table (the kept rollups), in ``KEPT_ROLLUP_LEVELS`` order
ROLLUP_MODELS: tuple[type[OhlcRollup], ...] = tuple(
    _rollup_model(name) for name, _, _ in KEPT_ROLLUP_LEVELS
)


class OhlcDayToken(_Base):
    """``ohlc_day_tokens`` (schema version 4): a random token per UTC day of stored candles.

    The writer gives every day whose 1-minute candles a transaction changes (written,
    rewritten, flagged) a new token in that same transaction; a day without a row was never
    written since the table exists. The columnar copy (``_catalog.py``) records the tokens of
    the days it holds, so a reader knows, in its snapshot, which days of a file are current.
    """

    day = UtcDateTimeField(primary_key=True)
    token = pw.BigIntegerField()

    class Meta:
        table_name = "ohlc_day_tokens"


class QxSchema(_Base):
    """``qx_schema``: one row per applied schema version."""

    version = pw.IntegerField(primary_key=True)
    applied_at = UtcDateTimeField()

    class Meta:
        table_name = "qx_schema"


class QxWriter(_Base):
    """``qx_writer``: who holds (or last held) the single-writer lock (PostgreSQL)."""

    id = pw.IntegerField(primary_key=True)
    holder = pw.TextField()
    acquired_at = UtcDateTimeField()

    class Meta:
        table_name = "qx_writer"


MODELS: tuple[type[_Base], ...] = (
    OhlcCandle,
    PriceTickRow,
    FundingSettlementRow,
    OhlcVerifiedEmpty,
    OhlcCoverage,
    OhlcDayToken,
    QxSchema,
    QxWriter,
    *ROLLUP_MODELS,
)


def bind_models(database: pw.Database) -> dict[type[_Base], type[_Base]]:
    """Per-database subclasses of the models (several databases may be open in one process)."""
    bound: dict[type[_Base], type[_Base]] = {}
    for model in MODELS:
        meta = type(
            "Meta",
            (),
            {
                "database": database,
                "table_name": model._meta.table_name,
                # WITHOUT ROWID clusters SQLite rows by time; peewee would emit it on any backend
                "without_rowid": model._meta.without_rowid
                and isinstance(database, pw.SqliteDatabase),
            },
        )
        bound[model] = type(model.__name__, (model,), {"Meta": meta, "__module__": __name__})
    return bound
