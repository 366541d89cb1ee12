"""Every subcommand with hostile arguments: one clear line, never a traceback, and a non-zero
exit when it failed.

Hostile: missing files, paths under a regular file, a directory that does not exist, a config
that is not UTF-8 or wrong everywhere, a file that is not a database, ports in use, closed
pipes, URLs where nothing listens.

The commands run in this process (the ``cli`` fixture: ``cli.main(argv)``, output captured),
except into a closed pipe: there a real ``qx-actors`` process writes into a pipe whose reader
is gone and must end quietly with exit 141 (or 0), as Unix tools do.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from qx_actors.domain.values import PriceTick
from qx_actors.storage import open_storage
from tests.cli_helpers import CliResult, InProcessCli

CLI = [sys.executable, "-m", "qx_actors.cli"]
ROOT = Path(__file__).resolve().parents[2]
COMMANDS = (
    "sync", "simulate", "demo", "status", "export", "plan", "config", "graph", "logs", "adopt",
    "catalog", "serve",
)  # fmt: skip


def run_process(*args: str, stdout: int, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the real qx-actors process with ``args`` to completion (stdin closed)."""
    return subprocess.run(
        [*CLI, *args], stdout=stdout, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        text=True, timeout=timeout, cwd=ROOT, check=False,
    )  # fmt: skip


def assert_one_line_error(done: CliResult, *expected: str) -> str:
    """A failure: non-zero exit, no traceback, one line on stderr that says ``expected``."""
    err = done.stderr
    assert "Traceback" not in err and "Traceback" not in done.stdout, err
    assert 0 != done.returncode, (done.returncode, err)
    lines = err.strip().splitlines()
    assert 1 == len(lines), err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that is in use (listening) for the test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.fixture
def closed_pipe() -> Iterator[int]:
    """The write end of a pipe whose reader is already gone (every write: EPIPE)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        yield write_end
    finally:
        os.close(write_end)


def config_file(tmp_path: Path, database: str, **top: object) -> Path:
    """A valid config with ``database``; nothing listens at its exchange URLs."""
    path = tmp_path / f"qx-{len(list(tmp_path.iterdir()))}.yaml"
    data = {
        "mode": "backfill",
        "database": database,
        "exchange": {"rest_url": "http://127.0.0.1:9", "stream_url": "ws://127.0.0.1:9/v1"},
        "sync": {"price_history_reach": "1d", "rest_timeout_s": 1, "restart_interval_s": 0.2,
                 "rest_error_cooldown_s": 0.05, "shutdown_timeout_s": 3,
                 "rest_rate_limit_per_s": 1000},
        "logging": {"format": "json"},
        **top,
    }  # fmt: skip
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def not_a_database(tmp_path: Path) -> str:
    """The URL of a file that is no SQLite database."""
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database\n" * 200)
    return f"sqlite:///{garbage}"


@pytest.fixture
def tick_database(tmp_path: Path) -> str:
    """A real database holding 5000 ticks (more than a pipe buffers when exported)."""
    url = f"sqlite:///{tmp_path / 'ticks.db'}"
    start = datetime(2026, 1, 1, tzinfo=UTC)
    storage = open_storage(url)
    try:
        storage.insert_new_ticks(
            [PriceTick(start + timedelta(milliseconds=250 * i), 90_000.5 + i) for i in range(5000)]
        )
    finally:
        storage.close()
    return url


def test_every_command_on_a_missing_config_file(cli: InProcessCli, tmp_path: Path) -> None:
    """--config pointing nowhere: exit 2, the file named."""
    missing = str(tmp_path / "missing.yaml")
    for command in ("sync", "status", "plan", "config"):
        done = cli(command, "--config", missing)
        assert 2 == done.returncode, (command, done.stderr)
        assert_one_line_error(done, "cannot read config file", "missing.yaml")
    done = cli("export", "--config", missing, "--from", "2026-01-01", "--to", "2026-01-02")
    assert_one_line_error(done, "missing.yaml")
    done = cli("demo", "--config", missing, "--duration", "1")
    assert_one_line_error(done, "missing.yaml")


def test_a_config_that_is_not_utf8(cli: InProcessCli, tmp_path: Path) -> None:
    """Latin-1 bytes in the config: the line of the bad byte, no UnicodeDecodeError."""
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"mode: full\ndatabase: sqlite:///caf\xe9.db\n")
    for command in ("config", "sync", "plan", "status"):
        done = cli(command, "--config", str(latin))
        assert 2 == done.returncode
        assert_one_line_error(done, "not UTF-8", "line 2")


def test_every_config_error_is_reported_at_once(cli: InProcessCli, tmp_path: Path) -> None:
    """Four wrong keys: four lines, one per key, exit 2."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "mode: sideways\nsync:\n  rest_timeout_s: abc\n  nope: 1\nlogging:\n  level: loud\n"
    )
    done = cli("config", "--config", str(bad))
    assert 2 == done.returncode
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert 4 == len(lines), lines
    assert all(line.startswith("qx-actors config: invalid config: ") for line in lines)
    for key in ("mode:", "sync.rest_timeout_s:", "sync.nope:", "logging.level:"):
        assert any(key in line for line in lines), (key, lines)


def test_export_to_a_directory_that_does_not_exist(
    cli: InProcessCli, tick_database: str, tmp_path: Path
) -> None:
    """--output /nonexistent/dir/x.csv: the path and the reason, exit 1."""
    config = config_file(tmp_path, tick_database)
    done = cli(
        "export", "--config", str(config), "--kind", "ticks", "--from", "2026-01-01",
        "--to", "2026-01-02", "--output", "/nonexistent/dir/x.csv",
    )  # fmt: skip
    assert 1 == done.returncode
    assert_one_line_error(done, "qx-actors export", "No such file or directory", "/nonexistent")


def test_export_into_a_pipe_closed_early(tick_database: str, tmp_path: Path) -> None:
    """``export | head -3``: three lines out, the exporter ends quietly (no BrokenPipeError)."""
    config = config_file(tmp_path, tick_database)
    command = [
        *CLI, "export", "--config", str(config), "--kind", "ticks", "--from", "2026-01-01",
        "--to", "2026-01-02",
    ]  # fmt: skip
    exporter = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True
    )
    assert exporter.stdout is not None and exporter.stderr is not None
    head = [exporter.stdout.readline() for _ in range(3)]
    exporter.stdout.close()  # what head does after its three lines
    err = exporter.stderr.read()
    exporter.stderr.close()
    code = exporter.wait(timeout=60)
    assert ["time,last_price\n", "2026-01-01T00:00:00Z,90000.5\n"] == head[:2]
    assert "2026-01-01T00:00:00.250000Z,90001.5\n" == head[2]
    assert "" == err
    assert -signal.SIGPIPE != code and code in (0, 141)


@pytest.mark.parametrize(
    "args",
    [
        ("graph",),
        ("config", "--config", str(ROOT / "config" / "demo.yaml")),
    ],
)
def test_output_into_a_closed_pipe_is_quiet(args: tuple[str, ...], closed_pipe: int) -> None:
    """Whatever the command prints, a closed pipe is no error message: exit 141, silent (a
    real process: the command points its fd 1 at /dev/null then)."""
    done = run_process(*args, stdout=closed_pipe)
    assert (141, "") == (done.returncode, done.stderr)


@pytest.mark.parametrize("command", ["status", "plan"])
def test_tables_into_a_closed_pipe_exit_141(
    command: str, tick_database: str, tmp_path: Path, closed_pipe: int
) -> None:
    """``status | true`` and ``plan | true``: exit 141 and silent, as every other command (rich
    would exit 1 by itself)."""
    config = config_file(tmp_path, tick_database)
    done = run_process(command, "--config", str(config), stdout=closed_pipe)
    assert (141, "") == (done.returncode, done.stderr)


def test_config_errors_name_the_command(cli: InProcessCli, tmp_path: Path) -> None:
    """A config error names the command that read the file (exit 2)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: fast\nlookback: 20 x 5m\n")
    for command in ("sync", "status", "plan", "config"):
        done = cli(command, "--config", str(bad))
        line = assert_one_line_error(done, f"qx-actors {command}: invalid config: mode: ")
        assert 2 == done.returncode
        assert 'got "fast"' in line, line
        assert "mode is 'full'" not in line, line


def test_a_sqlite_path_in_a_missing_directory_creates_nothing(
    cli: InProcessCli, tmp_path: Path
) -> None:
    """A mistyped SQLite path (its directory does not exist): one line naming the directory,
    exit 1, and no directory nor database made."""
    missing = tmp_path / "nonexistent" / "dir"
    config = config_file(tmp_path, f"sqlite:///{missing / 'x.db'}")
    done = cli("sync", "--config", str(config))
    assert 1 == done.returncode
    assert_one_line_error(done, "qx-actors sync", "no directory", str(missing))
    assert not (tmp_path / "nonexistent").exists()


def test_export_refuses_parquet_to_a_terminal(
    cli: InProcessCli, tick_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """export --format parquet without --output on a terminal: exit 2, nothing written."""
    config = config_file(tmp_path, tick_database)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    done = cli(
        "export", "--config", str(config), "--kind", "ticks", "--format", "parquet",
        "--from", "2026-01-01", "--to", "2026-01-02",
    )  # fmt: skip
    assert 2 == done.returncode
    assert_one_line_error(done, "qx-actors export", "--output")
    assert "" == done.stdout


def test_duration_must_be_positive_seconds(cli: InProcessCli) -> None:
    """sync/demo --duration takes seconds > 0: anything else is a usage error (exit 2)."""
    for command in ("sync", "demo"):
        for value in ("0", "-1", "soon"):
            done = cli(command, "--config", "x.yaml", "--duration", value)
            assert 2 == done.returncode, (command, value, done.stderr)
            assert "expected seconds" in done.stderr


def test_export_with_a_resolution_for_settlements(
    cli: InProcessCli, tick_database: str, tmp_path: Path
) -> None:
    """--resolution is for candles: refused for settlements and ticks, exit 2."""
    config = config_file(tmp_path, tick_database)
    for kind in ("settlements", "ticks"):
        done = cli(
            "export", "--config", str(config), "--kind", kind, "--resolution", "1h",
            "--from", "2026-01-01", "--to", "2026-01-02",
        )  # fmt: skip
        assert 2 == done.returncode
        assert_one_line_error(done, "--resolution", "candles only")


def test_export_with_bad_times(cli: InProcessCli, tick_database: str, tmp_path: Path) -> None:
    """--from that is no time, --to before --from: exit 2."""
    config = config_file(tmp_path, tick_database)
    done = cli("export", "--config", str(config), "--from", "soon", "--to", "2026-01-02")
    assert 2 == done.returncode
    assert_one_line_error(done, "soon")
    done = cli("export", "--config", str(config), "--from", "2026-01-02", "--to", "2026-01-01")
    assert 2 == done.returncode
    assert_one_line_error(done, "--to must be after --from")


def test_commands_on_a_file_that_is_not_a_database(
    cli: InProcessCli, not_a_database: str, tmp_path: Path
) -> None:
    """status, plan and export on garbage: an error naming the problem, exit 1 (plan does not
    plan a full fetch)."""
    config = config_file(tmp_path, not_a_database)
    for args in (
        ("status", "--config", str(config)),
        ("plan", "--config", str(config)),
        ("export", "--config", str(config), "--from", "2026-01-01", "--to", "2026-01-02"),
    ):
        done = cli(*args)
        assert 1 == done.returncode, (args, done.stderr)
        assert_one_line_error(done, f"qx-actors {args[0]}")
        assert "requests; ETA" not in done.stdout


def test_sync_with_a_log_file_in_a_missing_directory(cli: InProcessCli, tmp_path: Path) -> None:
    """logging.file under a regular file: the path and the reason, exit 1."""
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    config = config_file(
        tmp_path,
        f"sqlite:///{tmp_path / 'qx.db'}",
        logging={"format": "json", "file": str(blocker / "qx.log")},
    )
    done = cli("sync", "--config", str(config))
    assert 1 == done.returncode
    assert_one_line_error(done, "qx-actors sync", "blocker")


def test_sync_with_the_metrics_port_in_use(
    cli: InProcessCli, busy_port: int, tmp_path: Path
) -> None:
    """metrics.listen on a port in use: said before anything runs, exit 1."""
    config = config_file(
        tmp_path, f"sqlite:///{tmp_path / 'qx.db'}", metrics={"listen": f"127.0.0.1:{busy_port}"}
    )
    done = cli("sync", "--config", str(config))
    assert 1 == done.returncode
    assert_one_line_error(done, f"127.0.0.1:{busy_port}", "address already in use")


def test_simulate_on_a_port_in_use(cli: InProcessCli, busy_port: int) -> None:
    """simulate where something already listens: one line, exit 1."""
    done = cli("simulate", "--port", str(busy_port), "--stream-port", "0")
    assert 1 == done.returncode
    assert_one_line_error(done, "qx-actors simulate", str(busy_port), "address already in use")
    done = cli("simulate", "--port", "0", "--stream-port", str(busy_port))
    assert_one_line_error(done, str(busy_port), "address already in use")


def test_demo_with_a_database_under_a_regular_file(cli: InProcessCli, tmp_path: Path) -> None:
    """demo --database where no directory can be made: the path, exit 1."""
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    done = cli("demo", "--duration", "1", "--database", f"sqlite:///{blocker}/sub/demo.db")
    assert 1 == done.returncode
    assert_one_line_error(done, "qx-actors demo", "blocker")


def test_sync_against_urls_where_nothing_listens(cli: InProcessCli, tmp_path: Path) -> None:
    """Wrong exchange URLs are recoverable: the run recovers and retries (no traceback), and
    SIGINT still ends it with Shutdown, exit 0."""
    config = config_file(tmp_path, f"sqlite:///{tmp_path / 'qx.db'}")

    def recovering(line: str) -> bool:
        record = json.loads(line) if line.startswith("{") else {}
        return bool(record.get("dst") == "Running.Recovering")

    done = cli.until("sync", "--config", str(config), stop_when=recovering)
    assert "Traceback" not in done.stderr + done.stdout
    transitions = [
        json.loads(line)["dst"]
        for line in done.stderr.splitlines()
        if '"status_transition"' in line
    ]
    assert "Running.Recovering" in transitions and "Failed" not in transitions, transitions
    assert 130 == done.returncode, done.stderr  # Ctrl-C: 130, after a graceful Shutdown
    assert "run ended: Shutdown" in done.stderr


def test_logs_on_files_without_json_transitions(cli: InProcessCli, tmp_path: Path) -> None:
    """logs: a missing file, a console-format log or an unknown --run (exit 1 each, as the
    README's table says) are said in one line instead of a blank one."""
    done = cli("logs", str(tmp_path / "missing.log"))
    assert 1 == done.returncode
    assert_one_line_error(done, "cannot read", "missing.log")

    console = tmp_path / "console.log"
    console.write_text(
        "2026-12-01 04:47:57 [info     ] status_transition  dst=Running.Starting run_id=r1\n"
    )
    done = cli("logs", str(console))
    assert "" == done.stdout
    assert_one_line_error(done, "no status_transition events", "logging.format: json")

    binary = tmp_path / "binary.log"
    binary.write_bytes(b"\xff\xfe\x00garbage\n")
    assert_one_line_error(cli("logs", str(binary)), "no status_transition events")

    log = tmp_path / "run.log"
    log.write_text(
        json.dumps(
            {"event": "status_transition", "run_id": "r1", "mode": "backfill", "trigger": "start",
             "src": "NotInitiated", "dst": "Running.Starting", "error": None,
             "timestamp": "2026-01-01T00:00:00Z"}
        ) + "\n"
    )  # fmt: skip
    done = cli("logs", str(log), "--run", "nope")
    assert "" == done.stdout
    assert_one_line_error(done, "no run 'nope'", "r1")
    assert 0 == cli("logs", str(log), "--run", "r1").returncode


def test_usage_errors_are_argparse_lines(cli: InProcessCli, tmp_path: Path) -> None:
    """Unknown commands and options: argparse's usage and one error line, exit 2."""
    for args in (("frobnicate",), ("export", "--kind", "trades"), ("simulate", "--port", "x")):
        done = cli(*args)
        assert 2 == done.returncode
        assert "Traceback" not in done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("qx-actors"), done.stderr


def test_adopt_hostile_databases(cli: InProcessCli, not_a_database: str, tmp_path: Path) -> None:
    """adopt: a file that is not a database, a URL where nothing listens, a bad scheme."""
    for url in (
        not_a_database,
        "postgresql://qx:S3cret@127.0.0.1:9/qx",
        "mysql://somewhere/db",
    ):
        done = cli("adopt", "--database", url)
        line = assert_one_line_error(done, "qx-actors")
        assert "S3cret" not in line


def test_catalog_of_a_database_that_is_not_there(cli: InProcessCli, tmp_path: Path) -> None:
    """catalog rebuild/verify of a missing file, an unreachable server, another scheme: one
    line, no password."""
    for action in ("rebuild", "verify"):
        for url in (
            f"sqlite:///{tmp_path / 'missing.db'}",
            "postgresql://qx:S3cret@127.0.0.1:9/qx",
            "mysql://somewhere/db",
        ):
            done = cli("catalog", action, "--database", url)
            line = assert_one_line_error(done, "qx-actors catalog")
            assert "S3cret" not in line


def test_serve_refuses_what_it_cannot_serve(cli: InProcessCli, tmp_path: Path) -> None:
    """serve with no database, a bad address, a bad window or speed: one line naming what was
    wrong (the flag and the value written), before anything listens."""
    demo = str(ROOT / "config" / "demo.yaml")
    missing = tmp_path / "missing.yaml"
    missing.write_text(f"mode: live\ndatabase: sqlite:///{tmp_path / 'none.db'}\n")
    cases = [
        (("--config", str(missing)), 1, ("qx-actors serve", "no database at")),
        (("--config", demo, "--listen", "nonsense"), 2, ("--listen", "'nonsense'")),
        (("--config", demo, "--replay", "2026-01-01"), 2, ("--replay", "'2026-01-01'")),
        (("--config", demo, "--replay", "2026-01-02..2026-01-01"), 2, ("--replay", "not after")),
        (
            ("--config", demo, "--replay", "2026-01-01..2026-01-02", "--speed", "fast"),
            2,
            ("--speed", "'fast'"),
        ),
        (("--config", demo, "--speed", "3"), 2, ("--speed", "only valid with --replay")),
    ]
    for args, code, expected in cases:
        done = cli("serve", *args)
        assert_one_line_error(done, "qx-actors serve", *expected)
        assert code == done.returncode, (args, done.stderr)


def test_every_subcommand_was_tried() -> None:
    """This file covers each subcommand of the parser (a new one needs its hostile case)."""
    from qx_actors.app.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert set(COMMANDS) == set(subparsers.choices or {})
