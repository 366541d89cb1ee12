"""The qx-actors command line.

The commands run in this process (the ``cli`` fixture: ``cli.main(argv)``, output captured);
a real ``qx-actors`` process runs where the process is the subject: ``sync`` and ``simulate``
ended by SIGINT (exit 130 after a graceful shutdown), and the dashboard on a terminal.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import structlog
import yaml

from qx_actors.config import load_config
from qx_actors.simulator import Simulator
from qx_actors.status import mermaid_diagram
from tests.cli_helpers import InProcessCli, ProcessState

CLI = [sys.executable, "-m", "qx_actors.cli"]
ROOT = Path(__file__).resolve().parents[2]


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


def test_graph_prints_the_machine_diagram(cli: InProcessCli) -> None:
    """qx-actors graph prints the Mermaid text generated from the machine."""
    done = cli("graph")
    assert (0, mermaid_diagram()) == (done.returncode, done.stdout)


def test_config_prints_the_effective_config(cli: InProcessCli, tmp_path: Path) -> None:
    """qx-actors config prints every key with defaults, and it loads back the same."""
    done = cli("config", "--config", str(ROOT / "config" / "demo.yaml"))
    assert 0 == done.returncode, done.stderr
    effective = tmp_path / "effective.yaml"
    effective.write_text(done.stdout)
    assert load_config(ROOT / "config" / "demo.yaml") == load_config(effective)
    assert "shutdown_timeout_s: 6.0" in done.stdout


def test_invalid_config_exits_2_naming_the_key(cli: InProcessCli, tmp_path: Path) -> None:
    """A bad key is reported with its path and exit code 2."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("sync:\n  rest_timeout_s: abc\n")
    done = cli("config", "--config", str(bad))
    assert 2 == done.returncode
    assert 'sync.rest_timeout_s: expected a number, got "abc"' in done.stderr


def test_logs_prints_a_timeline_and_flags_off_graph_edges(
    cli: InProcessCli, tmp_path: Path
) -> None:
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
    done = cli("logs", str(log))
    out = done.stdout.splitlines()
    assert 1 == done.returncode
    assert 3 == len(out)
    assert "NotInitiated -> Running.Starting  [start]" in out[0]
    assert "error=ExchangeTimeout: slow" in out[1] and "!!" not in out[1]
    assert out[2].endswith("!! not in the status graph")


def test_sync_runs_until_sigint_then_status_and_export(
    cli: InProcessCli, simulator: Simulator, tmp_path: Path
) -> None:
    """The real ``qx-actors sync`` backfills and exits 130 after a graceful shutdown on SIGINT —
    delivered twice at once, as ``timeout`` and a terminal's process group do, which is one
    Ctrl-C, not a forced exit —; status, plan and export then read the database."""
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
        evaluations = []
        for line in process.stderr:  # JSON log lines; ends if the process dies
            record = json.loads(line) if line.startswith("{") else {}
            if record.get("event") == "price_history_state":
                evaluations.append(record["now"])
            if record.get("event") == "status_transition":
                seen.append(record["dst"])
                if record["dst"] in ("Running.Backfilled", "Failed"):
                    break
        assert ["Running.Starting", "Running.InProgress", "Running.Backfilled"] == seen
        # one price_history_state event per evaluation (each has its own `now`)
        assert evaluations and len(evaluations) == len(set(evaluations)), evaluations
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGINT)  # the same Ctrl-C again, within the grace period
        rest = process.communicate(timeout=30)[1]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert 130 == process.returncode, rest
    assert '"dst": "Shutdown"' in rest and "forced exit" not in rest
    with sqlite3.connect(db) as connection:
        (candles,) = connection.execute("SELECT count(*) FROM ohlc_candles").fetchone()
        (hours,) = connection.execute(
            "SELECT count(DISTINCT substr(time, 1, 13)) FROM ohlc_candles"
        ).fetchone()
    assert candles >= 24 * 60

    status = cli("status", "--config", str(config))
    assert 0 == status.returncode, status.stderr
    assert "price history" in status.stdout and "funding settlements" in status.stdout

    plan = cli("plan", "--config", str(config))
    assert 0 == plan.returncode, plan.stderr
    assert "nothing is written" in plan.stdout and "requests; ETA" in plan.stdout

    csv_file = tmp_path / "hours.csv"
    done = cli(
        "export", "--config", str(config), "--from", "2020-01-01", "--to", "2100-01-01",
        "--resolution", "1h", "--output", str(csv_file),
    )  # fmt: skip
    assert 0 == done.returncode, done.stderr
    rows = csv_file.read_text().splitlines()
    assert "time,open,high,low,close,volume,stable,gap,minutes" == rows[0]
    assert hours == len(rows) - 1
    stable, gap = rows[1].split(",")[6:8]
    assert {stable, gap} <= {"true", "false"}, rows[1]  # never Python's True/False


def test_plan_on_an_empty_database_lists_the_whole_reach(cli: InProcessCli, tmp_path: Path) -> None:
    """plan with no database yet: one LATEST candle range and the request count at 1/s."""
    config = tmp_path / "qx.yaml"
    config.write_text(
        f"database: sqlite:///{tmp_path / 'none.db'}\nsync:\n  price_history_reach: 2d\n"
    )
    done = cli("plan", "--config", str(config))
    assert 0 == done.returncode, done.stderr
    assert "latest" in done.stdout
    assert not (tmp_path / "none.db").exists()
    # piped: the table is not cut at 80 columns, the times are whole
    row = next(line for line in done.stdout.splitlines() if "latest" in line)
    assert 2 == len(re.findall(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row)), row
    assert "…" not in done.stdout and len(row) > 80, row


def test_sync_with_a_log_file_still_shows_progress(
    cli: InProcessCli, simulator: Simulator, tmp_path: Path
) -> None:
    """logging.file set and no terminal: the JSON lines go to the file while short progress
    lines appear on stderr as the run goes (not only at the end: Ctrl-C is pressed once the
    Backfilled line is out)."""
    log = tmp_path / "qx.log"
    config = write_config(
        tmp_path / "qx.yaml", simulator, tmp_path / "qx.db",
        logging={"format": "json", "level": "info", "file": str(log)},
    )  # fmt: skip
    done = cli.until(
        "sync", "--config", str(config), stop_when=lambda line: "status Running.Backfilled" in line
    )
    lines = done.stderr.splitlines()
    backfilled = next(i for i, x in enumerate(lines) if "status Running.Backfilled" in x)
    assert "qx-actors: status Running.Backfilled" in lines[backfilled], lines
    before = lines[:backfilled]
    assert any(re.match(r"qx-actors: candles 100\.00% of the reach stored", x) for x in before)
    assert not any(line.startswith("{") for line in lines)  # the JSON lines are in the file
    assert 130 == done.returncode, done.stderr
    assert "qx-actors: run ended: Shutdown" in "\n".join(lines[backfilled:])
    timeline = cli("logs", str(log))
    assert 0 == timeline.returncode, timeline.stderr
    assert "Running.Backfilled -> ShutdownInitiated" in timeline.stdout


def test_simulate_defaults_serve_the_demo_config(cli: InProcessCli, tmp_path: Path) -> None:
    """The real `qx-actors simulate` with its defaults (ports aside) and a sync with
    config/demo.yaml's rate (20/s): the backfill is never answered 429; SIGINT stops the
    simulator, exit 130."""
    from qx_actors.app.cli import build_parser

    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    defaults = build_parser().parse_args(["simulate"])
    assert demo["exchange"]["rest_url"].endswith(f":{defaults.port}")
    assert f":{defaults.stream_port}/" in demo["exchange"]["stream_url"]
    assert defaults.rate_limit >= demo["sync"]["rest_rate_limit_per_s"]

    server = subprocess.Popen(
        [*CLI, "simulate", "--port", "0", "--stream-port", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        rest_url = server.stdout.readline().split()[-1]
        stream_url = server.stdout.readline().split()[-1]
        demo["exchange"].update(rest_url=rest_url, stream_url=stream_url)
        demo.update(mode="backfill", database=f"sqlite:///{tmp_path / 'demo.db'}")
        demo["logging"] = {"format": "json", "level": "info"}
        config = tmp_path / "demo.yaml"
        config.write_text(yaml.safe_dump(demo))
        sync = cli.until(
            "sync", "--config", str(config),
            stop_when=lambda line: '"dst": "Running.Backfilled"' in line,
        )  # fmt: skip
        text = sync.stderr
        assert '"dst": "Running.Backfilled"' in text, text[-2000:]
        assert "rest_rate_limited" not in text and '"status": 429' not in text
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=30)
    assert 130 == server.returncode


def test_sync_exits_nonzero_on_failed(
    cli: InProcessCli, simulator: Simulator, tmp_path: Path
) -> None:
    """A fatal error (the 1 d reach is before the exchange's history) ends the command with
    exit code 1."""
    now = simulator.market.now()
    simulator.market.add_downtime(now - timedelta(days=2), now - timedelta(hours=17))
    config = write_config(tmp_path / "qx.yaml", simulator, tmp_path / "qx.db")
    done = cli("sync", "--config", str(config))
    assert 1 == done.returncode
    assert "is before the exchange's history" in done.stderr


def test_demo_runs_for_a_duration(cli: InProcessCli, tmp_path: Path) -> None:
    """qx-actors demo syncs against the simulator into SQLite and stops after --duration (2 s:
    the demo is Synced in about half a second)."""
    db = tmp_path / "demo.db"
    done = cli("demo", "--duration", "2", "--database", f"sqlite:///{db}", cwd=tmp_path)
    assert 0 == done.returncode, done.stderr[-2000:]
    with sqlite3.connect(db) as connection:
        (candles,) = connection.execute("SELECT count(*) FROM ohlc_candles").fetchone()
        (settlements,) = connection.execute("SELECT count(*) FROM funding_settlements").fetchone()
    assert candles > 3 * 24 * 60
    assert settlements >= 89
    assert "run ended: Shutdown" in done.stderr
    # a new database is said once, when it is created; the next run opens it silently
    assert 1 == done.stderr.count("created_new_database"), done.stderr[-3000:]
    again = cli("demo", "--duration", "0.5", "--database", f"sqlite:///{db}", cwd=tmp_path)
    assert 0 == again.returncode, again.stderr[-2000:]
    assert "created_new_database" not in again.stderr


def test_sync_runs_for_a_duration(cli: InProcessCli, simulator: Simulator, tmp_path: Path) -> None:
    """sync --duration S: a graceful shutdown after S seconds, exit 0."""
    config = write_config(tmp_path / "qx.yaml", simulator, tmp_path / "qx.db")
    done = cli("sync", "--config", str(config), "--duration", "1")
    assert 0 == done.returncode, done.stderr[-2000:]
    assert "run ended: Shutdown" in done.stderr


def test_a_lookback_beyond_the_reach_on_the_command_line_exits_2(
    cli: InProcessCli, tmp_path: Path
) -> None:
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
    done = cli("sync", "--config", str(config), "--mode", "live", "--lookback", "100 x 1d")
    assert 2 == done.returncode, done.stderr
    assert "100 x 1d" in done.stderr and "price_history_reach" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "x.db").exists()  # refused before anything was opened


def test_the_dashboards_last_frame_shows_the_final_status(
    simulator: Simulator, tmp_path: Path
) -> None:
    """The real sync process on a terminal (a pseudo-terminal here): after Ctrl-C the
    dashboard's last frame says Shutdown, not the Running.* it showed before."""
    import pty
    import select
    import time

    config = write_config(tmp_path / "qx.yaml", simulator, tmp_path / "qx.db", mode="full")
    controller_fd, terminal_fd = pty.openpty()
    process = subprocess.Popen(
        [*CLI, "sync", "--config", str(config)],
        cwd=ROOT, stdin=terminal_fd, stdout=terminal_fd, stderr=terminal_fd,
    )  # fmt: skip
    os.close(terminal_fd)
    screen = b""
    interrupted = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if not select.select([controller_fd], [], [], 1.0)[0]:
                continue
            try:
                chunk = os.read(controller_fd, 65536)  # ends (EIO) when the process is gone
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
            if not interrupted and b"Running.Synced" in screen:
                process.send_signal(signal.SIGINT)
                interrupted = True
        process.wait(timeout=30)
    finally:
        os.close(controller_fd)
        if process.poll() is None:
            process.kill()
            process.wait()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode(errors="replace"))
    assert interrupted and 130 == process.returncode, text[-2000:]
    last_frame = text[text.rindex("qx-actors Full") :]
    assert re.search(r"status\s+│ Shutdown", last_frame), last_frame
    assert "Running." not in last_frame


def test_an_in_process_sync_leaves_no_process_state_behind(
    cli: InProcessCli, simulator: Simulator, tmp_path: Path
) -> None:
    """What ``sync`` installs for its run (SIGINT/SIGTERM handlers, the excepthooks, structlog's
    configuration, the root logger's handler, the log file) is gone after the in-process call:
    the tests calling ``cli.main`` leave nothing for the next one."""
    log = tmp_path / "qx.log"
    config = write_config(
        tmp_path / "qx.yaml", simulator, tmp_path / "qx.db",
        logging={"format": "json", "level": "info", "file": str(log)},
    )  # fmt: skip
    before = ProcessState.now()
    done = cli.until(
        "sync", "--config", str(config), stop_when=lambda line: "status Running.Backfilled" in line
    )
    assert 130 == done.returncode, done.stderr
    assert before.comparable() == ProcessState.now().comparable()
    size = log.stat().st_size
    structlog.get_logger().warning("after_the_command")
    logging.getLogger("pykka").error("after the command")
    assert size == log.stat().st_size  # nothing is written to the command's log any more


def test_a_second_signal_forces_only_after_the_grace_period() -> None:
    """SignalStop: the first signal asks for the graceful stop; a second within the grace
    period (``timeout``'s signal to the process and to its group) is the same Ctrl-C; one
    after it forces the exit."""
    from qx_actors.app._service import SignalStop

    now = [100.0]
    forced: list[str] = []
    stop = threading.Event()
    signals = SignalStop(stop, where="qx-actors sync", grace_s=1.0, clock=lambda: now[0])
    signals.force = forced.append  # type: ignore[method-assign]
    signals(signal.SIGINT)
    assert stop.is_set() and 130 == signals.exit_code(0)
    now[0] += 0.2
    signals(signal.SIGTERM)
    assert [] == forced and 130 == signals.exit_code(0)  # the first signal decides
    now[0] += 1.0
    signals(signal.SIGINT)
    assert ["qx-actors sync"] == forced


def test_a_muted_log_writes_nothing(tmp_path: Path) -> None:
    """After mute_logging (a forced exit) no event is written, the package's nor another
    library's."""
    from qx_actors import logs
    from qx_actors.config import LoggingConfig
    from tests.cli_helpers import process_state_restored

    log = tmp_path / "qx.log"
    with process_state_restored():
        logs.configure_logging(LoggingConfig(file=str(log)))
        logs.get_logger(run_id="r").warning("before")
        logs.mute_logging()
        try:
            logs.get_logger(run_id="r").warning("after")
            logging.getLogger("pykka").error("after")
        finally:
            logs._muted.clear()
            logging.disable(logging.NOTSET)
    assert ["before"] == [json.loads(line)["event"] for line in log.read_text().splitlines()]


def test_each_documented_exit_code(cli: InProcessCli, tmp_path: Path) -> None:
    """The README's exit codes, in process: 0 done, 2 usage and config errors, 1 a missing
    file or a failed command (logs /missing.log included)."""
    assert 0 == cli("graph").returncode
    assert 2 == cli("graph", "--nope").returncode
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: fast\n")
    assert 2 == cli("config", "--config", str(bad)).returncode
    assert 1 == cli("logs", str(tmp_path / "missing.log")).returncode
    assert 1 == cli("logs", "/missing.log").returncode


def test_a_restart_loop_logs_each_cause_once(
    cli: InProcessCli, simulator: Simulator, tmp_path: Path
) -> None:
    """The exchange down: each failed attempt is one warning per event, the cause in full
    the first time and ``… again (Nth time in S s)`` after; the lines per restart cycle are
    bounded."""
    simulator.faults.set_error_fraction(1.0, status=503)
    config = write_config(
        tmp_path / "qx.yaml", simulator, tmp_path / "qx.db",
        sync={"price_history_reach": "1d", "funding_settlement_reach": "3d",
              "rest_rate_limit_per_s": 500, "rest_error_max_trials": 2,
              "rest_error_cooldown_s": 0.01, "restart_interval_s": 0.05},
    )  # fmt: skip
    cycles = []

    def fifth_cycle(line: str) -> bool:
        if '"dst": "Running.Recovering"' in line:
            cycles.append(line)
        return len(cycles) >= 5

    done = cli.until("sync", "--config", str(config), stop_when=fifth_cycle)
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    recovering = [e for e in events if e.get("dst") == "Running.Recovering"]
    assert len(recovering) >= 5, done.stderr[-3000:]
    cause = "HTTP 503 /v3/futures/candles: Service Unavailable"
    for name in ("recoverable_error", "rest_request_retry"):
        errors = [e["error"] for e in events if e["event"] == name]
        assert len(errors) >= 4, (name, errors)
        assert cause in errors[0] and not any(cause in text for text in errors[1:]), errors
        assert re.search(r" again \(\d+(st|nd|rd|th) time in \d+ s\)$", errors[-1]), errors
    # the status transitions keep their error (the `logs` timeline reads it)
    assert all(cause in e["error"] for e in recovering)
    # a cycle: the evaluation, the retry, the failure, Recovering, Restarting; no copy of the
    # cause by another event (child_failed, db_writer_error: debug) and no Running.InProgress
    # transition after a failure without progress
    starts = [i for i, e in enumerate(events) if e.get("dst") == "Running.Recovering"]
    cycles_events = [[e["event"] for e in events[a:b]] for a, b in itertools.pairwise(starts)]
    assert all(len(cycle) <= 5 for cycle in cycles_events), cycles_events
    assert [] == [e for e in events if e["event"] in ("child_failed", "db_writer_error")]
    assert [] == [e for e in events[starts[0] :] if e.get("dst") == "Running.InProgress"]


def test_tables_show_values_not_python_reprs() -> None:
    """status shows yes/no, none and joined lists (never ``[]`` or ``True``); the TUI's reach
    reads as days, hours and minutes."""
    from qx_actors.app._database_report import _shown
    from qx_actors.app.tui.render import format_span

    assert ["yes", "no", "none", "a, b", "—", "3"] == [
        _shown(v) for v in (True, False, [], ["a", "b"], None, 3)
    ]
    assert "3d 21h 35m" == format_span(3 * 86400 + 21 * 3600 + 35 * 60)
    assert "0m" == format_span(20)
