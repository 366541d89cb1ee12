"""An application that embeds qx_actors decides about logging: unconfigured, the library is silent.

Each test runs a real program in a subprocess: the bundled simulator and a full sync against it
(backfill, settlements, live ticks over the Stream API), then a graceful shutdown.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

#: The embedding program; ``{setup}`` is the application's own logging setup (or nothing).
PROGRAM = """
import json, sys, time
{setup}
from qx_actors import SyncEngine
from qx_actors.config import config_from_mapping
from qx_actors.simulator import Simulator, SimulatorConfig
from qx_actors.status import State
from qx_actors.updates import PriceTickUpdate, StatusUpdate

with Simulator(SimulatorConfig(rate_limit_per_s=None, tick_rate_per_s=20)) as sim:
    config = config_from_mapping({{
        "mode": "full",
        "database": "sqlite:///" + sys.argv[1],
        "exchange": {{"rest_url": sim.rest_url, "stream_url": sim.stream_url}},
        "sync": {{"price_history_reach": "6h", "funding_settlement_reach": "2d",
                  "rest_rate_limit_per_s": 1000, "shutdown_timeout_s": 5}},
    }})
    engine = SyncEngine(config)
    receiver = engine.update_receiver()
    controller = engine.start()
    seen, ticks = [], 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (State.SYNCED.value in seen and ticks >= 2):
        try:
            update = receiver.get(timeout=0.5)
        except TimeoutError:
            continue
        if isinstance(update, StatusUpdate):
            seen.append(update.status.name)
        elif isinstance(update, PriceTickUpdate):
            ticks += 1
    controller.shutdown()
    final = controller.until_stopped(timeout=30)
    with open(sys.argv[2], "w") as out:
        json.dump({{"seen": seen, "ticks": ticks, "final": final.name,
                    "run_id": engine.run_id}}, out)
"""


def run_embedding(
    tmp_path: Path, setup: str = ""
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run the embedding program with ``setup``; the process and what it reported."""
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(PROGRAM).format(setup=setup))
    result = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "qx.db"), str(result)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip
    assert 0 == done.returncode, done.stderr[-3000:]
    report = json.loads(result.read_text())
    assert "Running.Synced" in report["seen"] and report["ticks"] >= 2, report
    assert "Shutdown" == report["final"], report
    return done, report


def test_an_unconfigured_embedding_writes_nothing(tmp_path: Path) -> None:
    """A whole run (simulator, backfill, live ticks, shutdown) without any logging setup:
    nothing at all on stdout or stderr."""
    done, _ = run_embedding(tmp_path)
    assert ("", "") == (done.stdout, done.stderr)


def test_the_applications_logging_config_decides(tmp_path: Path) -> None:
    """With the application's ``logging.basicConfig`` the events arrive through it, as
    records of the ``qx_actors`` logger, the status transitions with their fields."""
    setup = (
        "import logging\n"
        "logging.basicConfig(stream=sys.stdout, level=logging.INFO,"
        " format='APP %(levelname)s %(name)s %(message)s')\n"
    )
    done, report = run_embedding(tmp_path, setup)
    assert "" == done.stderr
    lines = done.stdout.splitlines()
    assert lines and all(line.startswith("APP ") for line in lines), lines[:5]
    synced = [
        line
        for line in lines
        if line.startswith("APP INFO qx_actors status_transition ") and "dst=Running.Synced" in line
    ]
    assert synced, lines[:20]
    for field in (f"run_id={report['run_id']}", "mode=full", "trigger=", "src=", "error="):
        assert field in synced[0], synced[0]
    assert any(" stream_subscribed " in line for line in lines)  # the Stream client's own


def test_the_applications_logging_level_filters(tmp_path: Path) -> None:
    """Only warnings wanted: a healthy run has none to show."""
    setup = (
        "import logging\n"
        "logging.basicConfig(stream=sys.stdout, level=logging.WARNING,"
        " format='APP %(levelname)s %(name)s %(message)s')\n"
    )
    done, _ = run_embedding(tmp_path, setup)
    assert [] == [line for line in done.stdout.splitlines() if " qx_actors " in line]
    assert "" == done.stderr
