"""Section ``soak``: does a long full-mode run with faults stay flat, and lose nothing?

Not part of the default run (it takes ``--soak-minutes``, default 10): ask for it by name::

    python benchmarks/bench.py --sections soak --soak-minutes 120 --soak-backends sqlite,postgres

Per backend, the engine runs as users run it, ``python -m qx_actors.cli sync --config FILE`` in
a process of its own (full mode, stream on, JSON logs at info level to a file), against the
simulator served by this process at ``--soak-tick-rate`` ticks/s (default 100). The faults,
all the run long:

* the stream dropped every 120 s (the simulator closes every Stream connection);
* 2 % of REST answers a 503 (seeded);
* 5 duplicated ticks every 60 s;
* the database out of service every ``--soak-db-fault-minutes`` (default 30, and at least once,
  half-way for a short run): PostgreSQL (a throwaway server of this process) restarted
  (``pg_ctl restart -m fast``: every session cut); SQLite held by another connection in an
  exclusive transaction for 8 s, past the engine's 5 s busy timeout.

Every ``--soak-sample-s`` seconds (default 30) the engine's resident memory (``VmRSS``), threads
and open file descriptors are read from ``/proc``. At the end the simulator stops publishing,
the bench waits until every tick sent is stored (at most 30 s: a tick the socket took while the
engine shut down was never received), the engine gets SIGINT and, once it exited, the figures:

* *RSS slope after warm-up*, MB/h: least squares over the samples after the first 40 % of the
  run (the SQLite page cache fills during the first ~40 minutes); target < 2 MB/h;
* RSS at start, after warm-up, at the end; threads and open files, lowest and highest;
* *ticks sent*: distinct tick times a subscriber's connection took (a tick offered to a
  connection the drop is closing is *published*, not sent: nobody could receive it);
  *stored*: rows of
  ``price_ticks`` with those times; *missing* (sent, not stored) and *invented* (stored, never
  sent) — both targets 0 (ticks published while nobody was subscribed are not "sent");
* *restarts*: ``status_transition`` events into ``Running.Recovering`` in the engine's log;
  the database faults applied; the REST requests answered 503.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
import yaml
from _common import Report, Row, log

from qx_actors.domain.timeutil import utc_now
from qx_actors.simulator import Simulator, SimulatorConfig
from qx_actors.testing.postgres import PgServer, scratch_database, throwaway_server

#: Target of the memory slope after warm-up (issue 23).
SLOPE_TARGET_MB_PER_H = 2.0
#: Share of the run counted as warm-up (not in the slope).
WARM_UP_SHARE = 0.4
STREAM_DROP_EVERY_S = 120.0
DUPLICATES_EVERY_S = 60.0
ERROR_FRACTION = 0.02
#: How long SQLite is held: past the engine's busy timeout (5 s).
SQLITE_HOLD_S = 8.0


@dataclass
class Sample:
    """One reading of the engine process."""

    at_s: float
    rss_mb: float
    threads: int
    open_files: int


@dataclass
class SoakRun:
    """What one backend's soak saw."""

    backend: str
    samples: list[Sample] = field(default_factory=list)
    db_faults: list[str] = field(default_factory=list)
    stream_drops: int = 0
    exit_code: int | None = None
    #: seconds from the exchange going quiet to every sent tick stored (None: not within 30 s)
    settle_s: float | None = None


def read_proc(pid: int) -> tuple[float, int, int] | None:
    """(RSS MB, threads, open fds) of ``pid``, or None once it is gone."""
    try:
        rss = threads = 0
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1])
        return rss / 1024, threads, len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) in MB/h; None with fewer than 3 points."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return None
    cov = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return cov / var * 3600


def write_config(path: Path, database: str, sim: Simulator, log_file: Path) -> None:
    """The engine's YAML config: full mode, stream on, the simulator's URLs."""
    config = {
        "mode": "full",
        "database": database,
        "exchange": {
            "rest_url": sim.rest_url,
            "stream_url": sim.stream_url,
            "stream_enabled": True,
        },
        "sync": {
            "rest_rate_limit_per_s": 20,
            "rest_error_cooldown_s": 1,
            "price_history_reach": "2d",
            "funding_settlement_reach": "7d",
            "restart_interval_s": 2,
        },
        "logging": {"format": "json", "level": "info", "file": str(log_file)},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def wait_stored(database: str, sim: Simulator, timeout: float) -> float | None:
    """Seconds until every tick sent is stored (polled: the engine runs in another process),
    or ``None`` if some still are not after ``timeout``."""
    started = time.monotonic()
    while True:
        sent = {round(t.time.timestamp() * 1000) for t in sim.sent_ticks()}
        if sent <= stored_tick_times(database):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            return None
        time.sleep(0.5)


def stored_tick_times(database: str) -> set[int]:
    """Epoch milliseconds of every stored tick."""
    if database.startswith("sqlite:///"):
        conn = sqlite3.connect(database[len("sqlite:///") :])
        try:
            rows = conn.execute("SELECT time FROM price_ticks").fetchall()
        finally:
            conn.close()
        times = (datetime.fromisoformat(text) for (text,) in rows)
    else:
        pg = psycopg2.connect(database)
        try:
            with pg.cursor() as cur:
                cur.execute("SELECT time FROM price_ticks")
                rows = cur.fetchall()
        finally:
            pg.close()
        times = (value for (value,) in rows)
    return {round(t.astimezone(UTC).timestamp() * 1000) for t in times}


def count_restarts(log_file: Path) -> int:
    """``status_transition`` events into ``Running.Recovering``."""
    import json

    restarts = 0
    with contextlib.suppress(OSError), open(log_file, encoding="utf-8") as fh:
        for line in fh:
            if '"status_transition"' not in line:
                continue
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if event.get("dst") == "Running.Recovering":
                    restarts += 1
    return restarts


def hold_sqlite(path: str, seconds: float) -> None:
    """Hold SQLite's write lock from another connection for ``seconds``."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        time.sleep(seconds)  # the fault itself: the lock is held this long
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def soak_one(
    backend: str, opts: argparse.Namespace, workdir: Path, server: PgServer | None
) -> tuple[SoakRun, dict[str, Any]]:
    """One backend's soak; (what it saw, the figures)."""
    run = SoakRun(backend)
    minutes: float = opts.soak_minutes
    length_s = minutes * 60
    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            db_path = workdir / "soak.db"
            database = f"sqlite:///{db_path}"
        else:
            assert server is not None
            database = stack.enter_context(scratch_database(server.url, "qx_bench_soak"))
        sim = stack.enter_context(
            Simulator(SimulatorConfig(seed=23, tick_rate_per_s=opts.soak_tick_rate))
        )
        sim.faults.set_error_fraction(ERROR_FRACTION, 503, seed=23)
        log_file = workdir / f"soak-{backend}.log"
        config_file = workdir / f"soak-{backend}.yaml"
        write_config(config_file, database, sim, log_file)
        engine = subprocess.Popen(
            [sys.executable, "-m", "qx_actors.cli", "sync", "--config", str(config_file)],
            stdout=subprocess.DEVNULL,
            stderr=open(workdir / f"soak-{backend}.stderr", "w"),  # noqa: SIM115 - closed with the process
        )
        stack.callback(lambda: engine.poll() is None and engine.kill())
        started = time.monotonic()
        db_fault_every_s = min(opts.soak_db_fault_minutes * 60, length_s / 2)
        next_drop = STREAM_DROP_EVERY_S
        next_dup = DUPLICATES_EVERY_S
        next_db_fault = db_fault_every_s
        next_sample = 0.0
        faulting: threading.Thread | None = None
        while (elapsed := time.monotonic() - started) < length_s:
            if engine.poll() is not None:
                raise RuntimeError(f"the engine exited early ({engine.returncode})")
            if elapsed >= next_sample:
                reading = read_proc(engine.pid)
                if reading is not None:
                    run.samples.append(Sample(elapsed, *reading))
                next_sample += opts.soak_sample_s
            if elapsed >= next_drop:
                sim.faults.drop_stream()
                run.stream_drops += 1
                next_drop += STREAM_DROP_EVERY_S
            if elapsed >= next_dup:
                sim.faults.duplicate_ticks_next(5)
                next_dup += DUPLICATES_EVERY_S
            if elapsed >= next_db_fault and (faulting is None or not faulting.is_alive()):
                if backend == "sqlite":
                    target = lambda: hold_sqlite(str(db_path), SQLITE_HOLD_S)  # noqa: E731
                    run.db_faults.append(f"locked {SQLITE_HOLD_S:.0f} s at {elapsed / 60:.1f} min")
                else:
                    assert server is not None
                    target = server.restart
                    run.db_faults.append(f"restarted at {elapsed / 60:.1f} min")
                faulting = threading.Thread(target=target, name="soak-db-fault", daemon=True)
                faulting.start()
                next_db_fault += db_fault_every_s
            # the bench's own pace: one loop a second is plenty for faults every minute
            time.sleep(min(1.0, max(length_s - elapsed, 0.0)))
        if faulting is not None:
            faulting.join(60)
        # The exchange goes quiet before the engine is stopped: a tick the socket took while
        # the engine was shutting down was never received, so it can't be lost.
        sim.set_tick_rate(0)
        run.settle_s = wait_stored(database, sim, timeout=30.0)
        engine.send_signal(signal.SIGINT)
        try:
            run.exit_code = engine.wait(120)
        except subprocess.TimeoutExpired:
            engine.kill()
            run.exit_code = engine.wait()
        sent = {round(t.time.timestamp() * 1000) for t in sim.sent_ticks()}
        published = {round(t.time.timestamp() * 1000) for t in sim.published_ticks()}
        stored = stored_tick_times(database)
        errors_503 = sim.request_count(status=503)
    figures = summarise(run, length_s)
    figures.update(
        ticks_published=len(published),
        ticks_sent=len(sent),
        ticks_stored=len(sent & stored),
        ticks_missing=len(sent - stored),
        ticks_invented=len(stored - sent),
        restarts=count_restarts(log_file),
        rest_503=errors_503,
        stream_drops=run.stream_drops,
        db_faults=run.db_faults,
        exit_code=run.exit_code,
        settle_s=run.settle_s,
        minutes=minutes,
    )
    return run, figures


def summarise(run: SoakRun, length_s: float) -> dict[str, Any]:
    """Memory, threads and files over the samples."""
    samples = run.samples
    if not samples:
        return {}
    warm = [s for s in samples if s.at_s >= WARM_UP_SHARE * length_s]
    after = warm[0] if warm else samples[-1]
    return {
        "rss_start_mb": samples[0].rss_mb,
        "rss_after_warm_up_mb": after.rss_mb,
        "rss_end_mb": samples[-1].rss_mb,
        "rss_max_mb": max(s.rss_mb for s in samples),
        "rss_slope_mb_per_h": slope_per_hour([(s.at_s, s.rss_mb) for s in warm]),
        "threads_min": min(s.threads for s in samples),
        "threads_max": max(s.threads for s in samples),
        "open_files_min": min(s.open_files for s in samples),
        "open_files_max": max(s.open_files for s in samples),
        "samples": len(samples),
    }


def report_rows(report: Report, backend: str, f: dict[str, Any]) -> None:
    """The table rows of one backend."""
    s = f"soak {backend}"
    slope = f.get("rss_slope_mb_per_h")
    report.add(
        Row(
            s,
            "RSS slope after warm-up",
            slope,
            unit="MB/h",
            target=f"< {SLOPE_TARGET_MB_PER_H:g}",
            ratio=None if slope is None else slope / SLOPE_TARGET_MB_PER_H,
            ok=None if slope is None else slope < SLOPE_TARGET_MB_PER_H,
            note=f"{f['minutes']:g} min, {f.get('samples', 0)} samples, warm-up the first "
            f"{WARM_UP_SHARE:.0%}",
        )
    )
    report.add(
        Row(
            s,
            "RSS at the end",
            f.get("rss_end_mb"),
            unit="MB",
            note=f"start {f.get('rss_start_mb', 0):.0f}, after warm-up "
            f"{f.get('rss_after_warm_up_mb', 0):.0f}, max {f.get('rss_max_mb', 0):.0f}",
        )
    )
    report.add(Row(s, "threads (max)", f.get("threads_max"), note=f"lowest {f.get('threads_min')}"))
    report.add(
        Row(
            s,
            "open files (max)",
            f.get("open_files_max"),
            note=f"lowest {f.get('open_files_min')}",
        )
    )
    report.add(
        Row(
            s,
            "ticks missing (sent, not stored)",
            f["ticks_missing"],
            target="0",
            ok=f["ticks_missing"] == 0 and f["ticks_invented"] == 0,
            note=f"sent {f['ticks_sent']}, stored {f['ticks_stored']}, "
            f"invented {f['ticks_invented']}; published {f['ticks_published']} "
            "(offered to a closing stream: published, not sent); all stored "
            + (
                f"{f['settle_s']:.1f} s after the exchange went quiet"
                if f["settle_s"] is not None
                else "NOT within 30 s of the exchange going quiet"
            ),
        )
    )
    report.add(
        Row(
            s,
            "restarts",
            f["restarts"],
            note=f"stream drops {f['stream_drops']}, REST 503s {f['rest_503']}, database: "
            f"{'; '.join(f['db_faults']) or 'none'}; exit code {f['exit_code']}",
        )
    )


def run(report: Report, opts: argparse.Namespace, workdir: Path) -> None:
    """The soak of each chosen backend, one after the other."""
    backends = [b.strip() for b in opts.soak_backends.split(",") if b.strip()]
    log(
        f"[soak] {opts.soak_minutes:g} min per backend ({', '.join(backends)}), "
        f"{opts.soak_tick_rate:g} ticks/s, started {utc_now():%H:%M} UTC"
    )
    figures: dict[str, Any] = {}
    for backend in backends:
        if backend not in ("sqlite", "postgres"):
            report.skip(f"soak {backend}", "unknown backend (sqlite or postgres)")
            continue
        with contextlib.ExitStack() as stack:
            server = stack.enter_context(throwaway_server()) if backend == "postgres" else None
            _, figures[backend] = soak_one(backend, opts, workdir, server)
        report_rows(report, backend, figures[backend])
        log(f"  {backend}: {figures[backend]}")
    report.figures["soak"] = figures
