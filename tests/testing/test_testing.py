"""qx_actors.testing: the public helpers for tests of an embedding application."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from qx_actors import SyncEngine, testing
from qx_actors.simulator import Simulator
from qx_actors.status import State, SyncStatus
from qx_actors.testing import Harness, RunEnded, RunProbe, fast_config, running_simulator
from qx_actors.updates import StatusUpdate, UpdateReceiver
from tests.helpers import FlakyProgram

pytestmark = pytest.mark.timeout(60)


def scripted_engine(database: str, program: Any = None) -> SyncEngine:
    """An engine running ``program`` (default: one pass to Backfilled, then idle) with no
    child actors: nothing talks to an exchange or a database."""
    config = fast_config(database, rest_url="http://127.0.0.1:9", stream=False)
    return SyncEngine(config, program=program or FlakyProgram(), children={})


def test_public_names_are_sorted_and_exist() -> None:
    """``__all__`` is sorted and every name in it is there."""
    assert sorted(testing.__all__) == testing.__all__
    assert [] == [name for name in testing.__all__ if not hasattr(testing, name)]


def test_importing_the_module_does_not_import_pytest() -> None:
    """pytest stays optional: only the plugin module needs it."""
    code = (
        "import sys, qx_actors.testing, qx_actors.testing.postgres; print('pytest' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "False" == done.stdout.strip()


def test_fast_config_points_at_the_simulator(tmp_path: Path) -> None:
    """The simulator's URLs, the database, FAST_SYNC under the overrides given."""
    with running_simulator() as sim:
        config = fast_config(f"sqlite:///{tmp_path / 'a.db'}", sim, mode="live", rest_timeout_s=7)
        urls = (sim.rest_url, sim.stream_url)
    assert urls == (config.exchange.rest_url, config.exchange.stream_url)
    assert 7 == config.sync.rest_timeout_s
    assert testing.FAST_SYNC["restart_interval_s"] == config.sync.restart_interval_s
    assert "live" == config.mode


def test_running_simulator_serves_then_stops() -> None:
    """The context manager's simulator is listening inside the block and stopped after it."""
    with running_simulator(tick_rate_per_s=0) as sim:
        assert sim.is_running
        assert sim.config.rate_limit_per_s is None
    assert not sim.is_running


def test_probe_reads_the_whole_timeline_and_shuts_down(tmp_path: Path) -> None:
    """Starting to Backfilled, then a graceful shutdown: every status read, on the graph."""
    run = RunProbe.start(scripted_engine(f"sqlite:///{tmp_path / 'a.db'}"))
    run.wait_for_state(State.BACKFILLED)
    final = run.shutdown()
    expected = [
        "Running.Starting",
        "Running.InProgress",
        "Running.Backfilled",
        "ShutdownInitiated",
        "Shutdown",
    ]
    assert expected == [s.name for s in run.statuses]
    assert State.SHUTDOWN is final.state
    assert [] == run.off_graph_steps()


def test_probe_counts_passes_across_recoveries(tmp_path: Path) -> None:
    """Two recoverable failures, then Backfilled: the probe waits on the count of a state."""
    run = RunProbe.start(
        scripted_engine(f"sqlite:///{tmp_path / 'a.db'}", program=FlakyProgram(failures=2))
    )
    with run:
        run.wait_for_count(State.BACKFILLED, 1)
        assert 2 == run.state_count(State.RECOVERING)


def test_waiting_for_a_state_the_run_never_reaches_raises_run_ended(tmp_path: Path) -> None:
    """A terminal status while waiting for another state: RunEnded carries it."""
    program = FlakyProgram(fatal=RuntimeError("boom"))
    engine = scripted_engine(f"sqlite:///{tmp_path / 'a.db'}", program)
    with RunProbe.start(engine) as run, pytest.raises(RunEnded) as caught:
        run.wait_for_state(State.SYNCED)
    assert caught.value.status is not None
    assert State.FAILED is caught.value.status.state


def test_waiting_past_the_deadline_raises_timeout_naming_what(tmp_path: Path) -> None:
    """No Synced in a backfill run: TimeoutError after the deadline, with what was seen."""
    with RunProbe.start(scripted_engine(f"sqlite:///{tmp_path / 'a.db'}")) as run:
        run.wait_for_state(State.BACKFILLED)
        with pytest.raises(TimeoutError, match=r"reaching Running\.Synced.*Running\.Backfilled"):
            run.wait_for_state(State.SYNCED, timeout=0.2)


def test_a_status_change_off_the_graph_is_reported() -> None:
    """A timeline with a jump the graph does not have fails the check."""
    probe = RunProbe.reading(UpdateReceiver(10))
    for state in (State.STARTING, State.IN_PROGRESS, State.SYNCED, State.STARTING):
        probe.record(StatusUpdate(SyncStatus(state)))
    assert [(State.SYNCED, State.STARTING)] == probe.off_graph_steps()
    with pytest.raises(AssertionError, match="off the graph"):
        probe.check_timeline()


def test_logged_transitions_are_checked_against_the_graph() -> None:
    """Edges chain from NotInitiated; a transition the graph lacks is named."""
    good = [
        {"event": "status_transition", "trigger": "start", "src": "NotInitiated",
         "dst": "Running.Starting", "run_id": "a"},
        {"event": "status_transition", "trigger": "fatal_error", "src": "Running.Starting",
         "dst": "Failed", "run_id": "a"},
    ]  # fmt: skip
    assert [("start", "NotInitiated", "Running.Starting")] == testing.logged_transitions(
        good[:1], run_id="a"
    )
    assert 2 == len(testing.assert_transitions_follow_graph(good, run_id="a"))
    bad = [{**good[0], "trigger": "synced"}]
    with pytest.raises(AssertionError):
        testing.assert_transitions_follow_graph(bad)


def test_harness_stops_its_runs_and_simulators(tmp_path: Path) -> None:
    """Leaving the harness stops every run and simulator it started."""
    with Harness(f"sqlite:///{tmp_path / 'a.db'}") as harness:
        sim = harness.simulator()
        run = harness.watch(scripted_engine(f"sqlite:///{tmp_path / 'a.db'}"))
        run.wait_for_state(State.BACKFILLED)
    assert run.controller.status_snapshot().is_stopped
    assert not sim.is_running


def test_plugin_fixtures(qx_simulator: Simulator, qx_harness: Harness) -> None:
    """The pytest plugin's simulator serves; its harness writes to a SQLite file."""
    assert qx_simulator.is_running
    assert qx_harness.database_url is not None
    assert qx_harness.database_url.startswith("sqlite:///")
