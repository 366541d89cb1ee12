"""The programs of ``examples/`` run as written: real subprocesses against a real simulator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qx_actors.simulator import Simulator

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def run_example(
    name: str, args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python examples/NAME`` in ``cwd`` (bounded); its completed process."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p
    )
    for key in ("QX_CONFIG", "QX_REST_URL", "QX_STREAM_URL", "QX_DATABASE"):
        if env is None or key not in env:
            full_env.pop(key, None)
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def lines(text: str) -> list[str]:
    """The non-empty lines of ``text``."""
    return [line for line in text.splitlines() if line.strip()]


def assert_clean_live_run(result: subprocess.CompletedProcess[str], ticks: int) -> list[str]:
    """Exit 0, no traceback, ``ticks`` ticks numbered in order, Synced then Shutdown."""
    out = lines(result.stdout)
    assert 0 == result.returncode, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    numbered = [int(line.split()[1]) for line in out if line.startswith("tick ")]
    assert numbered[:ticks] == list(range(1, ticks + 1))
    statuses = [line.removeprefix("status ") for line in out if line.startswith("status ")]
    assert "Running.Synced" in statuses
    assert ["ShutdownInitiated", "Shutdown"] == statuses[-2:]
    assert "final Shutdown" == out[-1]
    return out


def test_threaded_example_reads_update_receiver_until_the_run_ends(
    simulator: Simulator, tmp_path: Path
) -> None:
    """threaded.py (URLs as arguments): N ticks, a shutdown, the receiver loop ends by itself."""
    result = run_example(
        "threaded.py",
        [
            "--rest-url",
            simulator.rest_url,
            "--stream-url",
            simulator.stream_url,
            "--database",
            f"sqlite:///{tmp_path / 'threaded.db'}",
            "--ticks",
            "5",
        ],
        cwd=tmp_path,
    )
    out = assert_clean_live_run(result, ticks=5)
    assert out.index("updates ended") > out.index("status Shutdown")
    assert (tmp_path / "threaded.db").exists()


def test_actor_example_is_told_every_update_by_subscribe(
    simulator: Simulator, tmp_path: Path
) -> None:
    """actor.py (URLs from the environment): the actor prints ticks and the last status."""
    result = run_example(
        "actor.py",
        ["--ticks", "5"],
        cwd=tmp_path,
        env={
            "QX_REST_URL": simulator.rest_url,
            "QX_STREAM_URL": simulator.stream_url,
            "QX_DATABASE": f"sqlite:///{tmp_path / 'actor.db'}",
        },
    )
    out = assert_clean_live_run(result, ticks=5)
    stopped = next(line for line in out if line.startswith("actor stopped after "))
    assert out.index(stopped) > out.index("status Shutdown")


def test_asyncio_example_follows_a_backfill_with_async_for(
    simulator: Simulator, tmp_path: Path
) -> None:
    """asyncio_app.py: Backfilled, then Shutdown, and the async for ends by itself."""
    result = run_example(
        "asyncio_app.py",
        ["--rest-url", simulator.rest_url, "--database", f"sqlite:///{tmp_path / 'async.db'}"],
        cwd=tmp_path,
    )
    out = lines(result.stdout)
    assert 0 == result.returncode, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    statuses = [line.removeprefix("status ") for line in out if line.startswith("status ")]
    assert [
        "Running.Starting",
        "Running.InProgress",
        "Running.Backfilled",
        "ShutdownInitiated",
        "Shutdown",
    ] == statuses
    history = [line for line in out if line.startswith("history ")]
    assert history and history[-1].endswith(", 0 gaps")
    assert "final Shutdown" == out[-1]


@pytest.mark.parametrize("name", ["threaded.py", "actor.py", "asyncio_app.py"])
def test_a_bad_config_is_one_line_and_exit_2(name: str, tmp_path: Path) -> None:
    """A config error is reported in one line, no traceback."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("sync:\n  rest_timeout_s: -1\n", encoding="utf-8")
    result = run_example(name, ["--config", str(bad)], cwd=tmp_path)
    assert 2 == result.returncode
    assert "Traceback" not in result.stderr
    assert ["rest_timeout_s" in line for line in lines(result.stderr)] == [True]


def test_backtest_example_decides_the_same_over_live_and_replay(tmp_path: Path) -> None:
    """backtest.py: one strategy over a live simulator run and over a replay of its recording
    prints the same decisions."""
    result = run_example("backtest.py", ["--ticks", "100"], cwd=tmp_path)
    out = lines(result.stdout)
    assert 0 == result.returncode, result.stdout + result.stderr
    live = [line.split(None, 1)[1] for line in out if line.lstrip().startswith("live ")]
    replayed = [line.split(None, 1)[1] for line in out if line.lstrip().startswith("replay ")]
    assert live == replayed
    assert "same decisions: True" == out[-1]
