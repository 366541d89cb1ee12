"""The qx-actors command line, run as a real process."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml

from qx_actors.config import load_config
from qx_actors.simulator import Simulator
from qx_actors.status import mermaid_diagram

CLI = [sys.executable, "-m", "qx_actors.cli"]
ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run qx-actors with ``args`` to completion."""
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )


def write_config(path: Path, sim: Simulator, db: Path, **top: object) -> Path:
    """A YAML config pointing at ``sim`` and the SQLite file ``db``."""
    data = {
        "mode": "backfill",
        "database": f"sqlite:///{db}",
        "exchange": {"rest_url": sim.rest_url, "stream_url": sim.stream_url},
        "sync": {
            "price_history_reach": "1d",
            "funding_settlement_reach": "3d",
            "rest_rate_limit_per_s": 500,
            "shutdown_timeout_s": 5,
        },
        "logging": {"format": "json", "level": "info"},
        **top,
    }
    path.write_text(yaml.safe_dump(data))
    return path


def test_graph_prints_the_machine_diagram() -> None:
    """qx-actors graph prints the Mermaid text generated from the machine."""
    done = run_cli("graph")
    assert (0, mermaid_diagram()) == (done.returncode, done.stdout)


def test_config_prints_the_effective_config(tmp_path: Path) -> None:
    """qx-actors config prints every key with defaults, and it loads back the same."""
    done = run_cli("config", "--config", str(ROOT / "config" / "demo.yaml"))
    assert 0 == done.returncode, done.stderr
    effective = tmp_path / "effective.yaml"
    effective.write_text(done.stdout)
    assert load_config(ROOT / "config" / "demo.yaml") == load_config(effective)
    assert "shutdown_timeout_s: 6.0" in done.stdout


def test_invalid_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    """A bad key is reported with its path and exit code 2."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("sync:\n  rest_timeout_s: abc\n")
    done = run_cli("config", "--config", str(bad))
    assert 2 == done.returncode
    assert 'sync.rest_timeout_s: expected a number, got "abc"' in done.stderr


def test_logs_prints_a_timeline_and_flags_off_graph_edges(tmp_path: Path) -> None:
    """qx-actors logs lists transitions in order and flags one that is not in the graph."""
    lines = [
        {"event": "status_transition", "run_id": "r1", "mode": "backfill", "trigger": "start",
         "src": "NotInitiated", "dst": "Running.Starting", "error": None,
         "timestamp": "2026-01-01T00:00:00Z"},
        {"event": "something_else", "run_id": "r1"},
        {"event": "status_transition", "run_id": "r1", "mode": "backfill",
         "trigger": "recoverable_error", "src": "Running.Starting", "dst": "Running.Recovering",
         "error": "ExchangeTimeout: slow", "timestamp": "2026-01-01T00:00:01Z"},
        {"event": "status_transition", "run_id": "r1", "mode": "backfill", "trigger": "synced",
         "src": "Running.Recovering", "dst": "Running.Synced", "error": None,
         "timestamp": "2026-01-01T00:00:02Z"},
    ]  # fmt: skip
    log = tmp_path / "run.log"
    log.write_text("\n".join(json.dumps(line) for line in lines) + "\nnot json\n")
    done = run_cli("logs", str(log))
    out = done.stdout.splitlines()
    assert 1 == done.returncode
    assert 3 == len(out)
    assert "NotInitiated -> Running.Starting  [start]" in out[0]
    assert "error=ExchangeTimeout: slow" in out[1] and "!!" not in out[1]
    assert out[2].endswith("!! not in the status graph")


def test_sync_runs_until_sigint_then_status_and_export(
    simulator: Simulator, tmp_path: Path
) -> None:
    """sync backfills, exits 0 on SIGINT; status and export then read the database."""
    db = tmp_path / "qx.db"
    config = write_config(tmp_path / "qx.yaml", simulator, db)
    process = subprocess.Popen(
        [*CLI, "sync", "--config", str(config)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stderr is not None
        seen = []
        for line in process.stderr:  # JSON log lines; ends if the process dies
            record = json.loads(line) if line.startswith("{") else {}
            if record.get("event") == "status_transition":
                seen.append(record["dst"])
                if record["dst"] in ("Running.Backfilled", "Failed"):
                    break
        assert ["Running.Starting", "Running.InProgress", "Running.Backfilled"] == seen
        process.send_signal(signal.SIGINT)
        rest = process.communicate(timeout=30)[1]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert 0 == process.returncode
    assert '"dst": "Shutdown"' in rest
    with sqlite3.connect(db) as connection:
        (candles,) = connection.execute("SELECT count(*) FROM ohlc_candles").fetchone()
        (hours,) = connection.execute(
            "SELECT count(DISTINCT substr(time, 1, 13)) FROM ohlc_candles"
        ).fetchone()
    assert candles >= 24 * 60

    status = run_cli("status", "--config", str(config))
    assert 0 == status.returncode, status.stderr
    assert "price history" in status.stdout and "funding settlements" in status.stdout

    plan = run_cli("plan", "--config", str(config))
    assert 0 == plan.returncode, plan.stderr
    assert "nothing is written" in plan.stdout and "requests; ETA" in plan.stdout

    csv_file = tmp_path / "hours.csv"
    done = run_cli(
        "export", "--config", str(config), "--from", "2020-01-01", "--to", "2100-01-01",
        "--resolution", "1h", "--output", str(csv_file),
    )  # fmt: skip
    assert 0 == done.returncode, done.stderr
    rows = csv_file.read_text().splitlines()
    assert "time,open,high,low,close,volume,stable,gap,minutes" == rows[0]
    assert hours == len(rows) - 1


def test_plan_on_an_empty_database_lists_the_whole_reach(tmp_path: Path) -> None:
    """plan with no database yet: one LATEST candle range and the request count at 1/s."""
    config = tmp_path / "qx.yaml"
    config.write_text(
        f"database: sqlite:///{tmp_path / 'none.db'}\nsync:\n  price_history_reach: 2d\n"
    )
    done = run_cli("plan", "--config", str(config))
    assert 0 == done.returncode, done.stderr
    assert "latest" in done.stdout
    assert not (tmp_path / "none.db").exists()


def test_sync_exits_nonzero_on_failed(simulator: Simulator, tmp_path: Path) -> None:
    """A fatal error (unrounded candles) ends the process with exit code 1."""
    simulator.faults.unrounded_next(50)
    config = write_config(tmp_path / "qx.yaml", simulator, tmp_path / "qx.db")
    done = run_cli("sync", "--config", str(config))
    assert 1 == done.returncode
    assert "not a whole minute" in done.stderr


def test_demo_runs_for_a_duration(tmp_path: Path) -> None:
    """qx-actors demo syncs against the simulator into SQLite and stops after --duration."""
    db = tmp_path / "demo.db"
    env = {**os.environ}
    done = subprocess.run(
        [*CLI, "demo", "--duration", "4", "--database", f"sqlite:///{db}"],
        capture_output=True, text=True, timeout=90, cwd=tmp_path, env=env, check=False,
    )  # fmt: skip
    assert 0 == done.returncode, done.stderr[-2000:]
    with sqlite3.connect(db) as connection:
        (candles,) = connection.execute("SELECT count(*) FROM ohlc_candles").fetchone()
        (settlements,) = connection.execute("SELECT count(*) FROM funding_settlements").fetchone()
    assert candles > 3 * 24 * 60
    assert settlements >= 89
    assert "run ended: Shutdown" in done.stderr


def test_a_lookback_beyond_the_reach_on_the_command_line_exits_2(tmp_path: Path) -> None:
    """--lookback older than the reach is refused (not clamped): exit 2 naming both values."""
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "database": f"sqlite:///{tmp_path / 'x.db'}",
                "exchange": {"rest_url": "http://127.0.0.1:9", "stream_url": "ws://127.0.0.1:9/v1"},
                "sync": {"price_history_reach": "3d"},
            }
        )
    )
    done = run_cli("sync", "--config", str(config), "--mode", "live", "--lookback", "100 x 1d")
    assert 2 == done.returncode, done.stderr
    assert "100 x 1d" in done.stderr and "price_history_reach" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "x.db").exists()  # refused before anything was opened
