"""Section 7, ``read``: the read API on a year of 1-minute candles against its raw bounds,
on SQLite and PostgreSQL, and what keeping the rollups costs the writer.

The read API on one year of 1-minute candles (525,600 minus 100 in holes; 60
days with ``--quick``), on SQLite and, when a server can be had as in 5, PostgreSQL (built
with the raw bulk paths, then ``ohlc_coverage`` and the rollups built by the schema
migration, whose time is printed). Each read beside its raw bound, measured in the same
run, interleaved, median of 5 after one warm-up: *1m* = ``Database.candles(start, end)``
against a plain ``fetchall`` (sqlite3 / psycopg2) of the same columns of the same rows,
target ratio <= 1.3; *1m as Arrow* = ``Database.candles_arrow`` from the catalog (built
first by ``rebuild_catalog``, whose time and size are a row of their own) against the same
bound, target <= 0.1 x on SQLite, <= 0.2 x on PostgreSQL; *without catalog* the same with
``catalog=False`` (information); *six years as Arrow* (120 days with ``--quick``) in a database
of its own, target <= 500 ms, beside its raw ``fetchall`` (median of 3); *1h*, *1d* =
``Database.candles(start, end, "1h"/"1d")`` answered from the
rollups, target <= 50 ms, beside one ``GROUP BY`` of the minutes in SQL (what consolidating
at read time costs at least); *5m* (information) the same at 5m, consolidated from the minutes
(schema 5 keeps no 3m ... 30m tables): from the catalog with Arrow, as rows and as a table,
and without the catalog (a SQL ``GROUP BY``). *rollup upkeep* (information):
``Storage.upsert_candles`` of 100 pages of 1000 minutes into a fresh SQLite file with the
rollups kept against the same with their upkeep switched off — what the writer pays for them.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
from _common import Report, Row, bench_database, log, postgres_admin
from _data import (
    build_derived,
    build_history_postgres,
    build_history_sqlite,
    fresh_sqlite,
    synthetic_rows,
)

import qx_actors.storage._storage as storage_module
from qx_actors.domain.values import Candle
from qx_actors.storage import Database, open_storage, rebuild_catalog, to_utc_text

#: the columns of a candle read, as ``Database.candles`` selects them
READ_COLUMNS = "time, open, high, low, close, volume, stable, gap"


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def raw_fetch(url: str, sql: str, params: tuple[Any, ...]) -> Callable[[], int]:
    """A function running ``sql`` with a plain driver connection and fetching every row."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite:///") :], isolation_level=None)

        def fetch_sqlite() -> int:
            return len(conn.execute(sql, params).fetchall())

        return fetch_sqlite
    pg = psycopg2.connect(url, options="-c TimeZone=UTC")
    pg.autocommit = True
    pg_sql = sql.replace("?", "%s")

    def fetch_postgres() -> int:
        with pg.cursor() as cur:
            cur.execute(pg_sql, params)
            return len(cur.fetchall())

    return fetch_postgres


def group_by_sql(url: str, seconds: int) -> str:
    """One GROUP BY of the minutes into buckets of ``seconds`` (open/close left out)."""
    bucket = (
        f"unixepoch(time) / {seconds}"
        if url.startswith("sqlite:///")
        else f"floor(extract(epoch FROM time) / {seconds})"
    )
    return (
        f"SELECT {bucket} AS b, MIN(time), MAX(time), MAX(high), MIN(low), SUM(volume), "
        "COUNT(*) FROM ohlc_candles WHERE time >= ? AND time < ? GROUP BY b ORDER BY b"
    )


def time_reads(
    calls: dict[str, Callable[[], int]], repeats: int = 5
) -> dict[str, dict[str, float]]:
    """Each call once as a warm-up, then ``repeats`` rounds of all of them interleaved:
    median and min in ms, and the rows returned."""
    rows = {name: call() for name, call in calls.items()}
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - started)
    return {
        name: {"median_ms": _median_ms(s), "min_ms": min(s) * 1000, "rows": rows[name]}
        for name, s in samples.items()
    }


def raw_minutes(url: str, start: datetime, end: datetime) -> Callable[[], int]:
    """The raw bound of a 1m read: a plain ``fetchall`` of the columns ``candles`` selects."""
    tp: Callable[[datetime], Any] = to_utc_text if url.startswith("sqlite:///") else (lambda t: t)
    return raw_fetch(
        url,
        f"SELECT {READ_COLUMNS} FROM ohlc_candles WHERE time >= ? AND time < ? ORDER BY time",
        (tp(start), tp(end)),
    )


def read_figures(
    url: str, start: datetime, end: datetime, catalog_dir: Path
) -> dict[str, dict[str, float]]:
    """The timed reads of one database (see the docstring, 7)."""
    tp: Callable[[datetime], Any] = to_utc_text if url.startswith("sqlite:///") else (lambda t: t)
    params = (tp(start), tp(end))
    database = Database(url, catalog_dir=catalog_dir)
    plain = Database(url, catalog=False)
    try:
        return time_reads(
            {
                "raw 1m": raw_minutes(url, start, end),
                "1m": lambda: len(database.candles(start, end)),
                "1m arrow": lambda: int(database.candles_arrow(start, end).num_rows),
                "1m arrow, no catalog": lambda: int(plain.candles_arrow(start, end).num_rows),
                "raw 1h group by": raw_fetch(url, group_by_sql(url, 3600), params),
                "1h": lambda: len(database.candles(start, end, "1h")),
                "raw 1d group by": raw_fetch(url, group_by_sql(url, 86_400), params),
                "1d": lambda: len(database.candles(start, end, "1d")),
                "5m": lambda: len(database.candles(start, end, "5m")),
                "5m arrow": lambda: int(database.candles_arrow(start, end, "5m").num_rows),
                "5m, no catalog": lambda: len(plain.candles(start, end, "5m")),
            }
        )
    finally:
        database.close()
        plain.close()


#: ``candles_arrow`` of a year at 1m against a ``fetchall``: the issue's targets per backend
ARROW_TARGET = {"SQLite": 0.1, "PostgreSQL": 0.2}


def catalog_rows(
    report: Report, s: str, label: str, backend: str, url: str, catalog_dir: Path
) -> dict[str, float]:
    """Build the catalog of ``url`` (``rebuild_catalog``) and report its time and size."""
    built = rebuild_catalog(url, catalog_dir=catalog_dir)
    report.add(
        Row(
            s, f"catalog build, {label}, {backend}", built.seconds, "s",
            note=f"{built.files} monthly Arrow files, {built.size / 1e6:,.0f} MB, "
            f"{built.candles:,} candles (rebuild_catalog; information)",
        )
    )  # fmt: skip
    return {"seconds": built.seconds, "bytes": built.size, "files": built.files}


def long_history(
    report: Report, opts: argparse.Namespace, workdir: Path, urls: list[tuple[str, str]]
) -> dict[str, Any]:
    """Six years of 1m candles as Arrow (120 days with ``--quick``) on each backend: the
    catalog's build, then ``candles_arrow`` (target <= 0.5 s) beside a raw ``fetchall``."""
    s = "7 read"
    days = 120 if opts.quick else 6 * 365
    n = days * 1440
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(minutes=n)
    label = f"{days / 365:.1f} years" if days >= 365 else f"{days} days"
    out: dict[str, Any] = {}
    for backend, url in urls:
        log(f"    {backend}: {n:,} candles for the long read ...")
        if backend == "SQLite":
            url = build_history_sqlite(workdir / "long.db", n, end - timedelta(minutes=1))
        else:
            build_history_postgres(url, n, end - timedelta(minutes=1))
        build_derived(url, rollups=False)
        catalog_dir = workdir / f"long-{backend.lower()}-catalog"
        built = catalog_rows(report, s, label, backend, url, catalog_dir)
        with Database(url, catalog_dir=catalog_dir) as database:
            timed = time_reads(
                {
                    "raw 1m": raw_minutes(url, start, end),
                    "1m arrow": lambda: int(database.candles_arrow(start, end).num_rows),
                },
                repeats=3,
            )
        raw, arrow = timed["raw 1m"]["median_ms"], timed["1m arrow"]["median_ms"]
        report.add(
            Row(
                s, f"1m as Arrow, {label}, {backend}", arrow, "ms", "<= 500 ms", arrow / raw,
                arrow <= 500,
                note=f"{int(timed['1m arrow']['rows']):,} rows; ratio against a raw fetchall "
                f"of {raw:,.0f} ms",
            )
        )  # fmt: skip
        out[backend.lower()] = {"reads": timed, "catalog": built}
    return out


#: What the storage writer calls to keep the rollups (switched off for the comparison).
UPKEEP_FUNCTIONS = ("refresh_rollups",)


@contextlib.contextmanager
def rollup_upkeep_off() -> Iterator[None]:
    """The storage writer without its rollup upkeep (the functions it calls made no-ops)."""
    saved = {name: getattr(storage_module, name) for name in UPKEEP_FUNCTIONS}
    for name in UPKEEP_FUNCTIONS:
        setattr(storage_module, name, lambda *args: None)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(storage_module, name, function)


def rollup_upkeep(fresh_url: Callable[[int], str], pages: int = 100) -> dict[str, float]:
    """rows/s of ``Storage.upsert_candles`` (1000-minute pages, newest first) into fresh
    databases (``fresh_url(i)``) with the rollups kept and with their upkeep switched off,
    alternated (4 runs); the medians."""
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)
    batches = [
        [
            Candle(t, o, h, lo, c, 1.0)
            for t, o, h, lo, c in synthetic_rows(1000, end - p * 1000 * timedelta(minutes=1))
        ]
        for p in range(pages)
    ]
    rates: dict[str, list[float]] = {"with rollups": [], "without": []}
    for i in range(4):
        mode = "with rollups" if i % 2 == 0 else "without"
        url = fresh_url(i)
        upkeep = rollup_upkeep_off() if mode == "without" else contextlib.nullcontext()
        with upkeep, open_storage(url) as storage:
            started = time.perf_counter()
            for batch in batches:
                storage.upsert_candles(batch, now=end + timedelta(days=1))
            rates[mode].append(pages * 1000 / (time.perf_counter() - started))
    return {mode: statistics.median(values) for mode, values in rates.items()}


def run(report: Report, opts: argparse.Namespace, workdir: Path) -> None:
    """The read API against its raw bounds on SQLite and (if a server can be had) PostgreSQL."""
    n = 60 * 1440 if opts.quick else 365 * 1440
    s = "7 read"
    log("[7] read API")
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(minutes=n)
    figures: dict[str, Any] = {}
    report.figures["read"] = figures
    span = f"{n / 1440:g} days"
    with contextlib.ExitStack() as stack:
        urls: list[tuple[str, str]] = []
        log(f"    building {n:,} candles in SQLite (raw executemany) ...")
        urls.append(
            ("SQLite", build_history_sqlite(workdir / "read.db", n, end - timedelta(minutes=1)))
        )
        try:
            admin_url, how = stack.enter_context(postgres_admin())
        except Exception as exc:
            report.skip("read postgres", f"no PostgreSQL server: {type(exc).__name__}: {exc}")
        else:
            log(f"    server: {how}; building {n:,} candles in PostgreSQL (COPY) ...")
            url = bench_database(admin_url, stack, "read")
            build_history_postgres(url, n, end - timedelta(minutes=1))
            urls.append(("PostgreSQL", url))
        for backend, url in urls:
            built = build_derived(url, rollups=True)
            log(f"    {backend}: rollups built in {built:.1f} s; catalog, then timing reads ...")
            catalog_dir = workdir / f"read-{backend.lower()}-catalog"
            catalog = catalog_rows(report, s, span, backend, url, catalog_dir)
            timed = read_figures(url, start, end, catalog_dir)
            figures[backend.lower()] = {
                "reads": timed, "rollup_build_s": built, "catalog": catalog,
            }  # fmt: skip
            raw = timed["raw 1m"]["median_ms"]
            one = timed["1m"]["median_ms"]
            rows = int(timed["1m"]["rows"])
            report.add(
                Row(
                    s, f"1m, {span}, {backend}", one, "ms", "<= 1.3 x raw", one / raw,
                    one <= 1.3 * raw, note=f"{rows:,} rows; raw fetchall {raw:,.0f} ms",
                )
            )  # fmt: skip
            arrow = timed["1m arrow"]["median_ms"]
            target = ARROW_TARGET[backend]
            report.add(
                Row(
                    s, f"1m as Arrow, {span}, {backend}", arrow, "ms", f"<= {target} x raw",
                    arrow / raw, arrow <= target * raw,
                    note=f"candles_arrow from the catalog; raw fetchall {raw:,.0f} ms",
                )
            )  # fmt: skip
            plain = timed["1m arrow, no catalog"]["median_ms"]
            report.add(
                Row(
                    s, f"1m as Arrow without catalog, {span}, {backend}", plain, "ms", "",
                    plain / raw, note="candles_arrow(catalog=False): the database alone "
                    "(information)",
                )
            )  # fmt: skip
            for res in ("1h", "1d"):
                value = timed[res]["median_ms"]
                group = timed[f"raw {res} group by"]["median_ms"]
                report.add(
                    Row(
                        s, f"{res}, {span}, {backend}", value, "ms", "<= 50 ms", value / 50,
                        value <= 50,
                        note=f"{int(timed[res]['rows']):,} buckets from the rollups; one SQL "
                        f"GROUP BY of the minutes: {group:,.0f} ms ({group / value:,.0f}x)",
                    )
                )  # fmt: skip
            five, five_arrow = timed["5m"]["median_ms"], timed["5m arrow"]["median_ms"]
            five_sql = timed["5m, no catalog"]["median_ms"]
            report.add(
                Row(
                    s, f"5m, {span}, {backend}", five, "ms", "", five / raw,
                    note=f"{int(timed['5m']['rows']):,} buckets consolidated from the catalog's "
                    f"minutes with Arrow (no table since schema 5); as Arrow {five_arrow:,.0f} "
                    f"ms; without the catalog (SQL GROUP BY) {five_sql:,.0f} ms; ratio against "
                    "the raw 1m fetchall (information)",
                )
            )  # fmt: skip
            report.add(
                Row(
                    s, f"rollup build (migration), {backend}", built, "s",
                    note=f"ohlc_coverage + the 1h/4h/1d rollups from {rows:,} candles "
                    "(information)",
                )
            )  # fmt: skip
        long_urls = list(urls)
        if len(urls) > 1:
            long_urls[1] = ("PostgreSQL", bench_database(admin_url, stack, "read_long"))
        figures["long"] = long_history(report, opts, workdir, long_urls)
        for backend, _ in urls:
            log(f"    rollup upkeep, {backend}: upsert_candles with and without the rollups ...")
            if backend == "SQLite":

                def fresh(i: int) -> str:
                    return fresh_sqlite(workdir / f"upkeep-{i}.db")
            else:

                def fresh(i: int) -> str:
                    return bench_database(admin_url, stack, f"upkeep_{i}")

            upkeep = rollup_upkeep(fresh, pages=20 if opts.quick else 100)
            figures[f"upkeep_rows_per_s_{backend.lower()}"] = upkeep
            kept, bare = upkeep["with rollups"], upkeep["without"]
            report.add(
                Row(
                    s, f"rollup upkeep, {backend}", kept, "rows/s", "", kept / bare,
                    note=f"upsert_candles with the rollups kept vs {bare:,.0f} rows/s without "
                    "(information: the writer's cost of the rollups)",
                )
            )  # fmt: skip
