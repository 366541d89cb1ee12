"""Section 3, ``ticks``: committed ticks/s, tick-to-commit latency and lost ticks of a live
run, the simulator sending ``--tick-rate`` ticks/s from its own process.

Live mode (stream on, default lookback: the last hour), the simulator sending
``--tick-rate`` ticks/s (default 22000, 10 % above the target) for 10 s (4 s with
``--quick``). *committed ticks/s* = ticks stored / (last commit - first send).
*latency* = time a tick's ``PriceTick`` update (published by the engine after the DB
commit) reaches an update receiver in this process minus the wall time the simulator
started sending that tick's batch (the tick's own ``time`` can't be used: above 1000
ticks/s the simulator's tick times run ahead of the clock). p50/p99 target <= 50 ms.
*lost* = ticks the simulator sent - rows in ``price_ticks`` after a graceful shutdown
(target 0). *offered* is what the simulator achieved; when it is below the target rate
the load generator, not the engine, is the limit.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
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


def run(report: Report, opts: argparse.Namespace, workdir: Path) -> None:
    """Committed ticks/s, tick-to-commit latency, lost ticks."""
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
