"""qx_actors benchmarks: one script that prints a table of figures and ratios (SPEC §10).

Run from the repository root (after ``pip install -e '.[dev]'``)::

    python benchmarks/bench.py                      # everything (about 4-6 minutes on 2 cores)
    python benchmarks/bench.py --quick              # smaller sizes (about 1 minute)
    python benchmarks/bench.py --sections backfill,ticks --json figures.json

Sections (``--sections``, comma separated; default all): ``backfill``, ``ratelimit``,
``ticks``, ``shutdown``, ``postgres``, ``history``, ``read``. Everything talks to 127.0.0.1
only; scratch files go to a temporary directory that is removed at the end (``--keep`` keeps
it, with the child logs).
Each figure is printed as a row ``metric | value | target | ratio | result``; ``--json FILE``
dumps every row plus the raw figures. The exit code is 0 whatever the results (this is a
measurement, not a test); a section that could not run prints ``skipped: reason``.

Processes: the LN Markets simulator always runs in a child process (this script re-executed
as ``bench.py _sim``: the same ``Simulator`` that ``qx-actors simulate`` serves, plus a
line protocol on stdin/stdout so that the parent can read its request and sent-tick
counters). The engine of section 1 and 5 runs in another child (``bench.py _backfill``) so that
its peak RSS is its own; the engines of sections 2-4 run in this process.

What each figure means
----------------------
1. ``backfill`` — SQLite end to end. A backfill-mode engine (``rest_rate_limit_per_s`` 1e6,
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
2. ``ratelimit`` — 200 requests (40 with ``--quick``) at ``rest_rate_limit_per_s`` 20 against
   the simulator limiting at 20/s: wall time from ``start()`` to ``Running.Backfilled`` against
   the ``requests / rate`` bound, requests counted by the simulator (candle pages + the one
   funding page). Target ratio <= 1.05; 429 answers are reported (target 0).
3. ``ticks`` — live mode (stream on, default lookback: the last hour), the simulator sending
   ``--tick-rate`` ticks/s (default 22000, 10 % above the target) for 10 s (4 s with
   ``--quick``). *committed ticks/s* = ticks stored / (last commit - first send).
   *latency* = time a tick's ``PriceTick`` update (published by the engine after the DB
   commit) reaches an update receiver in this process minus the wall time the simulator
   started sending that tick's batch (the tick's own ``time`` can't be used: above 1000
   ticks/s the simulator's tick times run ahead of the clock). p50/p99 target <= 50 ms.
   *lost* = ticks the simulator sent - rows in ``price_ticks`` after a graceful shutdown
   (target 0). *offered* is what the simulator achieved; when it is below the target rate
   the load generator, not the engine, is the limit.
4. ``shutdown`` — 20 runs (5 with ``--quick``) of a live engine, each synced and receiving
   ticks at 200/s: wall time of ``controller.shutdown()`` (until every actor thread is joined),
   p50/p99/max, target p99 <= 250 ms.
5. ``postgres`` — only if a server can be started with ``tests/pg_server.py`` (PostgreSQL
   binaries installed) or ``QX_BENCH_POSTGRES_URL`` is set (a role that may create databases:
   ``qx_bench_*`` databases are created and dropped). *candles/s e2e* as in 1 against the raw
   bound of the same driver's bulk path (psycopg2 ``COPY`` into the temporary stage table +
   ``INSERT ... ON CONFLICT``, as the engine does, 1000-row transactions, COPY text built in
   advance), target ratio >= 0.5.
6. ``history`` — *history state* = ``Storage.price_history_facts`` (bounds and every hole of
   the whole history, from the ``ohlc_coverage`` runs) + ``PriceHistoryState.evaluate`` on 3.5
   million stored candles (350k with ``--quick``) with 10 holes (5 of them older than the
   4-week gap-flag range) on SQLite and, when a server can be had as in 5, PostgreSQL (built
   with the raw bulk paths, then ``ohlc_coverage`` built by the schema migration's
   gaps-and-islands query, whose time is printed; PostgreSQL ``VACUUM ANALYZE``d as autovacuum
   would), median of 5 after one warm-up, target <= 250 ms.
7. ``read`` — the read API on one year of 1-minute candles (525,600 minus 100 in holes; 60
   days with ``--quick``), on SQLite and, when a server can be had as in 5, PostgreSQL (built
   with the raw bulk paths, then ``ohlc_coverage`` and the rollups built by the schema
   migration, whose time is printed). Each read beside its raw bound, measured in the same
   run, interleaved, median of 5 after one warm-up: *1m* = ``Database.candles(start, end)``
   against a plain ``fetchall`` (sqlite3 / psycopg2) of the same columns of the same rows,
   target ratio <= 1.3; *1m as Arrow* = ``Database.candles_arrow`` against the same bound
   (information); *1h*, *1d* = ``Database.candles(start, end, "1h"/"1d")`` answered from the
   rollups, target <= 50 ms, beside one ``GROUP BY`` of the minutes in SQL (what consolidating
   at read time costs at least). *rollup upkeep* (information): ``Storage.upsert_candles`` of
   100 pages of 1000 minutes into a fresh SQLite file with the rollups kept against the same
   with their upkeep switched off — what the writer pays for them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import os
import platform
import queue
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MARK = "@@qx-bench "
SECTIONS = ("backfill", "ratelimit", "ticks", "shutdown", "postgres", "history", "read")
MB = 1024 * 1024


# --- results ------------------------------------------------------------------------------


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


# --- children: line protocol --------------------------------------------------------------


def send_line(obj: Any) -> None:
    """Child side: one protocol line on stdout."""
    sys.stdout.write(MARK + json.dumps(obj) + "\n")
    sys.stdout.flush()


class Child:
    """This script re-executed as a child (``_sim`` / ``_backfill``) with a line protocol."""

    def __init__(self, argv: list[str], name: str, workdir: Path) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.stderr.log"
        self._stderr = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
            cwd=str(ROOT),
        )
        self._lines: queue.Queue[Any] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"bench-{name}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(MARK):
                self._lines.put(json.loads(line[len(MARK) :]))
        self._lines.put(None)

    def recv(self, timeout: float, poll: Callable[[], None] | None = None) -> Any:
        """The next protocol message; ``poll()`` is called every 0.1 s while waiting."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no answer within {timeout:g} s")
            try:
                msg = self._lines.get(timeout=min(left, 0.1))
            except queue.Empty:
                if poll is not None:
                    poll()
                continue
            if msg is None:
                raise RuntimeError(f"{self.name} exited ({self.proc.wait()}): {self.tail()}")
            if isinstance(msg, dict) and "error" in msg:
                raise RuntimeError(f"{self.name}: {msg['error']}")
            return msg

    def ask(self, command: str, timeout: float = 30.0) -> Any:
        """Send a command line and wait for the answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.recv(timeout)

    def tail(self, chars: int = 1500) -> str:
        """The end of the child's stderr."""
        self._stderr.flush()
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    def close(self) -> None:
        """Ask it to quit; terminate / kill this child (by pid) if it does not."""
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(3)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        with contextlib.suppress(Exception):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        self._stderr.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SimProcess(Child):
    """The simulator in a child process."""

    def __init__(
        self, workdir: Path, *, rate_limit: float = 0.0, tick_rate: float = 0.0, name: str = "sim"
    ) -> None:
        super().__init__(
            ["_sim", "--rate-limit", str(rate_limit), "--tick-rate", str(tick_rate)], name, workdir
        )
        try:
            info = self.recv(30.0)
        except BaseException:
            self.close()
            raise
        self.rest_url: str = info["rest_url"]
        self.stream_url: str = info["stream_url"]

    def stats(self) -> dict[str, Any]:
        """Requests answered (by status) and ticks sent so far."""
        result: dict[str, Any] = self.ask("stats")
        return result


def child_sim(args: argparse.Namespace) -> int:
    """``bench.py _sim``: serve the simulator; answer commands on stdin."""
    from qx_actors.simulator import Simulator, SimulatorConfig

    sim = Simulator(
        SimulatorConfig(
            seed=42,
            rate_limit_per_s=args.rate_limit or None,
            rate_limit_burst=1,
            tick_rate_per_s=args.tick_rate,
        )
    )
    # Record when each batch of ticks started to be sent (wall clock): tick times can't say.
    batches: list[tuple[int, int, float]] = []
    stream = sim.stream
    original_emit = stream.emit

    async def emit(n: int) -> Any:
        started = time.time()
        ticks = await original_emit(n)
        if ticks:
            first = round(ticks[0].time.timestamp() * 1000)
            last = round(ticks[-1].time.timestamp() * 1000)
            if last - first == len(ticks) - 1:
                batches.append((first, len(ticks), started))
            else:  # not consecutive (faults): one entry per tick
                batches.extend((round(t.time.timestamp() * 1000), 1, started) for t in ticks)
        return ticks

    stream.emit = emit  # type: ignore[method-assign]
    sim.start()
    send_line({"rest_url": sim.rest_url, "stream_url": sim.stream_url, "pid": os.getpid()})
    try:
        for line in sys.stdin:
            cmd, *rest = line.split()
            if cmd == "quit":
                break
            if cmd == "stats":
                by_status: dict[str, int] = {}
                for record in sim.requests():
                    key = f"{record.endpoint}:{record.status}"
                    by_status[key] = by_status.get(key, 0) + 1
                send_line(
                    {
                        "requests": sum(by_status.values()),
                        "by_status": by_status,
                        "sent": len(stream.sent_ticks()),
                        "cpu_s": time.process_time(),
                    }
                )
            elif cmd == "ticks":
                send_line({"sent": len(stream.sent_ticks()), "batches": list(batches)})
            elif cmd == "tick_rate":
                sim.set_tick_rate(float(rest[0]))
                send_line({"ok": True})
            elif cmd == "subscribers":
                send_line({"ok": sim.wait_for_subscribers(int(rest[0]), float(rest[1]))})
            else:
                send_line({"error": f"unknown command {cmd!r}"})
    finally:
        sim.stop()
    return 0


# --- engine helpers -------------------------------------------------------------------------


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
) -> Any:
    """A validated engine config for the benchmarks."""
    from qx_actors.config import config_from_mapping

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
            },
            "logging": {"format": "json", "level": "warning", "file": log_file},
        }
    )


def configure_quiet_logging(log_file: Path) -> None:
    """Send the engine's structured logs (warnings and up) to a file, not the terminal."""
    from qx_actors import configure_logging
    from qx_actors.config import LoggingConfig

    configure_logging(LoggingConfig(format="json", level="warning", file=str(log_file)))


def wait_status(receiver: Any, states: set[str], timeout: float) -> tuple[Any, list[str]]:
    """Read updates until a status in ``states`` (or a terminal one); (status, names seen)."""
    from qx_actors.updates import StatusUpdate

    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"none of {sorted(states)} within {timeout:g} s (saw {seen})")
        update = receiver.get(left)
        if isinstance(update, StatusUpdate):
            seen.append(update.status.name)
            if update.status.state.value in states or update.status.is_stopped:
                return update.status, seen


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
    import psycopg2

    pg = psycopg2.connect(database)
    try:
        with pg.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM {table}")
            row = cur.fetchone()
            return int(row[0]) if row else 0
    finally:
        pg.close()


def child_backfill(args: argparse.Namespace) -> int:
    """``bench.py _backfill``: one backfill run to ``Running.Backfilled``; report; shut down."""
    from qx_actors import SyncEngine

    configure_quiet_logging(Path(args.log_file))
    config = engine_config(
        database=args.database,
        rest_url=args.rest_url,
        stream_url="ws://127.0.0.1:9/v1",
        mode="backfill",
        rate=args.rate,
        reach=args.reach,
        stream=False,
        log_file=args.log_file,
    )
    engine = SyncEngine(config)
    receiver = engine.update_receiver()
    started = time.perf_counter()
    cpu_started = time.process_time()
    controller = engine.start()
    status, seen = wait_status(receiver, {"Running.Backfilled"}, args.timeout)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    hwm = rss_mb("self", "VmHWM")
    candles = count_rows(args.database, "ohlc_candles")
    if not status.is_stopped:
        controller.shutdown()
    send_line(
        {
            "status": status.name,
            "seen": seen,
            "elapsed_s": elapsed,
            "cpu_s": cpu,
            "candles": candles,
            "vm_hwm_mb": hwm,
        }
        if status.error is None
        else {"error": f"backfill ended {status.name}: {status.error!r} (statuses {seen})"}
    )
    return 0


def run_backfill_child(
    workdir: Path, name: str, *, database: str, rest_url: str, reach: str, timeout: float
) -> dict[str, Any]:
    """Run :func:`child_backfill` in a child process, sampling its RSS; its report + samples."""
    argv = [
        "_backfill", "--database", database, "--rest-url", rest_url, "--reach", reach,
        "--rate", "1000000", "--timeout", str(timeout),
        "--log-file", str(workdir / f"{name}.engine.log"),
    ]  # fmt: skip
    peak = 0.0
    with Child(argv, name, workdir) as child:

        def sample() -> None:
            nonlocal peak
            value = rss_mb(child.pid, "VmRSS")
            if value is not None:
                peak = max(peak, value)

        result: dict[str, Any] = child.recv(timeout + 30, poll=sample)
    result["rss_sampled_mb"] = peak
    return result


# --- raw bounds ---------------------------------------------------------------------------


def synthetic_rows(n: int, end: datetime) -> list[tuple[datetime, float, float, float, float]]:
    """``n`` whole-minute (time, open, high, low, close) rows ending at ``end``, ascending."""
    start = end - timedelta(minutes=n - 1)
    rows = []
    for i in range(n):
        price = 60_000.0 + (i % 2000) * 0.5
        rows.append((start + timedelta(minutes=i), price, price + 4.5, price - 3.0, price + 0.5))
    return rows


def engine_order(n: int, page: int = 1000) -> list[tuple[int, int]]:
    """Page bounds in the engine's order: newest page first, each page ascending."""
    bounds = [(max(hi - page, 0), hi) for hi in range(n, 0, -page)]
    return bounds


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
    from qx_actors.storage import open_storage

    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{path}{suffix}")
    url = f"sqlite:///{path}"
    open_storage(url).close()
    return url


def raw_sqlite_bound(workdir: Path, n: int) -> dict[str, float]:
    """rows/s of ``executemany(SQLITE_UPSERT_CANDLES_SQL)`` in 1000-row transactions."""
    from qx_actors.storage import SQLITE_UPSERT_CANDLES_SQL, to_utc_text

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


def copy_text(rows: list[tuple[datetime, float, float, float, float]], cutoff: datetime) -> str:
    """Rows in the engine's COPY text format for the stage table."""
    return "".join(
        f"{t.isoformat()}\t{o!r}\t{h!r}\t{lo!r}\t{c!r}\t1.0\t{'t' if t < cutoff else 'f'}\n"
        for t, o, h, lo, c in rows
    )


def raw_postgres_bound(url: str, n: int) -> float:
    """rows/s of COPY into the stage table + ``INSERT ... ON CONFLICT``, 1000-row transactions."""
    import psycopg2

    from qx_actors.storage import (
        POSTGRES_CREATE_STAGE_SQL,
        POSTGRES_UPSERT_CANDLES_SQL,
        open_storage,
    )
    from qx_actors.storage._backend import POSTGRES_STAGE_TABLE

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


def simulator_serving_bound(rest_url: str, reach: str, timeout: float) -> tuple[float, int]:
    """Candles/s a bare aiohttp client pages through ``[reach, now]`` at (decode only)."""
    import aiohttp
    import msgspec

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


# --- section 1: backfill SQLite -------------------------------------------------------------


def section_backfill(report: Report, opts: argparse.Namespace, workdir: Path) -> None:
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


# --- section 2: rate-limited backfill -------------------------------------------------------


def reach_for_requests(requests: int, now: datetime) -> str:
    """An ISO-date reach so that ``[reach, now]`` is about ``requests`` pages of 1000 candles."""
    minutes_today = now.hour * 60 + now.minute + 1
    days = max(1, round((requests * 1000 - minutes_today) / 1440))
    return iso_reach(days, now)


def section_ratelimit(report: Report, opts: argparse.Namespace, workdir: Path) -> None:
    """Wall time of a backfill paced at 20 req/s against ``requests / rate``."""
    from qx_actors import SyncEngine

    rate = 20.0
    planned = 40 if opts.quick else 200
    reach = reach_for_requests(planned - 1, datetime.now(UTC))  # + 1 funding request
    url = f"sqlite:///{workdir / 'ratelimit.db'}"
    log(f"[2] rate-limited backfill: ~{planned} requests at {rate:g}/s, reach {reach}")
    with SimProcess(workdir, rate_limit=rate, name="sim-ratelimit") as sim:
        config = engine_config(
            database=url, rest_url=sim.rest_url, stream_url=sim.stream_url, mode="backfill",
            rate=rate, reach=reach, stream=False, log_file=str(workdir / "ratelimit.engine.log"),
        )  # fmt: skip
        engine = SyncEngine(config)
        receiver = engine.update_receiver()
        started = time.perf_counter()
        controller = engine.start()
        status, seen = wait_status(receiver, {"Running.Backfilled"}, planned / rate * 3 + 30)
        elapsed = time.perf_counter() - started
        stats = sim.stats()
        if not status.is_stopped:
            controller.shutdown()
    if status.error is not None:
        raise RuntimeError(f"rate-limited backfill ended {status.name}: {status.error!r}")
    requests = int(stats["requests"])
    limited = sum(v for k, v in stats["by_status"].items() if k.endswith(":429"))
    bound = requests / rate
    ratio = elapsed / bound
    report.figures["ratelimit"] = {
        "reach": reach, "rate": rate, "requests": requests, "by_status": stats["by_status"],
        "elapsed_s": elapsed, "bound_s": bound, "statuses": seen,
    }  # fmt: skip
    s = "2 rate-limited backfill"
    report.add(Row(s, "requests (simulator count)", requests, note=f"at {rate:g} req/s"))
    report.add(Row(s, "429 answers", limited, target="0", ok=limited == 0))
    report.add(
        Row(
            s, "wall time", elapsed, "s", f"<= 1.05 x {bound:.2f} s", ratio, ratio <= 1.05,
            note="bound = requests / rate",
        )
    )  # fmt: skip


# --- section 3: ticks -----------------------------------------------------------------------


class TickCollector:
    """Reads an update receiver on a thread: (arrival wall time, tick) of every PriceTick."""

    def __init__(self, receiver: Any) -> None:
        self.receiver = receiver
        self.arrivals: list[tuple[float, Any]] = []
        self.statuses: list[Any] = []
        self.lagged = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-ticks", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from qx_actors.updates import Lagged, PriceTickUpdate, ReceiverClosed, StatusUpdate

        arrivals = self.arrivals
        now = time.time
        get = self.receiver.get
        while not self._stop.is_set():
            try:
                update = get(0.2)
            except TimeoutError:
                continue
            except ReceiverClosed:
                return
            if type(update) is PriceTickUpdate:
                arrivals.append((now(), update.tick))
            elif isinstance(update, StatusUpdate):
                self.statuses.append(update.status)
            elif isinstance(update, Lagged):
                self.lagged += update.missed

    def wait_synced(self, timeout: float) -> bool:
        """Until a ``Running.Synced`` status was read."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(s.name == "Running.Synced" for s in self.statuses):
                return True
            if any(s.is_stopped for s in self.statuses):
                return False
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        """Stop reading."""
        self._stop.set()
        self._thread.join(5)


def send_times(batches: list[list[float]]) -> dict[int, float]:
    """tick epoch ms -> wall time its batch started to be sent."""
    times: dict[int, float] = {}
    for first, n, started in batches:
        for ms in range(int(first), int(first) + int(n)):
            times[ms] = started
    return times


def section_ticks(report: Report, opts: argparse.Namespace, workdir: Path) -> None:
    """Committed ticks/s, tick-to-commit latency, lost ticks."""
    from qx_actors import SyncEngine

    rate = float(opts.tick_rate)
    duration = 4.0 if opts.quick else 10.0
    url = f"sqlite:///{workdir / 'ticks.db'}"
    log(f"[3] ticks: simulator (child process) at {rate:,.0f} ticks/s for {duration:g} s")
    with SimProcess(workdir, tick_rate=0, name="sim-ticks") as sim:
        config = engine_config(
            database=url, rest_url=sim.rest_url, stream_url=sim.stream_url, mode="live",
            rate=1_000_000, stream=True, log_file=str(workdir / "ticks.engine.log"),
            queue_capacity=10_000_000,
        )  # fmt: skip
        engine = SyncEngine(config)
        collector = TickCollector(engine.update_receiver())
        controller = engine.start()
        try:
            if not sim.ask("subscribers 1 30", timeout=40)["ok"]:
                raise RuntimeError("the engine did not subscribe to the stream within 30 s")
            sim.ask(f"tick_rate {rate}")
            time.sleep(duration)
            sim.ask("tick_rate 0")
            time.sleep(0.3)  # the producer notices the rate change
            sent_info = sim.ask("ticks", timeout=60)
            sent = int(sent_info["sent"])
            # wait for the engine to commit what was sent (bounded)
            deadline = time.monotonic() + 15
            while len(collector.arrivals) < sent and time.monotonic() < deadline:
                time.sleep(0.05)
            synced = any(s.name == "Running.Synced" for s in collector.statuses)
        finally:
            shutdown_started = time.perf_counter()
            with contextlib.suppress(Exception):
                controller.shutdown()
            shutdown_s = time.perf_counter() - shutdown_started
            collector.stop()
    stored = count_rows(url, "price_ticks")
    sends = send_times(sent_info["batches"])
    latencies: list[float] = []
    unmatched = 0
    for arrived, tick in collector.arrivals:
        sent_at = sends.get(round(tick.time.timestamp() * 1000))
        if sent_at is None:
            unmatched += 1
        else:
            latencies.append((arrived - sent_at) * 1000)
    batches = sent_info["batches"]
    first_send = min(b[2] for b in batches) if batches else float("nan")
    last_send = max(b[2] for b in batches) if batches else float("nan")
    last_commit = collector.arrivals[-1][0] if collector.arrivals else float("nan")
    offered = sent / max(last_send - first_send, 1e-9)
    committed = len(collector.arrivals) / max(last_commit - first_send, 1e-9)
    lost = sent - stored
    p50 = percentile(latencies, 0.5) if latencies else float("nan")
    p99 = percentile(latencies, 0.99) if latencies else float("nan")
    report.figures["ticks"] = {
        "target_rate": rate, "duration_s": duration, "sent": sent, "stored": stored,
        "observed_commits": len(collector.arrivals), "lagged": collector.lagged,
        "offered_per_s": offered, "committed_per_s": committed, "latency_ms_p50": p50,
        "latency_ms_p99": p99, "latency_ms_max": max(latencies, default=float("nan")),
        "unmatched": unmatched, "synced": synced, "shutdown_s": shutdown_s,
    }  # fmt: skip
    s = "3 ticks"
    report.add(Row(s, "ticks sent (simulator)", sent, note=f"offered {offered:,.0f}/s"))
    report.add(
        Row(
            s, "committed ticks/s", committed, "ticks/s", ">= 20,000/s", committed / 20_000,
            committed >= 20_000,
            note="stored / (last commit - first send)"
            + ("" if offered >= 20_000 else "; load generator below target"),
        )
    )  # fmt: skip
    report.add(Row(s, "tick-to-commit p50", p50, "ms", "<= 50 ms", p50 / 50, p50 <= 50))
    report.add(Row(s, "tick-to-commit p99", p99, "ms", "<= 50 ms", p99 / 50, p99 <= 50))
    report.add(Row(s, "lost ticks (sent - stored)", lost, target="0", ok=lost == 0))
    if collector.lagged or unmatched:
        report.add(Row(s, "receiver lagged / unmatched", collector.lagged + unmatched, note="info"))


# --- section 4: shutdown --------------------------------------------------------------------


def section_shutdown(report: Report, opts: argparse.Namespace, workdir: Path) -> None:
    """Latency of ``controller.shutdown()`` of a synced live engine, over N runs."""
    from qx_actors import SyncEngine

    runs = 5 if opts.quick else 20
    url = f"sqlite:///{workdir / 'shutdown.db'}"
    log(f"[4] graceful shutdown latency: {runs} runs of a live engine (ticks at 200/s)")
    latencies: list[float] = []
    with SimProcess(workdir, tick_rate=200, name="sim-shutdown") as sim:
        for i in range(runs):
            config = engine_config(
                database=url, rest_url=sim.rest_url, stream_url=sim.stream_url, mode="live",
                rate=1_000_000, stream=True, log_file=str(workdir / "shutdown.engine.log"),
            )  # fmt: skip
            engine = SyncEngine(config)
            receiver = engine.update_receiver()
            controller = engine.start()
            status, seen = wait_status(receiver, {"Running.Synced"}, 30)
            if status.is_stopped:
                raise RuntimeError(f"run {i}: {status.name} {status.error!r} ({seen})")
            time.sleep(0.1 + 0.02 * (i % 5))  # mid-stream, ticks flowing
            started = time.perf_counter()
            controller.shutdown()
            latencies.append((time.perf_counter() - started) * 1000)
            final = controller.status_snapshot()
            if final.name != "Shutdown":
                raise RuntimeError(f"run {i} ended {final.name}")
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    report.figures["shutdown"] = {"runs": runs, "latencies_ms": latencies}
    s = "4 shutdown"
    report.add(Row(s, "shutdown p50", p50, "ms", note=f"{runs} runs"))
    report.add(Row(s, "shutdown p99", p99, "ms", "<= 250 ms", p99 / 250, p99 <= 250))
    report.add(Row(s, "shutdown max", max(latencies), "ms"))


# --- section 5: PostgreSQL ------------------------------------------------------------------


@contextlib.contextmanager
def postgres_admin() -> Iterator[tuple[str, str]]:
    """(admin URL, how) of a PostgreSQL server: QX_BENCH_POSTGRES_URL or a throwaway one."""
    env_url = os.environ.get("QX_BENCH_POSTGRES_URL")
    if env_url:
        yield env_url, "QX_BENCH_POSTGRES_URL"
        return
    sys.path.insert(0, str(ROOT))
    try:
        from tests.pg_server import start_server
    finally:
        sys.path.remove(str(ROOT))
    server = start_server()
    try:
        yield server.url, "throwaway server (tests/pg_server.py)"
    finally:
        server.stop()


def database_url(admin_url: str, name: str) -> str:
    """``admin_url`` with its database name replaced."""
    from urllib.parse import urlsplit

    parts = urlsplit(admin_url)
    return parts._replace(path=f"/{name}").geturl()


def pg_database(admin_url: str, name: str) -> str:
    """Create a fresh database ``name`` (dropping an old one); its URL."""
    import psycopg2

    conn = psycopg2.connect(admin_url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    return database_url(admin_url, name)


def pg_drop(admin_url: str, name: str) -> None:
    """Drop database ``name`` (best effort)."""
    import psycopg2

    with contextlib.suppress(Exception):
        conn = psycopg2.connect(admin_url)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        finally:
            conn.close()


HOLES = 5  # holes of 10 minutes inside the gap-scan window, and 5 older ones


Candle5 = tuple[datetime, float, float, float, float]


def history_rows(n: int, end: datetime) -> Iterator[list[Candle5]]:
    """``n`` candles ending at ``end`` with a few 10-minute holes, in chunks of 100k."""
    start = end - timedelta(minutes=n - 1)
    holes = {n - 1 - k * 5000 - j for k in range(1, HOLES + 1) for j in range(10)}
    holes |= {k * (n // 7) + j for k in range(1, HOLES + 1) for j in range(10)}
    chunk: list[Candle5] = []
    for i in range(n):
        if i in holes:
            continue
        price = 60_000.0 + (i % 2000) * 0.5
        chunk.append((start + timedelta(minutes=i), price, price + 4.5, price - 3.0, price + 0.5))
        if len(chunk) == 100_000:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def build_history_sqlite(path: Path, n: int, end: datetime) -> str:
    """``n`` candles into a fresh SQLite file with the raw executemany path."""
    from qx_actors.storage import SQLITE_UPSERT_CANDLES_SQL, to_utc_text

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
    import psycopg2

    from qx_actors.storage import open_storage

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


def build_coverage(url: str) -> float:
    """Build ``ohlc_coverage`` from the candles with the schema migration's query; seconds."""
    from qx_actors.storage._backend import open_backend
    from qx_actors.storage._queries import rebuild_coverage

    backend = open_backend(url)
    try:
        started = time.perf_counter()
        with backend.write_txn():
            rebuild_coverage(backend)
        return time.perf_counter() - started
    finally:
        backend.close()


def time_history_state(url: str, *, repeats: int = 5) -> dict[str, float]:
    """ms of ``price_history_facts`` + ``PriceHistoryState.evaluate``: first, median, max."""
    from qx_actors.domain.history import PriceHistoryState
    from qx_actors.storage import open_storage

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


def section_history(report: Report, opts: argparse.Namespace, workdir: Path) -> None:
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
            name = f"qx_bench_{os.getpid()}_history"
            stack.callback(pg_drop, admin_url, name)
            log(f"    server: {how}; building {history:,} candles in PostgreSQL (COPY) ...")
            started = time.perf_counter()
            url = pg_database(admin_url, name)
            build_history_postgres(url, history, end)
            log(f"    ... {time.perf_counter() - started:.1f} s")
            urls.append(("PostgreSQL", url))
        for backend, url in urls:
            built = build_coverage(url)
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


def section_postgres(report: Report, opts: argparse.Namespace, workdir: Path) -> None:
    """PostgreSQL e2e backfill vs the COPY bound."""
    days = 60 if opts.quick else 350
    s = "5 postgres"
    log("[5] PostgreSQL")
    try:
        admin_cm = postgres_admin()
        admin_url, how = admin_cm.__enter__()
    except Exception as exc:
        report.skip("postgres", f"no PostgreSQL server: {type(exc).__name__}: {exc}")
        return
    names = [f"qx_bench_{os.getpid()}_{suffix}" for suffix in ("e2e", "raw")]
    try:
        log(f"    server: {how}")
        try:
            e2e_url = pg_database(admin_url, names[0])
        except Exception as exc:
            report.skip("postgres", f"can't create a database: {exc}")
            return
        reach = iso_reach(days, datetime.now(UTC))
        log(f"    e2e backfill into PostgreSQL, reach {reach} ({days} days) ...")
        with SimProcess(workdir, name="sim-postgres") as sim:
            result = run_backfill_child(
                workdir, "engine-postgres", database=e2e_url, rest_url=sim.rest_url,
                reach=reach, timeout=300,
            )  # fmt: skip
        candles = int(result["candles"])
        e2e = candles / result["elapsed_s"]
        log(f"    engine: {candles:,} candles in {result['elapsed_s']:.2f} s; raw bound ...")
        raw = raw_postgres_bound(pg_database(admin_url, names[1]), candles)
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

    finally:
        for name in names:
            pg_drop(admin_url, name)
        admin_cm.__exit__(None, None, None)


# --- section 7: read ------------------------------------------------------------------------

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
    import psycopg2

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


def build_rollups(url: str) -> float:
    """Build ``ohlc_coverage`` and the rollups from the candles as the migration does; s."""
    from qx_actors.storage._backend import open_backend
    from qx_actors.storage._queries import rebuild_coverage
    from qx_actors.storage._rollups import rebuild_rollups

    backend = open_backend(url)
    try:
        started = time.perf_counter()
        with backend.write_txn():
            rebuild_coverage(backend)
            rebuild_rollups(backend)
        return time.perf_counter() - started
    finally:
        backend.close()


def read_figures(url: str, start: datetime, end: datetime) -> dict[str, dict[str, float]]:
    """The timed reads of one database (see the docstring, 7)."""
    from qx_actors.storage import Database, to_utc_text

    tp: Callable[[datetime], Any] = to_utc_text if url.startswith("sqlite:///") else (lambda t: t)
    params = (tp(start), tp(end))
    database = Database(url)
    try:
        return time_reads(
            {
                "raw 1m": raw_fetch(
                    url,
                    f"SELECT {READ_COLUMNS} FROM ohlc_candles "
                    "WHERE time >= ? AND time < ? ORDER BY time",
                    params,
                ),
                "1m": lambda: len(database.candles(start, end)),
                "1m arrow": lambda: int(database.candles_arrow(start, end).num_rows),
                "raw 1h group by": raw_fetch(url, group_by_sql(url, 3600), params),
                "1h": lambda: len(database.candles(start, end, "1h")),
                "raw 1d group by": raw_fetch(url, group_by_sql(url, 86_400), params),
                "1d": lambda: len(database.candles(start, end, "1d")),
            }
        )
    finally:
        database.close()


def rollup_upkeep(fresh_url: Callable[[int], str], pages: int = 100) -> dict[str, float]:
    """rows/s of ``Storage.upsert_candles`` (1000-minute pages, newest first) into fresh
    databases (``fresh_url(i)``) with the rollups kept and with their upkeep switched off,
    alternated (4 runs); the medians."""
    import qx_actors.storage._storage as storage_module
    from qx_actors.domain.values import Candle
    from qx_actors.storage import open_storage

    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)
    batches = [
        [
            Candle(t, o, h, lo, c, 1.0)
            for t, o, h, lo, c in synthetic_rows(1000, end - p * 1000 * timedelta(minutes=1))
        ]
        for p in range(pages)
    ]
    saved = (storage_module.refresh_rollups, storage_module.refresh_after_upsert)
    rates: dict[str, list[float]] = {"with rollups": [], "without": []}
    for i in range(4):
        mode = "with rollups" if i % 2 == 0 else "without"
        url = fresh_url(i)
        if mode == "without":
            storage_module.refresh_rollups = lambda *args: None  # type: ignore[assignment]
            storage_module.refresh_after_upsert = lambda *args: None  # type: ignore[assignment]
        try:
            with open_storage(url) as storage:
                started = time.perf_counter()
                for batch in batches:
                    storage.upsert_candles(batch, now=end + timedelta(days=1))
                rates[mode].append(pages * 1000 / (time.perf_counter() - started))
        finally:
            storage_module.refresh_rollups, storage_module.refresh_after_upsert = saved
    return {mode: statistics.median(values) for mode, values in rates.items()}


def section_read(report: Report, opts: argparse.Namespace, workdir: Path) -> None:
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
            name = f"qx_bench_{os.getpid()}_read"
            stack.callback(pg_drop, admin_url, name)
            log(f"    server: {how}; building {n:,} candles in PostgreSQL (COPY) ...")
            url = pg_database(admin_url, name)
            build_history_postgres(url, n, end - timedelta(minutes=1))
            urls.append(("PostgreSQL", url))
        for backend, url in urls:
            built = build_rollups(url)
            log(f"    {backend}: rollups built in {built:.1f} s; timing reads ...")
            timed = read_figures(url, start, end)
            figures[backend.lower()] = {"reads": timed, "rollup_build_s": built}
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
            report.add(
                Row(
                    s, f"1m as Arrow, {span}, {backend}", arrow, "ms", "", arrow / raw,
                    note=f"candles_arrow; raw fetchall {raw:,.0f} ms (information)",
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
            report.add(
                Row(
                    s, f"rollup build (migration), {backend}", built, "s",
                    note=f"ohlc_coverage + 7 rollups from {rows:,} candles (information)",
                )
            )  # fmt: skip
        for backend, _ in urls:
            log(f"    rollup upkeep, {backend}: upsert_candles with and without the rollups ...")
            if backend == "SQLite":

                def fresh(i: int) -> str:
                    return fresh_sqlite(workdir / f"upkeep-{i}.db")
            else:

                def fresh(i: int) -> str:
                    upkeep_name = f"qx_bench_{os.getpid()}_upkeep_{i}"
                    stack.callback(pg_drop, admin_url, upkeep_name)
                    return pg_database(admin_url, upkeep_name)

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


# --- table --------------------------------------------------------------------------------


def print_table(report: Report, elapsed: float) -> None:
    """The final summary table (rich when it is there)."""
    headers = ("section", "metric", "value", "target", "ratio", "result", "note")
    lines = [
        (
            r.section,
            r.metric,
            r.value_text(),
            r.target,
            "" if r.ratio is None else f"{r.ratio:.3f}",
            r.result_text(),
            r.note,
        )
        for r in report.rows
    ]
    for section, reason in report.skipped.items():
        lines.append((section, "skipped", "-", "", "", "skip", reason))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    title = f"qx_actors benchmarks ({elapsed:.0f} s, {os.cpu_count()} CPUs, load average {load})"
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
        print(title)
        print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
        for line in lines:
            print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))
        return
    table = Table(title=title, show_lines=False)
    for header in headers:
        table.add_column(header, justify="right" if header in ("value", "ratio") else "left")
    styles = {"PASS": "green", "FAIL": "bold red", "skip": "yellow"}
    for line in lines:
        style = styles.get(line[5])
        cells = [*line[:5], f"[{style}]{line[5]}[/]" if style else line[5], line[6]]
        table.add_row(*cells)
    Console(width=max(shutil.get_terminal_size((200, 40)).columns, 160)).print(table)


# --- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line (the ``_sim`` / ``_backfill`` children are internal)."""
    parser = argparse.ArgumentParser(
        description="qx_actors benchmarks: a table of figures and ratios (see the docstring)"
    )
    sub = parser.add_subparsers(dest="child")
    p = sub.add_parser("_sim", help=argparse.SUPPRESS)
    p.add_argument("--rate-limit", type=float, default=0.0)
    p.add_argument("--tick-rate", type=float, default=0.0)
    p = sub.add_parser("_backfill", help=argparse.SUPPRESS)
    p.add_argument("--database", required=True)
    p.add_argument("--rest-url", required=True)
    p.add_argument("--reach", required=True)
    p.add_argument("--rate", type=float, default=1e6)
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--log-file", required=True)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (~1 minute)")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)",
    )
    parser.add_argument("--tick-rate", type=float, default=22_000, help="ticks/s offered (3)")
    parser.add_argument("--json", metavar="FILE", help="dump every figure to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections and print the table."""
    opts = parse_args(argv)
    if opts.child == "_sim":
        return child_sim(opts)
    if opts.child == "_backfill":
        try:
            return child_backfill(opts)
        except Exception as exc:
            send_line({"error": f"{type(exc).__name__}: {exc}"})
            return 1
    chosen = [s.strip() for s in opts.sections.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        print(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="qx-bench-"))
    configure_quiet_logging(workdir / "bench.engine.log")
    report = Report()
    runners = {
        "backfill": section_backfill,
        "ratelimit": section_ratelimit,
        "ticks": section_ticks,
        "shutdown": section_shutdown,
        "postgres": section_postgres,
        "history": section_history,
        "read": section_read,
    }
    started = time.perf_counter()
    log(f"scratch directory {workdir}; quick={opts.quick}")
    try:
        for name in SECTIONS:
            if name not in chosen:
                continue
            section_started = time.perf_counter()
            try:
                runners[name](report, opts, workdir)
            except Exception as exc:
                report.skip(name, f"error: {type(exc).__name__}: {exc}"[:400])
            log(f"    ({time.perf_counter() - section_started:.1f} s)")
    finally:
        elapsed = time.perf_counter() - started
        print_table(report, elapsed)
        if opts.json:
            payload = {
                "meta": {
                    "started": datetime.now(UTC).isoformat(),
                    "elapsed_s": elapsed,
                    "quick": opts.quick,
                    "sections": chosen,
                    "python": sys.version.split()[0],
                    "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                    "load_average_at_end": os.getloadavg(),
                },
                "rows": [asdict(r) for r in report.rows],
                "skipped": report.skipped,
                "figures": report.figures,
            }
            Path(opts.json).write_text(json.dumps(payload, indent=2, default=str) + "\n")
        if opts.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
