"""Section 6, ``history``: the history-state evaluation (bounds and every hole, from
``ohlc_coverage``) on millions of stored candles, SQLite and PostgreSQL.

*history state* = ``Storage.price_history_facts`` (bounds and every hole of
the whole history, from the ``ohlc_coverage`` runs) + ``PriceHistoryState.evaluate`` on 3.5
million stored candles (350k with ``--quick``) with 10 holes (5 of them older than the
4-week gap-flag range) on SQLite and, when a server can be had as in 5, PostgreSQL (built
with the raw bulk paths, then ``ohlc_coverage`` built by the schema migration's
gaps-and-islands query, whose time is printed; PostgreSQL ``VACUUM ANALYZE``d as autovacuum
would), median of 5 after one warm-up, target <= 250 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import Report, Row, bench_database, log, postgres_admin
from _data import build_derived, build_history_postgres, build_history_sqlite

from qx_actors.domain.history import PriceHistoryState
from qx_actors.storage import open_storage


def time_history_state(url: str, *, repeats: int = 5) -> dict[str, float]:
    """ms of ``price_history_facts`` + ``PriceHistoryState.evaluate``: first, median, max."""
    storage = open_storage(url)
    try:
        timings: list[float] = []
        gaps = 0
        for _ in range(repeats + 1):
            started = time.perf_counter()
            now = datetime.now(UTC)
            facts = storage.price_history_facts()
            assert facts.earliest is not None
            state = PriceHistoryState.evaluate(facts, reach=facts.earliest, now=now)
            timings.append((time.perf_counter() - started) * 1000)
            gaps = len(state.gaps)
    finally:
        storage.close()
    rest = timings[1:]
    return {
        "first_ms": timings[0],
        "median_ms": statistics.median(rest),
        "max_ms": max(rest),
        "gaps": gaps,
    }


def run(report: Report, opts: argparse.Namespace, workdir: Path) -> None:
    """History-state evaluation on SQLite and (if a server can be had) PostgreSQL."""
    history = 350_000 if opts.quick else 3_500_000
    s = "6 history"
    log("[6] history state")
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    figures: dict[str, Any] = {}
    report.figures["history"] = figures
    with contextlib.ExitStack() as stack:
        urls: list[tuple[str, str]] = []
        log(f"    building {history:,} candles in SQLite (raw executemany) ...")
        started = time.perf_counter()
        urls.append(("SQLite", build_history_sqlite(workdir / "history.db", history, end)))
        log(f"    ... {time.perf_counter() - started:.1f} s")
        try:
            admin_url, how = stack.enter_context(postgres_admin())
        except Exception as exc:
            report.skip("history postgres", f"no PostgreSQL server: {type(exc).__name__}: {exc}")
        else:
            log(f"    server: {how}; building {history:,} candles in PostgreSQL (COPY) ...")
            started = time.perf_counter()
            url = bench_database(admin_url, stack, "history")
            build_history_postgres(url, history, end)
            log(f"    ... {time.perf_counter() - started:.1f} s")
            urls.append(("PostgreSQL", url))
        for backend, url in urls:
            built = build_derived(url, rollups=False)
            timed = time_history_state(url)
            figures[backend.lower()] = {"state": timed, "coverage_build_s": built}
            med = timed["median_ms"]
            report.add(
                Row(
                    s, f"history state, {backend}", med, "ms", "<= 250 ms", med / 250, med <= 250,
                    note=f"{history / 1e6:g}M candles, every hole; first {timed['first_ms']:.0f}"
                    f" ms, max {timed['max_ms']:.0f} ms, {timed['gaps']} gaps",
                )
            )  # fmt: skip
            report.add(
                Row(
                    s, f"coverage migration, {backend}", built, "s",
                    note=f"ohlc_coverage built once from {history / 1e6:g}M candles (information)",
                )
            )  # fmt: skip
