"""Section 3, ``ticks``: committed ticks/s, tick-to-commit latency and lost ticks of a live
run, the simulator sending ticks from its own process; at full rate with a CPU hog alongside,
and at a quiet 50 ticks/s.

Live mode (stream on, default lookback: the last hour), a fresh engine and database per run.
*22k/s with a CPU hog*: the simulator sending ``--tick-rate`` ticks/s (default 22000) for
10 s (4 s with ``--quick``) while another process spins on the CPU (``while True: pass``: on
2 cores the engine, the simulator and the hog share them). *committed ticks/s* = ticks stored
/ (last commit - first send), against the rate offered (target >= 0.99 x offered, and the
offered rate within 1 % of ``--tick-rate``: the last 50 ms of latency are 0.5 % of 10 s).
*latency* = time a tick's ``PriceTick`` update (published by the engine after the DB commit)
reaches an update receiver in this process minus the wall time the simulator started sending
that tick's batch (the tick's own ``time`` can't be used: above 1000 ticks/s the simulator's
tick times run ahead of the clock); p99 target <= 50 ms, p50 information. *50 ticks/s*: the
same for 20 s (6 s with ``--quick``) without the hog, targets p50 <= 2 ms and p99 <= 5 ms.
*lost* = ticks the simulator sent - rows in ``price_ticks`` after a graceful shutdown (target
0). When the offered rate is below the target the load generator, not the engine, is the
limit.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import Report, Row, count_rows, engine_config, log, percentile
from _processes import SimProcess

from qx_actors import SyncEngine
from qx_actors.updates import (
    Lagged,
    PriceTickUpdate,
    ReceiverClosed,
    StatusUpdate,
    UpdateReceiver,
)


class TickCollector:
    """Reads an update receiver on a thread: (arrival wall time, tick) of every PriceTick."""

    def __init__(self, receiver: UpdateReceiver) -> None:
        self.receiver = receiver
        self.arrivals: list[tuple[float, Any]] = []
        self.statuses: list[Any] = []
        self.lagged = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-ticks", daemon=True)
        self._thread.start()

    def _run(self) -> None:
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


@contextlib.contextmanager
def cpu_hog(enabled: bool) -> Iterator[None]:
    """A process spinning on the CPU while the block runs (when ``enabled``)."""
    if not enabled:
        yield
        return
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        hog.kill()
        hog.wait(10)


def measure(workdir: Path, name: str, rate: float, duration: float, *, hog: bool) -> dict[str, Any]:
    """One live run at ``rate`` ticks/s for ``duration`` s (a fresh engine and database):
    what was sent, stored and committed, and the tick-to-commit latencies."""
    url = f"sqlite:///{workdir / f'{name}.db'}"
    with SimProcess(workdir, tick_rate=0, name=f"sim-{name}") as sim:
        config = engine_config(
            database=url, rest_url=sim.rest_url, stream_url=sim.stream_url, mode="live",
            rate=1_000_000, stream=True, log_file=str(workdir / f"{name}.engine.log"),
            queue_capacity=10_000_000,
        )  # fmt: skip
        engine = SyncEngine(config)
        collector = TickCollector(engine.update_receiver())
        controller = engine.start()
        try:
            if not sim.ask("subscribers 1 30", timeout=40)["ok"]:
                raise RuntimeError("the engine did not subscribe to the stream within 30 s")
            with cpu_hog(hog):
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
    return {
        "target_rate": rate, "duration_s": duration, "cpu_hog": hog, "sent": sent,
        "stored": stored, "observed_commits": len(collector.arrivals),
        "lagged": collector.lagged,
        "offered_per_s": sent / max(last_send - first_send, 1e-9),
        "committed_per_s": len(collector.arrivals) / max(last_commit - first_send, 1e-9),
        "latency_ms_p50": percentile(latencies, 0.5) if latencies else float("nan"),
        "latency_ms_p99": percentile(latencies, 0.99) if latencies else float("nan"),
        "latency_ms_max": max(latencies, default=float("nan")),
        "unmatched": unmatched, "synced": synced, "shutdown_s": shutdown_s,
    }  # fmt: skip


def run(report: Report, opts: argparse.Namespace, workdir: Path) -> None:
    """Committed ticks/s and tick-to-commit latency at full rate with a CPU hog, and at 50/s."""
    rate = float(opts.tick_rate)
    s = "3 ticks"
    figures: dict[str, Any] = {}
    report.figures["ticks"] = figures
    duration = 4.0 if opts.quick else 10.0
    log(f"[3] ticks: simulator (child process) at {rate:,.0f} ticks/s for {duration:g} s, CPU hog")
    full = figures["full_rate"] = measure(workdir, "ticks", rate, duration, hog=True)
    offered, committed = full["offered_per_s"], full["committed_per_s"]
    label = f"{rate / 1000:g}k/s + CPU hog"
    report.add(Row(s, f"ticks sent, {label}", full["sent"], note=f"offered {offered:,.0f}/s"))
    kept_up = committed / offered
    report.add(
        Row(
            s, f"committed ticks/s, {label}", committed, "ticks/s", ">= 0.99 x offered",
            kept_up, kept_up >= 0.99 and offered >= 0.99 * rate,
            note="stored / (last commit - first send)"
            + ("" if offered >= 0.99 * rate else "; load generator below target"),
        )
    )  # fmt: skip
    p50, p99 = full["latency_ms_p50"], full["latency_ms_p99"]
    report.add(Row(s, f"tick-to-commit p50, {label}", p50, "ms", note="information"))
    report.add(Row(s, f"tick-to-commit p99, {label}", p99, "ms", "<= 50 ms", p99 / 50, p99 <= 50))
    _lost_rows(report, s, label, full)

    quiet_s = 6.0 if opts.quick else 20.0
    log(f"    ticks at 50/s for {quiet_s:g} s, no hog")
    quiet = figures["50_per_s"] = measure(workdir, "ticks-50", 50.0, quiet_s, hog=False)
    p50, p99 = quiet["latency_ms_p50"], quiet["latency_ms_p99"]
    report.add(
        Row(
            s, "tick-to-commit p50, 50/s", p50, "ms", "<= 2 ms", p50 / 2, p50 <= 2,
            note=f"{quiet['sent']:,} ticks",
        )
    )  # fmt: skip
    report.add(Row(s, "tick-to-commit p99, 50/s", p99, "ms", "<= 5 ms", p99 / 5, p99 <= 5))
    _lost_rows(report, s, "50/s", quiet)


def _lost_rows(report: Report, s: str, label: str, run: dict[str, Any]) -> None:
    lost = run["sent"] - run["stored"]
    report.add(Row(s, f"lost ticks (sent - stored), {label}", lost, target="0", ok=lost == 0))
    if run["lagged"] or run["unmatched"]:
        report.add(
            Row(s, f"receiver lagged / unmatched, {label}", run["lagged"] + run["unmatched"],
                note="info")
        )  # fmt: skip
