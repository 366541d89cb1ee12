"""Section 1, ``backfill``: an end-to-end SQLite backfill against the raw executemany bound
and the simulator's serving bound; the engine's peak RSS.

SQLite end to end. A backfill-mode engine (``rest_rate_limit_per_s`` 1e6,
``price_history_reach`` an ISO date 350 days back, i.e. >= 500k candles; 60 days with
``--quick``) against the unthrottled simulator. *candles/s e2e* = candles stored / time from
``start()`` to ``Running.Backfilled`` (schema creation, the funding pass over 1 day and the
final state evaluation included). *raw executemany bound* = ``sqlite3.executemany`` of
``SQLITE_UPSERT_CANDLES_SQL`` with the same number of rows built in advance, 1000-row
transactions, the engine's pragmas, into a fresh file created with the engine's schema (the
faster of ascending and the engine's newest-page-first order). Ratio target >= 0.5.
*simulator serving bound* (info) = the same pages fetched by a bare aiohttp client that only
decodes them: if it is close to the e2e figure, the simulator, not the engine, is the limit.
*peak RSS* = ``VmHWM`` of the engine's process (the simulator runs elsewhere), target <= 150
MB; *RSS sampled* is the parent's max of ``VmRSS`` polled every 0.1 s (a cross-check).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import msgspec
from _common import Report, Row, iso_reach, log
from _data import engine_order, fresh_sqlite, sqlite_connect, synthetic_rows
from _processes import SimProcess, run_backfill_child

from qx_actors.storage import SQLITE_UPSERT_CANDLES_SQL, to_utc_text


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
    db = workdir / "backfill.db"
    url = f"sqlite:///{db}"
    log(f"[1] backfill SQLite: reach {reach} ({days} days), simulator in a child process")
    with SimProcess(workdir, name="sim-backfill") as sim:
        result = run_backfill_child(
            workdir, "engine-backfill", database=url, rest_url=sim.rest_url, reach=reach,
            timeout=240,
        )  # fmt: skip
        stats = sim.stats()
    log("    measuring the simulator serving bound (bare client, fresh simulator) ...")
    with SimProcess(workdir, name="sim-serving") as sim:
        serve_rate, _ = simulator_serving_bound(sim.rest_url, reach, timeout=60)
    candles = int(result["candles"])
    e2e = candles / result["elapsed_s"]
    log(f"    engine: {candles:,} candles in {result['elapsed_s']:.2f} s; raw bound ...")
    raw = raw_sqlite_bound(workdir, candles)
    bound = max(raw.values())
    ratio = e2e / bound
    report.figures[name] = {
        "reach": reach,
        "engine": result,
        "simulator": stats,
        "e2e_candles_per_s": e2e,
        "raw_rows_per_s": raw,
        "serving_bound_candles_per_s": serve_rate,
    }
    s = "1 backfill SQLite"
    report.add(Row(s, "candles stored", candles, note=f"{stats['requests']} requests"))
    report.add(
        Row(
            s, "backfill wall time", result["elapsed_s"], "s",
            note=f"start -> Backfilled; engine process CPU {result['cpu_s']:.1f} s, "
            f"simulator process CPU {stats['cpu_s']:.1f} s",
        )
    )  # fmt: skip
    report.add(Row(s, "raw executemany bound", bound, "rows/s", note=_orders(raw)))
    report.add(
        Row(s, "simulator serving bound", serve_rate, "candles/s", note="bare client, no DB")
    )
    report.add(
        Row(s, "candles/s end to end", e2e, "candles/s", ">= 0.5 x raw", ratio, ratio >= 0.5)
    )
    hwm = result["vm_hwm_mb"]
    report.add(
        Row(
            s, "engine peak RSS (VmHWM)", hwm, "MB", "<= 150 MB", hwm / 150, hwm <= 150,
            note=f"sampled max {result['rss_sampled_mb']:.0f} MB; simulator not counted",
        )
    )  # fmt: skip


def _orders(raw: dict[str, float]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v:,.0f}/s" for k, v in raw.items())
