"""Running the simulator: lifecycle, context manager and the blocking CLI entry point."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from sim_helpers import SimFactory, http_get

from qx_actors.simulator import Simulator, SimulatorConfig

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
