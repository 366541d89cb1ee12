"""Adopting an existing quantoxide database (``qx-actors adopt --database URL``).

A quantoxide 0.5.4 or 0.6.0 database (PostgreSQL, made by its sqlx migrations) already has
tables named and shaped like ours: ``ohlc_candles``, ``price_ticks``, ``funding_settlements``;
beside them ``running_trades`` and ``_sqlx_migrations``, which are quantoxide's alone. The two
releases differ in ``running_trades`` only (0.6.0's migration ``20260420143038`` adds
``account_id``; 0.5.5 has it too), which qx_actors neither reads nor touches. The release is
recognised by the migrations recorded in ``_sqlx_migrations`` (:data:`QUANTOXIDE_MIGRATIONS`):
exactly one release's set, every one successful; any other set (a migration failed or missing,
a newer quantoxide's) is refused, nothing changed. Adopting it adds our own tables and nothing
else, in one transaction:

* :func:`~._schema.create_schema` (the one place our tables are made) creates the tables that
  are missing (``qx_schema``, ``qx_writer``, ``ohlc_verified_empty``, ``ohlc_coverage``, the
  rollups), builds ``ohlc_coverage`` and the rollups from the candles already stored and
  records the schema version;
* the indexes it would add to quantoxide's tables (the partial index on unstable candles, a
  second unique index on ``funding_settlements.time``) are left out, in the same transaction:
  quantoxide's tables keep exactly their columns, types, defaults, constraints, indexes and
  triggers, and every row. The catalog of those tables is compared before and after; any other
  difference rolls everything back (``AdoptRefused``).

Quantoxide's writes wait while it runs (``SHARE`` locks on its three tables), so the coverage
built matches the candles committed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from qx_actors.errors import SchemaError

from ._backend import Backend, guard
from ._open import open_backend
from ._postgres import PostgresBackend
from ._schema import (
    _MIGRATION_LOCK_KEY,
    QUANTOXIDE_TABLES,
    SCHEMA_VERSION,
    SQLX_MIGRATIONS_TABLE,
    DatabaseKind,
    classify_database,
    create_schema,
    stored_version,
)
from ._url import describe_url

_QUANTOXIDE_0_5_4 = frozenset(
    {
        20251124124349,  # create ohlc candles table
        20251204134907,  # create price ticks table
        20251204134950,  # create running trades table
        20260220195233,  # create funding settlements table
    }
)
#: The versions in ``_sqlx_migrations`` of each quantoxide release adopted, by release (its
#: ``migrations/*.up.sql``, git tags ``v0.5.4`` and ``v0.6.0``; 0.5.5's are 0.6.0's).
QUANTOXIDE_MIGRATIONS: dict[str, frozenset[int]] = {
    "0.5.4": _QUANTOXIDE_0_5_4,
    "0.6.0": _QUANTOXIDE_0_5_4 | {20260420143038},  # update running trades table (account_id)
}


class AdoptRefused(SchemaError):
    """The database is neither empty, a qx_actors database nor a quantoxide one (or adopting
    it would have changed quantoxide's tables): nothing was changed."""


class AdoptOutcome(StrEnum):
    """What :func:`adopt_database` did."""

    #: a quantoxide database: our tables were added
    ADOPTED = "adopted"
    #: already a qx_actors database: nothing to do
    ALREADY = "already"
    #: an empty database (or no SQLite file): nothing to adopt, nothing created
    EMPTY = "empty"


@dataclass(frozen=True)
class AdoptResult:
    """The outcome of :func:`adopt_database` and what it found or added."""

    outcome: AdoptOutcome
    #: one sentence for the user
    message: str
    #: the tables added (adopted only)
    tables_added: tuple[str, ...] = ()
    #: candles found in ``ohlc_candles`` (adopted only)
    candles: int = 0
    #: runs of consecutive stored minutes recorded in ``ohlc_coverage`` (adopted only)
    coverage_runs: int = 0
    #: the quantoxide release whose migrations the database has (adopted only): a key of
    #: :data:`QUANTOXIDE_MIGRATIONS`
    quantoxide_version: str | None = None


#: the catalog of one table: sorted (what, name, definition) rows
Catalog = dict[str, list[tuple[str, str, str]]]

_CATALOG_SQL = (
    # columns: name -> type, nullability, default
    "SELECT 'column', a.attname, format_type(a.atttypid, a.atttypmod) || "
    "CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END || "
    "COALESCE(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '') "
    "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
    "WHERE a.attrelid = %(rel)s::regclass AND a.attnum > 0 AND NOT a.attisdropped "
    "UNION ALL SELECT 'constraint', conname, pg_get_constraintdef(oid) FROM pg_constraint "
    "WHERE conrelid = %(rel)s::regclass "
    "UNION ALL SELECT 'index', c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
    "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %(rel)s::regclass "
    "UNION ALL SELECT 'trigger', tgname, pg_get_triggerdef(oid) FROM pg_trigger "
    "WHERE tgrelid = %(rel)s::regclass AND NOT tgisinternal"
)


def table_catalog(backend: Backend, tables: tuple[str, ...]) -> Catalog:
    """Columns (type, NOT NULL, default), constraints, indexes and triggers of ``tables``
    (PostgreSQL, current schema), each as sorted ``(what, name, definition)`` rows."""
    cursor = backend.cursor()
    catalog: Catalog = {}
    for table in tables:
        cursor.execute(_CATALOG_SQL, {"rel": _quote_ident(table)})
        catalog[table] = sorted(tuple(row) for row in cursor.fetchall())
    return catalog


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sqlite_file_missing(url: str) -> str | None:
    """The path of a SQLite URL whose file does not exist (opening it would create it)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :]
    return path if path != ":memory:" and not os.path.exists(path) else None


def adopt_database(url: str) -> AdoptResult:
    """Adopt the database at ``url`` so that qx_actors can sync into it.

    * a quantoxide 0.5.4 or 0.6.0 database: our tables are added (see the module docstring),
      one transaction; quantoxide's tables and rows are left exactly as they were;
    * a qx_actors database: nothing to do (``ALREADY``);
    * an empty database, or no SQLite file: nothing to adopt, nothing is created (``EMPTY``;
      ``qx-actors sync`` creates the tables at its first start);
    * anything else: :class:`AdoptRefused`, nothing changed.

    A database that can't be reached raises its ``StorageError`` (``DatabaseUnavailable``...).
    """
    missing = _sqlite_file_missing(url)
    if missing is not None:
        return AdoptResult(AdoptOutcome.EMPTY, f"no database at {missing}: nothing to adopt")
    backend = open_backend(url)
    try:
        with guard(backend, f"adopt {describe_url(url)}"), backend.write_txn():
            if isinstance(backend, PostgresBackend):
                # the lock that serialises schema creation (a qx_actors engine starting)
                backend.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK_KEY,))
            return _adopt(backend)
    finally:
        backend.close()


def _adopt(backend: Backend) -> AdoptResult:
    where = describe_url(backend.url)
    found = classify_database(backend)
    if found.kind is DatabaseKind.QX_ACTORS:
        version = stored_version(backend)
        later = (
            ""
            if version == SCHEMA_VERSION
            else f"; qx-actors sync brings it to version {SCHEMA_VERSION}"
        )
        return AdoptResult(
            AdoptOutcome.ALREADY,
            f"{where} is already a qx_actors database (schema version {version}): "
            f"nothing to do{later}",
        )
    if found.kind is DatabaseKind.EMPTY:
        return AdoptResult(
            AdoptOutcome.EMPTY,
            f"{where} is empty: nothing to adopt (qx-actors sync creates its tables at the "
            "first start)",
        )
    if found.kind is not DatabaseKind.QUANTOXIDE:
        raise AdoptRefused(
            f"can't adopt {where}: neither empty, a qx_actors database nor a quantoxide one "
            f"({found.reason}); nothing changed"
        )
    assert isinstance(backend, PostgresBackend)  # classify_database: quantoxide is PostgreSQL
    theirs = tuple(QUANTOXIDE_TABLES)
    # quantoxide's writers wait until we commit: the coverage built matches the candles
    backend.execute(f"LOCK TABLE {', '.join(theirs)} IN SHARE MODE")
    release = _quantoxide_release(backend, where)
    before_tables = set(backend.db.get_tables())
    before = table_catalog(backend, theirs)
    create_schema(backend)
    _drop_added_indexes(backend, before)
    after = table_catalog(backend, theirs)
    if after != before:
        changed = sorted(t for t in theirs if after[t] != before[t])
        raise AdoptRefused(
            f"can't adopt {where}: creating the qx_actors tables would change quantoxide's "
            f"{', '.join(changed)}; nothing changed"
        )
    added = tuple(sorted(set(backend.db.get_tables()) - before_tables))
    candles = _count(backend, "SELECT COUNT(*) FROM ohlc_candles")
    runs = _count(backend, "SELECT COUNT(*) FROM ohlc_coverage")
    return AdoptResult(
        AdoptOutcome.ADOPTED,
        f"adopted the quantoxide {release} database {where}: added {', '.join(added)} "
        f"(schema version {SCHEMA_VERSION}); {candles} stored candles in {runs} run(s) of "
        "consecutive minutes will not be downloaded again; quantoxide's tables are unchanged",
        tables_added=added,
        candles=candles,
        coverage_runs=runs,
        quantoxide_version=release,
    )


def _quantoxide_release(backend: Backend, where: str) -> str:
    """The quantoxide release whose migrations ``_sqlx_migrations`` records (a key of
    :data:`QUANTOXIDE_MIGRATIONS`); :class:`AdoptRefused` for a failed migration or a set that
    is no release's (missing ones, or a newer quantoxide's)."""
    rows: Any = backend.execute(
        f"SELECT version, success FROM {SQLX_MIGRATIONS_TABLE} ORDER BY version"
    ).fetchall()
    versions = frozenset(int(version) for version, _ in rows)
    failed = [int(version) for version, success in rows if not success]
    if failed:
        raise AdoptRefused(
            f"can't adopt {where}: quantoxide's migration {_listed(failed)} did not succeed "
            f"({SQLX_MIGRATIONS_TABLE}.success is false): let quantoxide migrate it first; "
            "nothing changed"
        )
    for release, migrations in QUANTOXIDE_MIGRATIONS.items():
        if versions == migrations:
            return release
    releases = list(QUANTOXIDE_MIGRATIONS)
    unknown = sorted(versions - frozenset().union(*QUANTOXIDE_MIGRATIONS.values()))
    # the nearest release: the one with the fewest migrations holding every recorded one
    nearest = min(
        (r for r, m in QUANTOXIDE_MIGRATIONS.items() if versions <= m),
        key=lambda r: len(QUANTOXIDE_MIGRATIONS[r]),
        default=None,
    )
    if unknown:
        why = f"migration {_listed(unknown)} is unknown: a quantoxide newer than {releases[-1]}?"
    elif nearest is not None:
        missing = sorted(QUANTOXIDE_MIGRATIONS[nearest] - versions)
        why = (
            f"quantoxide {nearest}'s migration {_listed(missing)} is not recorded: let "
            f"quantoxide {nearest} migrate it first"
        )
    else:
        why = f"versions {_listed(sorted(versions))}"
    raise AdoptRefused(
        f"can't adopt {where}: its {SQLX_MIGRATIONS_TABLE} records the migrations of no "
        f"quantoxide release qx_actors adopts ({' or '.join(releases)}): {why}; nothing changed"
    )


def _listed(versions: list[int]) -> str:
    return ", ".join(str(v) for v in versions)


def _drop_added_indexes(backend: Backend, before: Catalog) -> None:
    """Drop the indexes ``create_schema`` added to quantoxide's tables (same transaction: as if
    never made). Ours only: an index whose name was there before is never touched."""
    after = table_catalog(backend, tuple(before))
    for table, rows in after.items():
        known = {name for what, name, _ in before[table] if what == "index"}
        for what, name, _ in rows:
            if what == "index" and name not in known:
                backend.execute(f"DROP INDEX {_quote_ident(name)}")


def _count(backend: Backend, sql: str) -> int:
    row: Any = backend.execute(sql).fetchone()
    return int(row[0])
