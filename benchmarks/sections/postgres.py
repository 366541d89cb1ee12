"""Section 5, ``postgres``: an end-to-end PostgreSQL backfill against the bound of the same
driver's bulk path (COPY into the stage table + ``INSERT ... ON CONFLICT``).

Only if a server can be started with ``qx_actors.testing.postgres`` (PostgreSQL
binaries installed) or ``QX_BENCH_POSTGRES_URL`` is set (a role that may create databases:
``qx_bench_*`` databases are created and dropped). *candles/s e2e* as in 1 against the raw
bound of the same driver's bulk path (psycopg2 ``COPY`` into the temporary stage table +
``INSERT ... ON CONFLICT``, as the engine does, 1000-row transactions, COPY text built in
advance), target ratio >= 0.5.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
from _common import Report, Row, bench_database, iso_reach, log, postgres_admin
from _data import Candle5, engine_order, synthetic_rows
from _processes import SimProcess, run_backfill_child

from qx_actors.storage import POSTGRES_CREATE_STAGE_SQL, POSTGRES_UPSERT_CANDLES_SQL, open_storage
from qx_actors.storage._postgres import POSTGRES_STAGE_TABLE


def copy_text(rows: list[Candle5], cutoff: datetime) -> str:
    """Rows in the engine's COPY text format for the stage table."""
    return "".join(
        f"{t.isoformat()}\t{o!r}\t{h!r}\t{lo!r}\t{c!r}\t1.0\t{'t' if t < cutoff else 'f'}\n"
        for t, o, h, lo, c in rows
    )


def raw_postgres_bound(url: str, n: int) -> float:
    """rows/s of COPY into the stage table + ``INSERT ... ON CONFLICT``, 1000-row transactions."""
    open_storage(url).close()
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    cutoff = now - timedelta(hours=1)
    rows = synthetic_rows(n, now)
    chunks = [copy_text(rows[lo:hi], cutoff) for lo, hi in engine_order(n)]
    conn = psycopg2.connect(url, options="-c TimeZone=UTC")
    try:
        cur = conn.cursor()
        cur.execute(POSTGRES_CREATE_STAGE_SQL)
        conn.commit()
        started = time.perf_counter()
        for chunk in chunks:
            cur.copy_from(io.StringIO(chunk), POSTGRES_STAGE_TABLE)
            cur.execute(POSTGRES_UPSERT_CANDLES_SQL, (now, now))
            conn.commit()
        elapsed = time.perf_counter() - started
        cur.execute("SELECT COUNT(*) FROM ohlc_candles")
        stored = cur.fetchone()[0]
    finally:
        conn.close()
    if stored != n:
        raise RuntimeError(f"raw PostgreSQL bound stored {stored} rows, expected {n}")
    return n / elapsed


def run(report: Report, opts: argparse.Namespace, workdir: Path) -> None:
    """PostgreSQL e2e backfill vs the COPY bound."""
    days = 60 if opts.quick else 350
    s = "5 postgres"
    log("[5] PostgreSQL")
    with contextlib.ExitStack() as stack:
        try:
            admin_url, how = stack.enter_context(postgres_admin())
        except Exception as exc:
            report.skip("postgres", f"no PostgreSQL server: {type(exc).__name__}: {exc}")
            return
        log(f"    server: {how}")
        try:
            e2e_url = bench_database(admin_url, stack, "e2e")
        except Exception as exc:
            report.skip("postgres", f"can't create a database: {exc}")
            return
        reach = iso_reach(days, datetime.now(UTC))
        log(f"    e2e backfill into PostgreSQL, reach {reach} ({days} days) ...")
        # the days built before the clock starts, as in section 1
        with SimProcess(workdir, name="sim-postgres", cache_days=days + 2) as sim:
            sim.prewarm(datetime.fromisoformat(reach).replace(tzinfo=UTC))
            result = run_backfill_child(
                workdir, "engine-postgres", database=e2e_url, rest_url=sim.rest_url,
                reach=reach, timeout=300,
            )  # fmt: skip
        candles = int(result["candles"])
        e2e = candles / result["elapsed_s"]
        log(f"    engine: {candles:,} candles in {result['elapsed_s']:.2f} s; raw bound ...")
        raw = raw_postgres_bound(bench_database(admin_url, stack, "raw"), candles)
        ratio = e2e / raw
        report.add(Row(s, "candles stored", candles))
        report.add(Row(s, "raw COPY + upsert bound", raw, "rows/s", note="psycopg2, 1000/txn"))
        report.add(
            Row(s, "candles/s end to end", e2e, "candles/s", ">= 0.5 x raw", ratio, ratio >= 0.5)
        )
        report.add(Row(s, "engine peak RSS (VmHWM)", result["vm_hwm_mb"], "MB"))
        figures: dict[str, Any] = {
            "server": how, "reach": reach, "engine": result, "e2e_candles_per_s": e2e,
            "raw_rows_per_s": raw,
        }  # fmt: skip
        report.figures["postgres"] = figures
