"""Synthetic candles, and databases built from them with the raw bulk paths (what the engine's
figures are compared with, and the data the history and read sections measure on)."""

from __future__ import annotations

import contextlib
import io
import os
import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import psycopg2

from qx_actors.storage import SQLITE_UPSERT_CANDLES_SQL, open_storage, to_utc_text
from qx_actors.storage._day_tokens import rebuild_tokens
from qx_actors.storage._open import open_backend
from qx_actors.storage._queries import rebuild_coverage
from qx_actors.storage._rollups import rebuild_rollups

#: (time, open, high, low, close) of one synthetic minute.
Candle5 = tuple[datetime, float, float, float, float]

HOLES = 5  # holes of 10 minutes inside the gap-scan window, and 5 older ones


def synthetic_candle(start: datetime, i: int) -> Candle5:
    """The ``i``-th synthetic minute after ``start`` (a saw-tooth price, fixed wicks)."""
    price = 60_000.0 + (i % 2000) * 0.5
    return (start + timedelta(minutes=i), price, price + 4.5, price - 3.0, price + 0.5)


def synthetic_rows(n: int, end: datetime) -> list[Candle5]:
    """``n`` whole-minute (time, open, high, low, close) rows ending at ``end``, ascending."""
    start = end - timedelta(minutes=n - 1)
    return [synthetic_candle(start, i) for i in range(n)]


def history_rows(n: int, end: datetime) -> Iterator[list[Candle5]]:
    """``n`` candles ending at ``end`` with a few 10-minute holes, in chunks of 100k."""
    start = end - timedelta(minutes=n - 1)
    holes = {n - 1 - k * 5000 - j for k in range(1, HOLES + 1) for j in range(10)}
    holes |= {k * (n // 7) + j for k in range(1, HOLES + 1) for j in range(10)}
    chunk: list[Candle5] = []
    for i in range(n):
        if i in holes:
            continue
        chunk.append(synthetic_candle(start, i))
        if len(chunk) == 100_000:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def engine_order(n: int, page: int = 1000) -> list[tuple[int, int]]:
    """Page bounds in the engine's order: newest page first, each page ascending."""
    return [(max(hi - page, 0), hi) for hi in range(n, 0, -page)]


def sqlite_connect(path: str) -> sqlite3.Connection:
    """A connection with the engine's pragmas (WAL, synchronous NORMAL, 64 MB cache)."""
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in (
        "journal_mode=wal",
        "synchronous=NORMAL",
        "cache_size=-65536",
        "temp_store=MEMORY",
        "busy_timeout=5000",
    ):
        conn.execute(f"PRAGMA {pragma}")
    return conn


def fresh_sqlite(path: Path) -> str:
    """A new SQLite file with the engine's schema; its URL."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{path}{suffix}")
    url = f"sqlite:///{path}"
    open_storage(url).close()
    return url


def build_history_sqlite(path: Path, n: int, end: datetime) -> str:
    """``n`` candles into a fresh SQLite file with the raw executemany path."""
    url = fresh_sqlite(path)
    conn = sqlite_connect(str(path))
    stamp = to_utc_text(end)
    cutoff = end - timedelta(hours=1)
    for chunk in history_rows(n, end):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            SQLITE_UPSERT_CANDLES_SQL,
            [
                (int(t.timestamp()), o, h, lo, c, 1.0, stamp, stamp, t < cutoff)
                for t, o, h, lo, c in chunk
            ],
        )
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return url


def build_history_postgres(url: str, n: int, end: datetime) -> None:
    """``n`` candles into a fresh PostgreSQL database: COPY straight into the (empty) table."""
    open_storage(url).close()
    cutoff = end - timedelta(hours=1)
    stamp = end.isoformat()
    conn = psycopg2.connect(url, options="-c TimeZone=UTC")
    try:
        cur = conn.cursor()
        for chunk in history_rows(n, end):
            text = "".join(
                f"{t.isoformat()}\t{o!r}\t{h!r}\t{lo!r}\t{c!r}\t1.0\t{stamp}\t{stamp}\tf\t"
                f"{'t' if t < cutoff else 'f'}\n"
                for t, o, h, lo, c in chunk
            )
            cur.copy_from(
                io.StringIO(text),
                "ohlc_candles",
                columns=(
                    "time", "open", "high", "low", "close", "volume", "created_at",
                    "updated_at", "gap", "stable",
                ),
            )  # fmt: skip
            conn.commit()
        conn.autocommit = True
        cur.execute("VACUUM ANALYZE ohlc_candles")
    finally:
        conn.close()


def build_derived(url: str, *, rollups: bool) -> float:
    """Build ``ohlc_coverage``, the day tokens (and the rollups) from the candles as the schema
    migration does; seconds."""
    backend = open_backend(url)
    try:
        started = time.perf_counter()
        with backend.write_txn():
            rebuild_coverage(backend)
            rebuild_tokens(backend)
            if rollups:
                rebuild_rollups(backend)
        return time.perf_counter() - started
    finally:
        backend.close()
