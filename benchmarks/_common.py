"""What every benchmark section shares: result rows, progress output, engine configs, waiting
on a run, counting rows, and a PostgreSQL server to measure on."""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2

from qx_actors import configure_logging
from qx_actors.config import LoggingConfig, QxConfig, config_from_mapping
from qx_actors.status import SyncStatus
from qx_actors.testing import RunProbe
from qx_actors.testing.postgres import scratch_database, throwaway_server
from qx_actors.updates import UpdateReceiver

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


@dataclass
class Row:
    """One printed figure."""

    section: str
    metric: str
    value: float | None
    unit: str = ""
    target: str = ""
    ratio: float | None = None
    ok: bool | None = None  # None: information only
    note: str = ""

    def value_text(self) -> str:
        """The value formatted for the table."""
        if self.value is None:
            return "-"
        v = self.value
        if self.unit in ("ms", "s", "MB"):
            text = f"{v:,.1f}" if abs(v) < 1000 else f"{v:,.0f}"
        elif float(v).is_integer() or abs(v) >= 100:
            text = f"{v:,.0f}"
        else:
            text = f"{v:,.3g}"
        return f"{text} {self.unit}".strip()

    def result_text(self) -> str:
        """PASS / FAIL / info."""
        return "info" if self.ok is None else ("PASS" if self.ok else "FAIL")


@dataclass
class Report:
    """Every row and raw figure of a run."""

    rows: list[Row] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def add(self, row: Row) -> Row:
        """Record a row and print it right away (progress)."""
        self.rows.append(row)
        ratio = "" if row.ratio is None else f"  ratio {row.ratio:.3f}"
        target = f"  target {row.target}" if row.target else ""
        note = f"  ({row.note})" if row.note else ""
        log(f"  {row.metric}: {row.value_text()}{target}{ratio}  {row.result_text()}{note}")
        return row

    def skip(self, section: str, reason: str) -> None:
        """Record a skipped section."""
        self.skipped[section] = reason
        log(f"  skipped: {reason}")


def log(text: str) -> None:
    """Progress output (stderr, so that stdout carries only the final table)."""
    print(text, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..1) of a non-empty list."""
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    k = (len(data) - 1) * q
    lo = math.floor(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def rss_mb(pid: int | str, key: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` of a process in MB (``None`` when unreadable)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# --- engines --------------------------------------------------------------------------------


def engine_config(
    *,
    database: str,
    rest_url: str,
    stream_url: str,
    mode: str,
    rate: float,
    reach: str = "2d",
    stream: bool = True,
    log_file: str | None = None,
    queue_capacity: int = 1000,
    **sync: Any,
) -> QxConfig:
    """A validated engine config for the benchmarks (``sync``: more sync settings)."""
    return config_from_mapping(
        {
            "mode": mode,
            "database": database,
            "exchange": {"rest_url": rest_url, "stream_url": stream_url, "stream_enabled": stream},
            "sync": {
                "rest_rate_limit_per_s": rate,
                "rest_timeout_s": 60,
                "rest_error_cooldown_s": 1,
                "price_history_reach": reach,
                "funding_settlement_reach": "1d",
                "price_history_re_backfill_interval_s": 3600,
                "restart_interval_s": 1,
                "update_queue_capacity": queue_capacity,
                **sync,
            },
            "logging": {"format": "json", "level": "warning", "file": log_file},
        }
    )


def configure_quiet_logging(log_file: Path) -> None:
    """Send the engine's structured logs (warnings and up) to a file, not the terminal."""
    configure_logging(LoggingConfig(format="json", level="warning", file=str(log_file)))


def wait_status(
    receiver: UpdateReceiver, states: set[str], timeout: float
) -> tuple[SyncStatus, list[str]]:
    """Read updates until a status in ``states`` (or a terminal one); (status, names seen)."""
    probe = RunProbe.reading(receiver)
    status = probe.wait_for(
        lambda s: s.state.value in states or s.is_stopped,
        timeout,
        what=f"one of {sorted(states)}",
    )
    return status, [s.name for s in probe.statuses]


def iso_reach(days: int, now: datetime) -> str:
    """An ISO-date reach ``days`` before today (UTC)."""
    return (now - timedelta(days=days)).date().isoformat()


def count_rows(database: str, table: str) -> int:
    """``SELECT COUNT(*)`` on SQLite or PostgreSQL."""
    if database.startswith("sqlite:///"):
        conn = sqlite3.connect(database[len("sqlite:///") :])
        try:
            return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        finally:
            conn.close()
    pg = psycopg2.connect(database)
    try:
        with pg.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM {table}")
            row = cur.fetchone()
            return int(row[0]) if row else 0
    finally:
        pg.close()


# --- PostgreSQL -----------------------------------------------------------------------------


@contextlib.contextmanager
def postgres_admin() -> Iterator[tuple[str, str]]:
    """(admin URL, how) of a PostgreSQL server: QX_BENCH_POSTGRES_URL or a throwaway one."""
    env_url = os.environ.get("QX_BENCH_POSTGRES_URL")
    if env_url:
        yield env_url, "QX_BENCH_POSTGRES_URL"
        return
    with throwaway_server() as server:
        yield server.url, "throwaway server (qx_actors.testing.postgres)"


def bench_database(admin_url: str, stack: contextlib.ExitStack, what: str) -> str:
    """The URL of a fresh ``qx_bench_<pid>_<what>_*`` database, dropped when ``stack`` closes."""
    return stack.enter_context(scratch_database(admin_url, f"qx_bench_{os.getpid()}_{what}"))
