"""Schema creation and versioning (``qx_schema``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from qx_actors.errors import SchemaError

from ._backend import Backend, PostgresBackend, describe_url, guard
from ._models import MODELS, OhlcCandle, OhlcCoverage, QxSchema, bind_models
from ._queries import rebuild_coverage

#: the schema version this package writes and understands
#:
#: 1. ``ohlc_candles``, ``price_ticks``, ``funding_settlements``, ``ohlc_verified_empty``,
#:    ``qx_schema``, ``qx_writer``;
#: 2. + ``ohlc_coverage``: the runs of consecutive stored minutes, kept by the writer with the
#:    candles (migration from 1: built once from the stored candles).
SCHEMA_VERSION = 2

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


def _check(version: int | None, backend: Backend) -> None:
    if version is not None and not 1 <= version <= SCHEMA_VERSION:
        raise SchemaError(
            f"{describe_url(backend.url)} has schema version {version}; this qx_actors "
            f"understands versions up to {SCHEMA_VERSION} (upgrade qx_actors)"
        )


def ensure_schema(backend: Backend) -> dict[type[Any], type[Any]]:
    """Create or check the schema at open; returns the models bound to this database."""
    models = bind_models(backend.db)
    with guard(backend, f"schema of {describe_url(backend.url)}"), backend.write_txn():
        if isinstance(backend, PostgresBackend):
            backend.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK_KEY,))
        version = stored_version(backend)
        _check(version, backend)
        if version is None:
            present = _OUR_TABLES & set(backend.db.get_tables())
            if OhlcCandle._meta.table_name in present:
                raise SchemaError(
                    f"{describe_url(backend.url)} has an ohlc_candles table but no qx_schema "
                    "version: not a qx_actors database (or an unknown version)"
                )
            backend.db.create_tables(list(models.values()), safe=True)
            for ddl in _EXTRA_DDL:
                backend.execute(ddl)
            models[QxSchema].insert(version=SCHEMA_VERSION, applied_at=datetime.now(UTC)).execute()
        elif version < 2:
            _migrate_to_coverage(backend, models)
    return models


def _migrate_to_coverage(backend: Backend, models: dict[type[Any], type[Any]]) -> None:
    """Version 1 -> 2: create ``ohlc_coverage`` and fill it from the stored candles (once)."""
    backend.db.create_tables([models[OhlcCoverage]], safe=True)
    rebuild_coverage(backend)
    models[QxSchema].insert(version=2, applied_at=datetime.now(UTC)).execute()


def check_schema(backend: Backend) -> dict[type[Any], type[Any]]:
    """Check (never create) the schema, for read-only use; a missing schema is a SchemaError."""
    with guard(backend, f"schema of {describe_url(backend.url)}"):
        version = stored_version(backend)
    if version is None:
        raise SchemaError(f"{describe_url(backend.url)} has no qx_actors schema (nothing synced)")
    _check(version, backend)
    return bind_models(backend.db)
