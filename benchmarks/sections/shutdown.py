"""Section 4, ``shutdown``: the latency of ``controller.shutdown()`` of a synced live run
receiving ticks, over several runs.

20 runs (5 with ``--quick``) of a live engine, each synced and receiving
ticks at 200/s: wall time of ``controller.shutdown()`` (until every actor thread is joined),
p50/p99/max, target p99 <= 250 ms.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import Report, Row, engine_config, log, percentile, wait_status
from _processes import SimProcess

from qx_actors import SyncEngine


def run(report: Report, opts: argparse.Namespace, workdir: Path) -> None:
    """Latency of ``controller.shutdown()`` of a synced live engine, over N runs."""
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
