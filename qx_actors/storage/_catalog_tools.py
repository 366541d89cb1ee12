"""Rebuilding and verifying the catalog (``qx-actors catalog rebuild`` / ``catalog verify``)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from qx_actors.domain.timeutil import utc_now
from qx_actors.errors import StorageError

from ._backend import guard
from ._catalog import Catalog, closed_until, month_days, months_between
from ._day_tokens import DAY, day_number, read_tokens
from ._read import Database, candle_schema, import_pyarrow

__all__ = ["CatalogReport", "rebuild_catalog", "verify_catalog"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class CatalogReport:
    """What a rebuild or a verification of the catalog did and found."""

    directory: Path
    #: catalog files written (rebuild) or read (verify)
    files: int = 0
    #: candles in them
    candles: int = 0
    #: bytes of the files
    size: int = 0
    #: days whose token changed since their file was written (read from the database until
    #: the file is written again; not a problem)
    stale_days: int = 0
    #: files removed (rebuild: months without candles or not closed, leftovers)
    removed: int = 0
    seconds: float = 0.0
    #: ``"<file>: what is wrong"``; empty when the catalog is sound
    problems: list[str] = field(default_factory=list)


def _open(url: str, catalog_dir: str | os.PathLike[str] | None) -> tuple[Database, Catalog]:
    pa = import_pyarrow()
    database = Database(url, catalog_dir=catalog_dir)
    if database._catalog_dir is None:
        database.close()
        raise StorageError(
            "no catalog directory for this database: give one (catalog_dir) for PostgreSQL"
        )
    return database, database._open_catalog(pa, candle_schema(pa))


def rebuild_catalog(
    url: str, *, catalog_dir: str | os.PathLike[str] | None = None
) -> CatalogReport:
    """Write the file of every month holding closed days of candles from the database (each
    month from one snapshot) and remove any other file; the directory is created if needed."""
    started = time.perf_counter()
    pa = import_pyarrow()
    database, catalog = _open(url, catalog_dir)
    report = CatalogReport(catalog.directory)
    backend = database._backend
    closed = closed_until(utc_now())
    kept: set[Path] = set()
    try:
        with guard(backend, "catalog bounds"):
            row = backend.execute("SELECT MIN(time), MAX(time) FROM ohlc_candles").fetchone()
        if row is not None and row[0] is not None:
            first = day_number(backend.time_value(row[0]))
            after = min(day_number(backend.time_value(row[1])) + 1, closed)
            for month, m0, m1 in months_between(first, after):
                closed_after = min(m1, closed)
                with guard(backend, "catalog rebuild"), backend.read_txn():
                    tokens = read_tokens(backend, m0, closed_after)
                    table = database._minutes_arrow(
                        pa, candle_schema(pa), _EPOCH + m0 * DAY, _EPOCH + closed_after * DAY
                    )
                catalog.write(month, table, m0, [tokens.get(d) for d in range(m0, closed_after)])
                path = catalog.path(month)
                kept.add(path)
                report.files += 1
                report.candles += table.num_rows
                report.size += path.stat().st_size
        for path in [*catalog.files(), *catalog.directory.glob(".candles-1m-*.tmp")]:
            if path not in kept:
                path.unlink(missing_ok=True)
                report.removed += 1
    finally:
        database.close()
    report.seconds = time.perf_counter() - started
    return report


def verify_catalog(url: str, *, catalog_dir: str | os.PathLike[str] | None = None) -> CatalogReport:
    """Check every catalog file against the database: each day whose token still matches
    must hold exactly the database's candles of that day. Problems are listed, not raised."""
    started = time.perf_counter()
    pa = import_pyarrow()
    database, catalog = _open(url, catalog_dir)
    report = CatalogReport(catalog.directory)
    backend = database._backend
    schema = candle_schema(pa)
    try:
        for path in catalog.files():
            report.files += 1
            report.size += path.stat().st_size
            try:
                held = catalog.load(path)
            except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
                report.problems.append(f"{path.name}: can't be read ({exc})")
                continue
            report.candles += held.table.num_rows
            m0, m1 = month_days(_EPOCH + held.first_day * DAY)
            if path != catalog.path(_EPOCH + m0 * DAY) or held.after_day > m1:
                report.problems.append(f"{path.name}: holds days of another month")
                continue
            with guard(backend, "catalog verify"), backend.read_txn():
                tokens = read_tokens(backend, held.first_day, held.after_day)
                for day in range(held.first_day, held.after_day):
                    if not held.current(day, tokens):
                        report.stale_days += 1
                        continue
                    stored = database._minutes_arrow(
                        pa, schema, _EPOCH + day * DAY, _EPOCH + (day + 1) * DAY
                    )
                    if not stored.equals(held.days(day, day + 1)):
                        report.problems.append(
                            f"{path.name}: {_EPOCH + day * DAY:%Y-%m-%d} differs from the "
                            "database although its token is current (changed without the "
                            "writer?): run `qx-actors catalog rebuild`"
                        )
                        break
    finally:
        database.close()
    report.seconds = time.perf_counter() - started
    return report
