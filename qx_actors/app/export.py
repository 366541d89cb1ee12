"""``qx-actors export``: candles (any resolution), ticks or settlements as CSV, JSON lines or
Parquet (the ``arrow`` extra: ``pip install 'qx_actors[arrow]'``)."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

from qx_actors.domain.timeutil import format_utc
from qx_actors.storage import Database, import_pyarrow

__all__ = [
    "FORMATS",
    "KINDS",
    "arrow_table",
    "export",
    "parse_time",
    "write_parquet",
    "write_rows",
]

#: what ``export`` writes (``--kind``) and how (``--format``)
KINDS = ("candles", "ticks", "settlements")
FORMATS = ("csv", "jsonl", "parquet")


def parse_time(text: str) -> datetime:
    """An ISO date or datetime; without an offset it is UTC."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"expected an ISO date or datetime, got {text!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _rows(
    database: Database, kind: str, start: datetime, end: datetime, resolution: str
) -> tuple[list[str], Iterator[list[Any]]]:
    if kind == "candles":
        header = ["time", "open", "high", "low", "close", "volume", "stable", "gap", "minutes"]
        candles = database.candles(start, end, resolution)
        return header, (
            [format_utc(c.time), c.open, c.high, c.low, c.close, c.volume, c.stable, c.gap,
             c.minutes]
            for c in candles
        )  # fmt: skip
    if kind == "ticks":
        ticks = database.ticks(start, end)
        return ["time", "last_price"], ([format_utc(t.time), t.last_price] for t in ticks)
    settlements = database.settlements(start, end)
    return ["id", "time", "fixing_price", "funding_rate"], (
        [s.id, format_utc(s.time), s.fixing_price, s.funding_rate] for s in settlements
    )


def _csv_value(value: Any) -> Any:
    return ("true" if value else "false") if isinstance(value, bool) else value


def write_rows(header: list[str], rows: Iterable[list[Any]], out: TextIO, fmt: str) -> int:
    """Write ``rows`` as CSV (with a header) or JSON lines; how many rows were written."""
    count = 0
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            # booleans as in the JSON lines (and most CSV readers): true / false
            writer.writerow([_csv_value(value) for value in row])
            count += 1
    else:
        for row in rows:
            out.write(json.dumps(dict(zip(header, row, strict=True))) + "\n")
            count += 1
    return count


def arrow_table(
    database: Database, kind: str, start: datetime, end: datetime, resolution: str = "1m"
) -> Any:
    """``[start, end)`` of ``kind`` as a ``pyarrow.Table`` (times ``timestamp[us, tz=UTC]``)."""
    if kind == "candles":
        return database.candles_arrow(start, end, resolution)
    pa = import_pyarrow()
    stamp = pa.timestamp("us", tz="UTC")
    if kind == "ticks":
        ticks = database.ticks(start, end)
        return pa.table(
            {
                "time": pa.array([t.time for t in ticks], type=stamp),
                "last_price": pa.array([t.last_price for t in ticks], type=pa.float64()),
            }
        )
    settlements = database.settlements(start, end)
    return pa.table(
        {
            "id": pa.array([s.id for s in settlements], type=pa.string()),
            "time": pa.array([s.time for s in settlements], type=stamp),
            "fixing_price": pa.array([s.fixing_price for s in settlements], type=pa.float64()),
            "funding_rate": pa.array([s.funding_rate for s in settlements], type=pa.float64()),
        }
    )


def write_parquet(table: Any, output: str | None) -> int:
    """Write ``table`` as Parquet to ``output`` (default: stdout); how many rows."""
    import_pyarrow()
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    pq.write_table(table, output if output is not None else sys.stdout.buffer)
    return int(table.num_rows)


def export(
    database_url: str,
    *,
    kind: str,
    start: datetime,
    end: datetime,
    resolution: str = "1m",
    fmt: str = "csv",
    output: str | None = None,
    catalog_dir: str | None = None,
) -> int:
    """Export ``[start, end)`` of ``kind`` from the database; the number of rows written.

    ``fmt="parquet"`` needs pyarrow: without it ``ArrowUnavailable`` (naming the extra to
    install) is raised before the database is opened, as is ``ValueError`` for a ``kind`` or
    ``fmt`` not in :data:`KINDS` / :data:`FORMATS`. ``catalog_dir``: where the catalog of 1m
    candles is (the config's ``catalog_dir``; ``None``: beside a SQLite file).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown export kind {kind!r}; expected one of {', '.join(KINDS)}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        import_pyarrow()
    with Database(database_url, catalog_dir=catalog_dir) as database:
        if fmt == "parquet":
            return write_parquet(arrow_table(database, kind, start, end, resolution), output)
        header, rows = _rows(database, kind, start, end, resolution)
        if output is None:
            return write_rows(header, rows, sys.stdout, fmt)
        with open(output, "w", encoding="utf-8", newline="") as out:
            return write_rows(header, rows, out, fmt)
