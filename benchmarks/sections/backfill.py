"""Section 1, ``backfill``: an end-to-end SQLite backfill against the raw executemany bound
and the simulator's serving bound; the engine's peak RSS.

SQLite end to end. A backfill-mode engine (``rest_rate_limit_per_s`` 1e6,
``price_history_reach`` an ISO date 350 days back, i.e. >= 500k candles; 60 days with
``--quick``) against the unthrottled simulator. *candles/s e2e* = candles stored / time from
``start()`` to ``Running.Backfilled`` (schema creation, the funding pass over 1 day and the
final state evaluation included). *raw executemany bound* = ``sqlite3.executemany`` of
``SQLITE_UPSERT_CANDLES_SQL`` with the same number of rows built in advance, 1000-row
transactions, the engine's pragmas, into a fresh file created with the engine's schema (the
faster of ascending and the engine's newest-page-first order). Ratio target >= 0.5. Each side
is the best of :data:`RUNS` runs (a fresh database each; ``--quick``: one), as ``timeit``
takes the best of its repeats: a run is only ever slowed down by what else the machine does,
and one 2-3 s run of each side was seen to swing by a third on a busy machine; every run is in
the note.
*simulator serving bound* (info) = the same pages fetched by a bare aiohttp client that only
decodes them: if it is close to the e2e figure, the simulator, not the engine, is the limit.
The simulator builds and encodes the days of the reach before any clock starts (it serves
them from memory, as the exchange serves from its database): generating a year of random
walk took it more CPU than the engine's whole backfill, on the same 2 cores.
*peak RSS* = ``VmHWM`` of the engine's process (the simulator runs elsewhere), target <= 150
MB; *RSS sampled* is the parent's max of ``VmRSS`` polled every 0.1 s (a cross-check).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from _common import Report, Row, iso_reach, log
from _data import engine_order, fresh_sqlite, sqlite_connect, synthetic_rows
from _processes import SimProcess, run_backfill_child

from qx_actors.storage import SQLITE_UPSERT_CANDLES_SQL, to_utc_text

#: Runs of each side (end to end, raw bound) of which the best is taken.
RUNS = 3


def raw_sqlite_bound(workdir: Path, n: int) -> dict[str, float]:
    """rows/s of ``executemany(SQLITE_UPSERT_CANDLES_SQL)`` in 1000-row transactions."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    stamp = to_utc_text(now)
    cutoff = now - timedelta(hours=1)
    params = [
        (int(t.timestamp()), o, h, lo, c, 1.0, stamp, stamp, t < cutoff)
        for t, o, h, lo, c in synthetic_rows(n, now)
    ]
    results = {}
    for order in ("ascending", "engine_order"):
        path = workdir / f"raw-{order}.db"
        fresh_sqlite(path)
        conn = sqlite_connect(str(path))
        chunks = (
            [(i, min(i + 1000, n)) for i in range(0, n, 1000)]
            if order == "ascending"
            else engine_order(n)
        )
        started = time.perf_counter()
        for lo_i, hi_i in chunks:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(SQLITE_UPSERT_CANDLES_SQL, params[lo_i:hi_i])
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - started
        stored = conn.execute("SELECT COUNT(*) FROM ohlc_candles").fetchone()[0]
        conn.close()
        if stored != n:
            raise RuntimeError(f"raw bound stored {stored} rows, expected {n}")
        results[order] = n / elapsed
    return results


def simulator_serving_bound(rest_url: str, reach: str, timeout: float) -> tuple[float, int]:
    """Candles/s a bare aiohttp client pages through ``[reach, now]`` at (decode only)."""
    start = datetime.fromisoformat(reach).replace(tzinfo=UTC)

    async def run() -> tuple[float, int]:
        total = 0
        cursor: str | None = None
        params = {"from": start.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "limit": "1000"}
        decoder = msgspec.json.Decoder()
        started = time.perf_counter()
        async with aiohttp.ClientSession() as session:
            params["to"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            while time.perf_counter() - started < timeout:
                query = dict(params, cursor=cursor) if cursor else params
                async with session.get(f"{rest_url}/v3/futures/candles", params=query) as resp:
                    body = decoder.decode(await resp.read())
                total += len(body["data"])
                cursor = body.get("nextCursor")
                if not cursor:
                    break
        return total / (time.perf_counter() - started), total

    return asyncio.run(run())


def run(report: Report, opts: argparse.Namespace, workdir: Path) -> None:
    """End-to-end SQLite backfill against the raw executemany bound; peak RSS."""
    name = "backfill"
    days = 60 if opts.quick else 350
    reach = iso_reach(days, datetime.now(UTC))
    runs = 1 if opts.quick else RUNS
    results: list[dict[str, Any]] = []
    log(f"[1] backfill SQLite: reach {reach} ({days} days), simulator in a child process")
    start = datetime.fromisoformat(reach).replace(tzinfo=UTC)
    with SimProcess(workdir, name="sim-backfill", cache_days=days + 2) as sim:
        sim.prewarm(start)
        for i in range(runs):
            db = workdir / f"backfill-{i}.db"
            result = run_backfill_child(
                workdir, f"engine-backfill-{i}", database=f"sqlite:///{db}",
                rest_url=sim.rest_url, reach=reach, timeout=240,
            )  # fmt: skip
            results.append(result)
            log(f"    engine run {i + 1}: {int(result['candles']):,} candles in "
                f"{result['elapsed_s']:.2f} s")  # fmt: skip
        stats = sim.stats()
    log("    measuring the simulator serving bound (bare client, fresh simulator) ...")
    with SimProcess(workdir, name="sim-serving", cache_days=days + 2) as sim:
        sim.prewarm(start)
        serve_rate, _ = simulator_serving_bound(sim.rest_url, reach, timeout=60)
    result = min(results, key=lambda r: r["elapsed_s"] / int(r["candles"]))
    candles = int(result["candles"])
    e2e = candles / result["elapsed_s"]
    log("    raw bound ...")
    raws = [raw_sqlite_bound(workdir, candles) for _ in range(runs)]
    raw = {order: max(r[order] for r in raws) for order in raws[0]}
    bound = max(raw.values())
    ratio = e2e / bound
    all_e2e = ", ".join(f"{int(r['candles']) / r['elapsed_s']:,.0f}" for r in results)
    all_raw = ", ".join(f"{max(r.values()):,.0f}" for r in raws)
    report.figures[name] = {
        "reach": reach,
        "engine": result,
        "simulator": stats,
        "e2e_candles_per_s": e2e,
        "e2e_runs_candles_per_s": [int(r["candles"]) / r["elapsed_s"] for r in results],
        "raw_runs_rows_per_s": raws,
        "raw_rows_per_s": raw,
        "serving_bound_candles_per_s": serve_rate,
    }
    s = "1 backfill SQLite"
    requests = f"{stats['requests']} requests in {runs} runs"
    report.add(Row(s, "candles stored", candles, note=requests))
    report.add(
        Row(
            s, "backfill wall time", result["elapsed_s"], "s",
            note=f"start -> Backfilled; engine process CPU {result['cpu_s']:.1f} s, "
            f"simulator process CPU {stats['cpu_s']:.1f} s in {runs} runs",
        )
    )  # fmt: skip
    report.add(
        Row(s, "raw executemany bound", bound, "rows/s", note=f"{_orders(raw)}; runs {all_raw}")
    )
    report.add(
        Row(s, "simulator serving bound", serve_rate, "candles/s", note="bare client, no DB")
    )
    report.add(
        Row(
            s, "candles/s end to end", e2e, "candles/s", ">= 0.5 x raw", ratio, ratio >= 0.5,
            note=f"best of runs {all_e2e}",
        )
    )  # fmt: skip
    hwm = result["vm_hwm_mb"]
    report.add(
        Row(
            s, "engine peak RSS (VmHWM)", hwm, "MB", "<= 150 MB", hwm / 150, hwm <= 150,
            note=f"sampled max {result['rss_sampled_mb']:.0f} MB; simulator not counted",
        )
    )  # fmt: skip


def _orders(raw: dict[str, float]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v:,.0f}/s" for k, v in raw.items())
