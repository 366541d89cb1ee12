"""The child processes of the benchmarks: this script re-executed as ``bench.py _sim`` (the
simulator, with a line protocol on stdin/stdout so that the parent can read its counters and
silence its stream) or ``bench.py _backfill`` (one backfill run, so that its peak RSS is its own).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Self

from _common import ROOT, configure_quiet_logging, count_rows, engine_config, rss_mb, wait_status

from qx_actors import SyncEngine
from qx_actors.simulator import Simulator, SimulatorConfig

BENCH_SCRIPT = Path(__file__).resolve().parent / "bench.py"
MARK = "@@qx-bench "


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
            [sys.executable, str(BENCH_SCRIPT), *argv],
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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SimProcess(Child):
    """The simulator in a child process."""

    def __init__(
        self,
        workdir: Path,
        *,
        rate_limit: float = 0.0,
        tick_rate: float = 0.0,
        name: str = "sim",
        cache_days: int = 96,
    ) -> None:
        super().__init__(
            [
                "_sim", "--rate-limit", str(rate_limit), "--tick-rate", str(tick_rate),
                "--cache-days", str(cache_days),
            ],
            name,
            workdir,
        )  # fmt: skip
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

    def prewarm(self, start: datetime) -> int:
        """Build and encode the simulated days from ``start`` to now (kept while they fit in
        ``cache_days``): serving them then costs the simulator only the HTTP answer; the
        number of days."""
        answer: dict[str, Any] = self.ask(f"prewarm {start.isoformat()}", timeout=120)
        return int(answer["days"])


def child_sim(args: argparse.Namespace) -> int:
    """``bench.py _sim``: serve the simulator; answer commands on stdin."""
    sim = Simulator(
        SimulatorConfig(
            seed=42,
            rate_limit_per_s=args.rate_limit or None,
            rate_limit_burst=1,
            tick_rate_per_s=args.tick_rate,
            cache_days=args.cache_days,
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
            elif cmd == "prewarm":
                start = datetime.fromisoformat(rest[0])
                send_line({"days": sim.market.prewarm(start, sim.market.now())})
            elif cmd == "tick_rate":
                sim.set_tick_rate(float(rest[0]))
                send_line({"ok": True})
            elif cmd == "silent":
                sim.faults.set_stream_silent(rest[0] == "1")
                send_line({"ok": True})
            elif cmd == "subscribers":
                send_line({"ok": sim.wait_for_subscribers(int(rest[0]), float(rest[1]))})
            else:
                send_line({"error": f"unknown command {cmd!r}"})
    finally:
        sim.stop()
    return 0


def child_backfill(args: argparse.Namespace) -> int:
    """``bench.py _backfill``: one backfill run to ``Running.Backfilled``; report; shut down."""
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
