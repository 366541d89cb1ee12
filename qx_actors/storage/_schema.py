"""Schema creation and versioning (``qx_schema``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from qx_actors.errors import SchemaError

from ._backend import Backend, guard
from ._day_tokens import rebuild_tokens
from ._models import (
    MODELS,
    ROLLUP_MODELS,
    OhlcCandle,
    OhlcCoverage,
    OhlcDayToken,
    QxSchema,
    bind_models,
)
from ._postgres import PostgresBackend
from ._queries import rebuild_coverage
from ._rollups import create_rollup_views, rebuild_rollups
from ._url import describe_url

#: the schema version this package writes and understands
#:
#: 1. ``ohlc_candles``, ``price_ticks``, ``funding_settlements``, ``ohlc_verified_empty``,
#:    ``qx_schema``, ``qx_writer``;
#: 2. + ``ohlc_coverage``: the runs of consecutive stored minutes, kept by the writer with the
#:    candles (migration from 1: built once from the stored candles);
#: 3. + ``ohlc_rollup_3m``, ``_5m``, ``_15m``, ``_30m``, ``_1h``, ``_4h``, ``_1d``: consolidated
#:    candles kept by the writer with the minutes (migration from 2: built once from them);
#: 4. + ``ohlc_day_tokens``: a random token per day of candles, renewed by the writer whenever
#:    a day's candles change (what the columnar copy is checked against; migration from 3: a
#:    token for every day holding a candle);
#: 5. ``ohlc_rollup_3m``, ``_5m``, ``_15m``, ``_30m`` become views over ``ohlc_candles`` (same
#:    names and columns, consolidated when read); the writer keeps only 1h, 4h and 1d
#:    (migration from 4: the four tables dropped, the views created).
SCHEMA_VERSION = 5


class NoDatabaseError(SchemaError):
    """Nothing to read yet: no SQLite file at the URL, or no qx_actors schema in it."""


class QuantoxideDatabaseError(SchemaError):
    """A quantoxide database (its tables, none of ours): adopt it once with
    ``qx-actors adopt --database URL`` (:func:`~._adopt.adopt_database`), then sync."""


#: advisory lock key serialising concurrent schema creation on PostgreSQL
_MIGRATION_LOCK_KEY = 0x71785F6D69677261  # "qx_migra"

_EXTRA_DDL = (
    # earliest_unstable without a scan: only the few unstable candles are indexed
    "CREATE INDEX IF NOT EXISTS ohlc_candles_unstable ON ohlc_candles (time) WHERE NOT stable",
)

_OUR_TABLES = {m._meta.table_name for m in MODELS}


def stored_version(backend: Backend) -> int | None:
    """The highest version in ``qx_schema``; None when the table does not exist."""
    if "qx_schema" not in backend.db.get_tables():
        return None
    row = backend.execute("SELECT MAX(version) FROM qx_schema").fetchone()
    return None if row is None or row[0] is None else int(row[0])


class DatabaseKind(StrEnum):
    """What a database holds, as far as qx_actors is concerned (:func:`classify_database`)."""

    #: no table at all
    EMPTY = "empty"
    #: a qx_actors database (it has ``qx_schema``)
    QX_ACTORS = "qx_actors"
    #: a quantoxide 0.5.4 database (its sqlx migrations' tables, none of ours): adoptable
    QUANTOXIDE = "quantoxide"
    #: anything else (unrelated tables, or tables named like ours of another shape)
    OTHER = "other"


@dataclass(frozen=True)
class DatabaseClass:
    """A database's :class:`DatabaseKind` and, in words, why (what was found)."""

    kind: DatabaseKind
    reason: str


_TSTZ = "timestamp with time zone"
_F8 = "double precision"
#: quantoxide 0.5.4's tables as its sqlx migrations create them (``migrations/*.up.sql``):
#: column -> PostgreSQL data type. Ours have the same names and columns; they differ in
#: ``ohlc_candles.volume`` (BIGINT there, DOUBLE PRECISION here), in the column defaults and in
#: quantoxide's ``BEFORE UPDATE`` trigger that sets ``ohlc_candles.updated_at = NOW()``.
QUANTOXIDE_TABLES: dict[str, dict[str, str]] = {
    "ohlc_candles": {
        "time": _TSTZ,
        "open": _F8,
        "high": _F8,
        "low": _F8,
        "close": _F8,
        "volume": "bigint",
        "created_at": _TSTZ,
        "updated_at": _TSTZ,
        "gap": "boolean",
        "stable": "boolean",
    },
    "price_ticks": {"time": _TSTZ, "last_price": _F8, "created_at": _TSTZ},
    "funding_settlements": {
        "id": "uuid",
        "time": _TSTZ,
        "fixing_price": _F8,
        "funding_rate": _F8,
        "created_at": _TSTZ,
    },
}
#: the table sqlx keeps its applied migrations in: a quantoxide database always has it
SQLX_MIGRATIONS_TABLE = "_sqlx_migrations"
ADOPT_COMMAND = "qx-actors adopt --database URL"


def _quantoxide_problems(backend: Backend, tables: set[str]) -> list[str]:
    """Why the database is not an adoptable quantoxide database (empty: it is one)."""
    if not isinstance(backend, PostgresBackend):
        return ["quantoxide databases are PostgreSQL databases"]
    problems: list[str] = []
    if SQLX_MIGRATIONS_TABLE not in tables:
        problems.append(f"no {SQLX_MIGRATIONS_TABLE} table (not made by quantoxide's migrations)")
    rows = backend.execute(
        "SELECT table_name, column_name, data_type, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_schema = current_schema()"
    ).fetchall()
    columns: dict[str, dict[str, tuple[str, bool]]] = {}
    for table, column, data_type, nullable, default in rows:
        has_default = nullable == "YES" or default is not None
        columns.setdefault(table, {})[column] = (data_type, has_default)
    for table, expected in QUANTOXIDE_TABLES.items():
        if table not in tables:
            problems.append(
                f"no {table} table (a quantoxide older than 0.5.4? let quantoxide 0.5.4 "
                "migrate it first)"
            )
            continue
        found = columns.get(table, {})
        for column, data_type in expected.items():
            if column not in found:
                problems.append(f"{table}.{column} is missing")
            elif found[column][0] != data_type:
                problems.append(
                    f"{table}.{column} is {found[column][0]}, quantoxide's is {data_type}"
                )
        for column, (_, has_default) in found.items():
            if column not in expected and not has_default:
                problems.append(f"{table}.{column} is NOT NULL without a default")
    ours = sorted((_OUR_TABLES - set(QUANTOXIDE_TABLES)) & tables)
    if ours:
        problems.append(f"qx_actors tables without a schema version: {', '.join(ours)}")
    return problems


def classify_database(backend: Backend) -> DatabaseClass:
    """What ``backend``'s database holds: nothing, ours, quantoxide's, or something else.

    Only the catalog is read (the tables of the current schema and their columns).
    """
    tables = set(backend.db.get_tables())
    if not tables:
        return DatabaseClass(DatabaseKind.EMPTY, "no tables")
    if QxSchema._meta.table_name in tables:
        return DatabaseClass(
            DatabaseKind.QX_ACTORS, f"qx_actors schema version {stored_version(backend)}"
        )
    if not tables & set(QUANTOXIDE_TABLES):
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        return DatabaseClass(
            DatabaseKind.OTHER, f"none of its tables ({shown}) is qx_actors' or quantoxide's"
        )
    problems = _quantoxide_problems(backend, tables)
    if problems:
        return DatabaseClass(
            DatabaseKind.OTHER,
            "no qx_schema, and not a quantoxide 0.5.4 database: " + "; ".join(problems),
        )
    return DatabaseClass(DatabaseKind.QUANTOXIDE, "quantoxide 0.5.4's tables, none of ours")


def quantoxide_refusal(backend: Backend) -> QuantoxideDatabaseError:
    """The error refusing to sync into (or read) a quantoxide database not adopted yet."""
    return QuantoxideDatabaseError(
        f"{describe_url(backend.url)} is a quantoxide database (ohlc_candles, price_ticks, "
        "funding_settlements and no qx_actors tables): adopt it once with "
        f"`{ADOPT_COMMAND}` (URL: this database's), which adds the qx_actors tables beside "
        "quantoxide's and changes none of them; then run qx-actors again"
    )


def _check(version: int | None, backend: Backend) -> None:
    if version is not None and not 1 <= version <= SCHEMA_VERSION:
        raise SchemaError(
            f"{describe_url(backend.url)} has schema version {version}; this qx_actors "
            f"understands versions up to {SCHEMA_VERSION} (upgrade qx_actors)"
        )


def create_schema(backend: Backend, *, candle_index: bool = True) -> dict[type[Any], type[Any]]:
    """Create every qx_actors table of ``SCHEMA_VERSION`` that is missing, build the derived
    tables (``ohlc_coverage``, the rollups ``ohlc_rollup_*`` kept as tables, the day tokens) from
    whatever ``ohlc_candles`` holds, create the views of the other rollups, and record the
    version (``qx_schema``). Returns the models bound to this database.

    The one place our tables are created: a fresh database and the adoption of an existing
    one (its candles already there; tables that exist are left as they are) both call it.
    ``candle_index=False`` leaves ``ohlc_candles`` without our partial index on unstable
    candles (adoption: no change to another program's table). Run it inside a write
    transaction, on a database without a ``qx_schema`` version yet.
    """
    models = bind_models(backend.db)
    backend.db.create_tables(list(models.values()), safe=True)
    for ddl in _EXTRA_DDL if candle_index else ():
        backend.execute(ddl)
    rebuild_coverage(backend)
    rebuild_rollups(backend)
    create_rollup_views(backend)
    rebuild_tokens(backend)
    models[QxSchema].insert(version=SCHEMA_VERSION, applied_at=datetime.now(UTC)).execute()
    return models


def ensure_schema(backend: Backend) -> dict[type[Any], type[Any]]:
    """Create or check (and migrate) the schema at open; returns the models bound to this
    database."""
    models = bind_models(backend.db)
    with guard(backend, f"schema of {describe_url(backend.url)}"), backend.write_txn():
        if isinstance(backend, PostgresBackend):
            backend.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK_KEY,))
        version = stored_version(backend)
        _check(version, backend)
        if version is None:
            found = classify_database(backend)
            if found.kind is DatabaseKind.QUANTOXIDE:
                raise quantoxide_refusal(backend)
            if OhlcCandle._meta.table_name in backend.db.get_tables():
                raise SchemaError(
                    f"{describe_url(backend.url)} has an ohlc_candles table but no qx_schema "
                    f"version: not a qx_actors database (or an unknown version), {found.reason}"
                )
            return create_schema(backend)
        if version < 2:
            _migrate_to_coverage(backend, models)
        if version < 3:
            _migrate_to_rollups(backend, models)
        if version < 4:
            _migrate_to_day_tokens(backend, models)
        if version < 5:
            _migrate_to_rollup_views(backend, models)
    return models


def _migrate_to_coverage(backend: Backend, models: dict[type[Any], type[Any]]) -> None:
    """Version 1 -> 2: create ``ohlc_coverage`` and fill it from the stored candles (once)."""
    backend.db.create_tables([models[OhlcCoverage]], safe=True)
    rebuild_coverage(backend)
    models[QxSchema].insert(version=2, applied_at=datetime.now(UTC)).execute()


def _migrate_to_rollups(backend: Backend, models: dict[type[Any], type[Any]]) -> None:
    """Version 2 -> 3: create the rollup tables and build them from the stored candles (once)."""
    backend.db.create_tables([models[m] for m in ROLLUP_MODELS], safe=True)
    rebuild_rollups(backend)
    models[QxSchema].insert(version=3, applied_at=datetime.now(UTC)).execute()


def _migrate_to_day_tokens(backend: Backend, models: dict[type[Any], type[Any]]) -> None:
    """Version 3 -> 4: create ``ohlc_day_tokens`` with a token for every day of candles."""
    backend.db.create_tables([models[OhlcDayToken]], safe=True)
    rebuild_tokens(backend)
    models[QxSchema].insert(version=4, applied_at=datetime.now(UTC)).execute()


def _migrate_to_rollup_views(backend: Backend, models: dict[type[Any], type[Any]]) -> None:
    """Version 4 -> 5: the rollups the writer no longer keeps (3m ... 30m) become views."""
    create_rollup_views(backend)
    models[QxSchema].insert(version=5, applied_at=datetime.now(UTC)).execute()


def check_schema(backend: Backend) -> dict[type[Any], type[Any]]:
    """Check (never create) the schema, for read-only use; a missing schema is a SchemaError."""
    with guard(backend, f"schema of {describe_url(backend.url)}"):
        version = stored_version(backend)
        if version is None and classify_database(backend).kind is DatabaseKind.QUANTOXIDE:
            raise quantoxide_refusal(backend)
    if version is None:
        raise NoDatabaseError(
            f"{describe_url(backend.url)} has no qx_actors schema (nothing synced)"
        )
    _check(version, backend)
    return bind_models(backend.db)
