"""Running the simulator: lifecycle, context manager and the blocking CLI entry point."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sim_helpers import SimFactory, http_get

from qx_actors.domain.timeutil import floor_minute, parse_rfc3339
from qx_actors.simulator import OffsetClock, Simulator, SimulatorConfig

_CHILD = """
import json, sys
from qx_actors.simulator import SimulatorConfig, run_simulator_blocking

def ready(sim):
    print(json.dumps({"rest": sim.rest_url, "stream": sim.stream_url}), flush=True)

run_simulator_blocking(SimulatorConfig(seed=3, rate_limit_per_s=None), on_ready=ready)
print("stopped", flush=True)
"""


def test_context_manager_starts_and_stops() -> None:
    """The context manager serves inside the block and stops after it."""
    with Simulator(SimulatorConfig(rate_limit_per_s=None)) as sim:
        assert sim.rest_url.startswith("http://127.0.0.1:")
        assert sim.stream_url.startswith("ws://127.0.0.1:") and sim.stream_url.endswith("/v1")
        assert http_get(sim.rest_url, "/v3/futures/ticker").status == 200
    assert not sim.is_running
    with pytest.raises(RuntimeError):
        _ = sim.rest_url


def test_stop_is_idempotent(make_sim: SimFactory) -> None:
    """stop() twice is harmless; URLs are unavailable afterwards."""
    sim = make_sim()
    url = sim.rest_url
    sim.stop()
    sim.stop()
    with pytest.raises(OSError):
        http_get(url, "/v3/futures/ticker", _timeout=2)


def test_start_twice_is_an_error(make_sim: SimFactory) -> None:
    """A simulator starts once."""
    sim = make_sim()
    with pytest.raises(RuntimeError):
        sim.start()


def test_blocking_runner_stops_on_sigterm() -> None:
    """run_simulator_blocking serves until SIGTERM, then exits cleanly."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    try:
        assert child.stdout is not None
        urls = json.loads(child.stdout.readline())
        assert http_get(urls["rest"], "/v3/futures/ticker").status == 200
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=10)
        assert out.strip() == "stopped"
        assert child.returncode == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_offset_clock_starts_at_the_instant_and_ticks_with_real_time() -> None:
    """An OffsetClock reads its start plus the real (monotonic) time elapsed since it was made."""
    start = datetime(2026, 3, 1, 23, 59, tzinfo=UTC)
    before = time.monotonic()
    clock = OffsetClock(start)
    after = time.monotonic()
    low = time.monotonic()
    now = clock()
    high = time.monotonic()
    assert start + timedelta(seconds=low - after) <= now <= start + timedelta(seconds=high - before)
    assert now.tzinfo is UTC
    assert clock() >= now
    assert OffsetClock(datetime(2026, 3, 2, 1, 0, tzinfo=timezone(timedelta(hours=2)))).start == (
        datetime(2026, 3, 1, 23, 0, tzinfo=UTC)
    )


def test_simulator_on_an_offset_clock_serves_that_instant(make_sim: SimFactory) -> None:
    """A simulator on an OffsetClock serves candles up to the clock's minute, not the wall's."""
    clock = OffsetClock(datetime(2026, 3, 1, 23, 59, 30, tzinfo=UTC))
    sim = make_sim(clock=clock)
    floor_before = floor_minute(clock())
    reply = http_get(sim.rest_url, "/v3/futures/candles", limit=2)
    floor_after = floor_minute(clock())
    newest = parse_rfc3339(reply.json()["data"][0]["time"])
    assert floor_before <= newest <= floor_after
    assert sim.market.now() >= clock.start
