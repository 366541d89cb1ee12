"""Helpers of the storage tests: plain-driver SQL, wiping, building candles."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2

from qx_actors.domain.values import Candle
from qx_actors.storage import rollup_table
from qx_actors.storage._models import KEPT_ROLLUP_LEVELS

BASE = datetime(2026, 1, 1, tzinfo=UTC)


def minute(n: int) -> datetime:
    """``BASE`` plus ``n`` minutes."""
    return BASE + timedelta(minutes=n)


def candle(n: int, price: float = 100.0, volume: float = 1.0) -> Candle:
    """A candle at ``minute(n)``."""
    return Candle(minute(n), price, price + 2.0, price - 1.5, price + 0.5, volume)


def run_sql(url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement through a separate plain driver connection (``?`` placeholders)."""
    return run_statements(url, [(sql, params)])[-1]


def run_statements(
    url: str, statements: Sequence[tuple[str, Sequence[Any]]]
) -> list[list[tuple[Any, ...]]]:
    """Run statements (``?`` placeholders) one after the other, each committed, through one
    separate plain driver connection; the rows of each."""
    results: list[list[tuple[Any, ...]]] = []
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite:///") :], isolation_level=None)
        try:
            for sql, params in statements:
                results.append(conn.execute(sql, tuple(params)).fetchall())
            return results
        finally:
            conn.close()
    pg = psycopg2.connect(url, options="-c TimeZone=UTC")
    try:
        pg.autocommit = True
        with pg.cursor() as cur:
            for sql, params in statements:
                cur.execute(sql.replace("?", "%s"), tuple(params))
                results.append(cur.fetchall() if cur.description else [])
            return results
    finally:
        pg.close()


def other_sessions(url: str) -> list[tuple[int, str]]:
    """``(pid, application_name)`` of the other sessions on the PostgreSQL database of ``url``."""
    return [
        (int(pid), str(name))
        for pid, name in run_sql(
            url,
            "SELECT pid, application_name FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
    ]


def advisory_lock_pids(url: str) -> list[int]:
    """Pids holding an advisory lock in the PostgreSQL database of ``url``."""
    rows = run_sql(
        url,
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    return [int(pid) for (pid,) in rows]


def wipe(url: str) -> None:
    """Delete every stored row (between Hypothesis examples)."""
    rollups = tuple(rollup_table(name) for name, _, _ in KEPT_ROLLUP_LEVELS)
    tables = ("ohlc_candles", "ohlc_coverage", "ohlc_verified_empty", "ohlc_day_tokens", *rollups)
    run_statements(
        url,
        [(f"DELETE FROM {table}", ()) for table in (*tables, "price_ticks", "funding_settlements")],
    )
