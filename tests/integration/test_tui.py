"""The sync TUI, driven by Textual's own test driver against the simulator and a real engine.

Every test runs the real app (``App.run_test()`` / Pilot) on a real ``SyncEngine`` syncing from
the bundled simulator (HTTP + WebSocket on 127.0.0.1) into a SQLite file; waits poll the app
with ``pilot.pause`` under a generous deadline; every engine is shut down at the end.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from textual.pilot import Pilot
from textual.widgets import RichLog

from qx_actors.app.tui import EXIT_FORCED, SyncTui, render, run_tui
from qx_actors.app.tui.logtap import LogTap
from qx_actors.config import QxConfig, config_from_mapping
from qx_actors.domain.history import PriceHistoryFacts, PriceHistoryState
from qx_actors.logs import get_logger
from qx_actors.simulator import Simulator, SimulatorConfig
from qx_actors.status import State
from qx_actors.sync_engine import SyncEngine
from tests.cli_helpers import InProcessCli
from tests.helpers import FlakyProgram, stuck_child_spawner, until_state

#: Generous: the machine is shared; a wait ends as soon as its condition holds.
DEADLINE_S = 90.0

FAST_SYNC: dict[str, Any] = {
    "price_history_reach": "3h",
    "funding_settlement_reach": "2d",
    "rest_rate_limit_per_s": 1000,
    "rest_timeout_s": 5,
    "rest_error_cooldown_s": 0.05,
    "restart_interval_s": 0.1,
    "shutdown_timeout_s": 5.0,
    "price_history_re_sync_interval_s": 5,
    "price_history_re_backfill_interval_s": 60,
    "live_price_tick_max_interval_s": 30,
}

Scenario = Callable[[Pilot[int], SyncTui], Awaitable[None]]


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """Each test starts from structlog's defaults (debug included) and restores the config."""
    saved = structlog.get_config()
    structlog.reset_defaults()
    try:
        yield
    finally:
        structlog.configure(**saved)


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    sim = Simulator(SimulatorConfig(rate_limit_per_s=None, tick_rate_per_s=20)).start()
    try:
        yield sim
    finally:
        sim.stop()


def full_config(simulator: Simulator, tmp_path: Path, mode: str = "full") -> QxConfig:
    return config_from_mapping(
        {
            "mode": mode,
            "database": f"sqlite:///{tmp_path / 'tui.db'}",
            "exchange": {
                "rest_url": simulator.rest_url,
                "stream_url": simulator.stream_url,
                "stream_enabled": True,
            },
            "sync": FAST_SYNC,
        }
    )


def drive(app: SyncTui, scenario: Scenario, *, size: tuple[int, int] = (150, 50)) -> None:
    """Run ``app`` headless under Textual's test driver with ``scenario``; whatever happens,
    the run is shut down and the app's threads are joined afterwards."""

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await scenario(pilot, app)

    try:
        asyncio.run(main())
    finally:
        controller = app.controller
        if controller is not None and controller.status_snapshot().is_running:
            controller.shutdown()
        app.join_threads(15)


async def until(pilot: Pilot[int], app: SyncTui, condition: Callable[[], bool], what: str) -> None:
    """Let the app run until ``condition()`` holds (bounded by :data:`DEADLINE_S`)."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE_S} s: {what}; header: {app.header!r}")
        await pilot.pause(0.05)


def pane(app: SyncTui, name: str) -> str:
    text: str = app.query_one(f"#{name}").plain  # type: ignore[attr-defined]
    return text


def exited(app: SyncTui) -> Callable[[], bool]:
    return lambda: app.return_code is not None


# --- acceptance: a full demo-like run, then q ---------------------------------------------


def test_full_run_reaches_synced_with_ticks_then_q_shuts_down(
    simulator: Simulator, tmp_path: Path
) -> None:
    """Coverage 100 %, Running.Synced, ticks arriving in the live pane; q -> Shutdown, exit 0."""
    engine = SyncEngine.from_config(full_config(simulator, tmp_path))
    app = SyncTui(engine, engine.config)
    seen: dict[str, Any] = {}

    async def scenario(pilot: Pilot[int], app: SyncTui) -> None:
        assert engine.run_id in app.header
        assert "mode Full" in app.header
        await until(pilot, app, lambda: "100.00 %" in pane(app, "history"), "coverage 100 %")
        await until(pilot, app, lambda: "Running.Synced" in app.header, "Running.Synced")
        await until(pilot, app, lambda: app.model.ticks >= 5, "ticks")
        await until(pilot, app, lambda: "last price" in pane(app, "live-text"), "live pane drawn")
        first = app.model.ticks
        await until(pilot, app, lambda: app.model.ticks > first + 5, "more ticks")
        await until(
            pilot, app, lambda: f"{app.model.ticks:,}" in pane(app, "live-text"), "ticks shown"
        )
        live = pane(app, "live-text")
        assert "last price -" not in live
        assert "/s" in live
        funding = pane(app, "funding")
        assert "missing" in funding and "reach" in funding
        history = pane(app, "history")
        assert "ETA" not in history  # nothing left to fetch
        seen["log"] = list(app.log_lines())
        await pilot.press("q")
        await until(pilot, app, exited(app), "the app exits after q")

    drive(app, scenario)
    assert 0 == app.return_code
    assert State.SHUTDOWN is engine.status_snapshot().state
    assert "Shutdown" in app.header
    assert "Running" not in app.header
    assert any("status_transition" in line for line in seen["log"])
    # a healthy run's own events at info: what the fetches stored, the stream subscribed
    for event in ("candles_stored", "settlements_stored", "stream_subscribed"):
        assert any(event in line for line in seen["log"]), (event, seen["log"])
    # The TUI's log tap is gone: structlog is as before.
    assert not any(isinstance(p, LogTap) for p in structlog.get_config()["processors"])


def test_a_stop_event_shuts_down_like_q(simulator: Simulator, tmp_path: Path) -> None:
    """``stop_event`` (the CLI's --duration timer, SIGTERM) starts the graceful shutdown."""
    engine = SyncEngine.from_config(full_config(simulator, tmp_path, mode="backfill"))
    stop = threading.Event()
    app = SyncTui(engine, engine.config, stop_event=stop)

    async def scenario(pilot: Pilot[int], app: SyncTui) -> None:
        await until(pilot, app, lambda: "Running.Backfilled" in app.header, "Backfilled")
        assert "backfill mode: no live feed" in pane(app, "live-text")
        stop.set()
        await until(pilot, app, exited(app), "the app exits after the stop event")

    drive(app, scenario)
    assert 0 == app.return_code
    assert State.SHUTDOWN is engine.status_snapshot().state


def test_run_tui_runs_a_sync_until_its_stop_event(simulator: Simulator, tmp_path: Path) -> None:
    """The entry point the CLI calls: starts the engine, and once the stop event is set (here
    by another subscriber that saw ``Running.Synced``) shuts it down and returns 0."""
    engine = SyncEngine.from_config(full_config(simulator, tmp_path))
    stop = threading.Event()
    receiver = engine.update_receiver()
    seen: list[State] = []

    def watch() -> None:
        try:
            seen.extend(s.state for s in until_state(receiver, State.SYNCED, timeout=DEADLINE_S))
        finally:
            stop.set()

    watcher = threading.Thread(target=watch, name="qx-test-watcher")
    watcher.start()
    try:
        code = run_tui(engine, engine.config, stop_event=stop, headless=True)
    finally:
        stop.set()
        watcher.join(DEADLINE_S)
    assert State.SYNCED in seen
    assert 0 == code
    assert State.SHUTDOWN is engine.status_snapshot().state
    assert not any(isinstance(p, LogTap) for p in structlog.get_config()["processors"])


# --- keys -------------------------------------------------------------------------------


def test_l_toggles_the_log_pane_and_tab_moves_focus(simulator: Simulator, tmp_path: Path) -> None:
    engine = SyncEngine.from_config(full_config(simulator, tmp_path))
    app = SyncTui(engine, engine.config)

    async def scenario(pilot: Pilot[int], app: SyncTui) -> None:
        log = app.query_one("#log", RichLog)
        state = app.query_one("#state")
        assert log.display and app.focused is log
        await pilot.press("tab")
        assert app.focused is state
        await pilot.press("tab")
        assert app.focused is log
        await pilot.press("l")
        assert not log.display
        assert app.focused is state  # the hidden pane gave the focus away
        await pilot.press("tab")
        assert app.focused is state  # only the visible pane takes focus
        await pilot.press("l")
        assert log.display
        await pilot.press("tab")
        assert app.focused is log
        await pilot.press("q")
        await until(pilot, app, exited(app), "the app exits after q")

    drive(app, scenario)
    assert 0 == app.return_code


def test_arrows_and_pages_scroll_the_focused_pane(simulator: Simulator, tmp_path: Path) -> None:
    """A small terminal: the state column and the log overflow and scroll with the keys."""
    engine = SyncEngine.from_config(full_config(simulator, tmp_path))
    app = SyncTui(engine, engine.config)

    async def scenario(pilot: Pilot[int], app: SyncTui) -> None:
        log = app.query_one("#log", RichLog)
        state = app.query_one("#state")
        await until(pilot, app, lambda: "Running.Synced" in app.header, "Running.Synced")
        events = get_logger(run_id=engine.run_id, actor="test")
        for index in range(60):
            events.info("test_line", index=index)
        await until(pilot, app, lambda: log.max_scroll_y > 3, "a log longer than the pane")
        await until(pilot, app, lambda: state.max_scroll_y > 3, "state taller than the pane")
        assert log.scroll_y == log.max_scroll_y  # follows the tail
        await pilot.press("pageup")
        await pilot.pause()
        assert log.scroll_y < log.max_scroll_y
        before = log.scroll_y
        await pilot.press("down")
        await pilot.pause()
        assert log.scroll_y == before + 1
        await pilot.press("tab")
        assert app.focused is state
        assert state.scroll_y == 0
        await pilot.press("pagedown")
        await pilot.pause()
        assert state.scroll_y > 0
        await pilot.press("up")
        await pilot.pause()
        await pilot.press("q")
        await until(pilot, app, exited(app), "the app exits after q")

    drive(app, scenario, size=(100, 18))
    assert 0 == app.return_code


def test_long_log_lines_wrap_at_the_pane_edge(simulator: Simulator, tmp_path: Path) -> None:
    """A line longer than the log pane is folded onto the next rows: nothing is cut, nothing
    is wider than the pane."""
    engine = SyncEngine.from_config(full_config(simulator, tmp_path, mode="backfill"))
    app = SyncTui(engine, engine.config)

    def rows() -> list[str]:
        return [strip.text for strip in app.query_one("#log", RichLog).lines]

    async def scenario(pilot: Pilot[int], app: SyncTui) -> None:
        await until(pilot, app, lambda: "Running.Backfilled" in app.header, "Backfilled")
        get_logger(run_id=engine.run_id, actor="test").info(
            "test_long_line", detail="x" * 300, tail="end-of-the-line"
        )
        await until(pilot, app, lambda: any("end-of-the-line" in r for r in rows()), "the tail")
        log = app.query_one("#log", RichLog)
        assert log.virtual_size.width <= log.scrollable_content_region.width
        assert 0 == log.max_scroll_x
        whole = [line for line in app.log_lines() if "test_long_line" in line]
        assert 1 == len(whole) and whole[0].endswith("tail=end-of-the-line")
        await pilot.press("q")
        await until(pilot, app, exited(app), "the app exits after q")

    drive(app, scenario, size=(100, 30))
    assert 0 == app.return_code


def test_the_level_filter_hides_debug_and_info_lines(simulator: Simulator, tmp_path: Path) -> None:
    engine = SyncEngine.from_config(full_config(simulator, tmp_path, mode="backfill"))
    app = SyncTui(engine, engine.config, min_level="debug")

    def levels() -> set[str]:
        return {line.split()[1] for line in app.log_lines()}

    async def scenario(pilot: Pilot[int], app: SyncTui) -> None:
        await until(pilot, app, lambda: "Running.Backfilled" in app.header, "Backfilled")
        # bound now, as the run's actors are: after the TUI put its tap in the chain
        get_logger(run_id=engine.run_id, actor="test").warning("test_warning_line", detail="kept")
        get_logger(run_id="not-this-run", actor="test").warning("another_runs_line")
        await until(
            pilot, app, lambda: any("test_warning_line" in x for x in app.log_lines()), "warning"
        )
        assert {"DEBUG", "INFO", "WARNING"} <= levels()  # state evaluations, transitions
        assert not any("another_runs_line" in x for x in app.log_lines())
        await pilot.press("f")  # >= info
        assert "DEBUG" not in levels() and "INFO" in levels()
        await pilot.press("f")  # >= warning
        assert levels() == {"WARNING"}
        assert any("test_warning_line" in x and "detail=kept" in x for x in app.log_lines())
        assert "log ≥ warning" in str(app.query_one("#log").border_title)
        await pilot.press("f", "f")  # error, then back to debug: everything again
        assert {"DEBUG", "INFO", "WARNING"} <= levels()
        await pilot.press("q")
        await until(pilot, app, exited(app), "the app exits after q")

    drive(app, scenario)
    assert 0 == app.return_code


def test_a_second_q_forces_the_exit(tmp_path: Path, simulator: Simulator) -> None:
    """A run whose shutdown hangs (a child that does not stop): the first q starts the graceful
    shutdown, the second leaves at once with 130 while the run is still shutting down."""
    release = threading.Event()
    config = full_config(simulator, tmp_path, mode="backfill")
    program: Any = FlakyProgram()
    engine = SyncEngine(
        config,
        program=program,
        children={"stuck": stuck_child_spawner(release)},
        stop_order=("stuck",),
    )
    app = SyncTui(engine, config)

    async def scenario(pilot: Pilot[int], app: SyncTui) -> None:
        await until(pilot, app, lambda: "Running.Backfilled" in app.header, "Backfilled")
        await pilot.press("q")
        await until(pilot, app, lambda: "ShutdownInitiated" in app.header, "ShutdownInitiated")
        assert "q again to force" in app.header
        await pilot.press("q")
        await until(pilot, app, exited(app), "the app exits after the second q")
        # left without waiting: the run is still shutting down
        assert State.SHUTDOWN_INITIATED is engine.status_snapshot().state
        release.set()

    try:
        drive(app, scenario)
    finally:
        release.set()
    assert EXIT_FORCED == app.return_code
    assert app.forced
    assert app.controller is not None
    assert State.SHUTDOWN is app.controller.until_stopped(timeout=30).state


# --- the price-history pane's wording -----------------------------------------------------


def test_the_history_pane_shows_gaps_verified_empty_ranges_and_the_eta() -> None:
    """A gap and a verified-empty range each show in the coverage bar and are listed."""

    def t(hour: int, minute: int) -> datetime:
        return datetime(2026, 1, 1, hour, minute, tzinfo=UTC)

    facts = PriceHistoryFacts(
        earliest=t(0, 0),
        latest=t(3, 0),
        holes=((t(1, 0), t(1, 9)), (t(2, 0), t(2, 29))),
        verified_empty=((t(2, 0), t(2, 29)),),
        earliest_unstable=None,
    )
    state = PriceHistoryState.evaluate(facts, reach=t(0, 0), now=t(3, 0).replace(second=30))
    cells = render.coverage_cells(state, 18)  # 181 minutes: about 10 a cell
    assert 18 == len(cells)
    assert [render.GAP] == [c for c in cells if c == render.GAP]
    assert render.VERIFIED in cells
    assert render.MISSING not in cells
    text = render.history_text(state, rate_per_s=0.5, page_size=1000, bar_width=18).plain
    assert "coverage    94.47 %" in text  # 171 of 181 minutes, rounded down
    assert "missing     10 min  ETA 0:00:02 at 0.5 req/s" in text
    assert "gaps        1 (10 min)\n  2026-01-01 01:00 .. 2026-01-01 01:09  10 min" in text
    assert "verified    1 (30 min)\n  2026-01-01 02:00 .. 2026-01-01 02:29  30 min" in text


def test_sync_tui_without_a_terminal_is_a_usage_error(cli: InProcessCli, tmp_path: Path) -> None:
    """`qx-actors sync --tui` piped: one clear line, exit 2, nothing started."""
    import yaml

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"database": f"sqlite:///{tmp_path / 'x.db'}"}))
    done = cli("sync", "--config", str(config), "--tui")
    assert 2 == done.returncode
    assert "qx-actors sync: --tui needs a terminal" == done.stderr.strip()
    assert not (tmp_path / "x.db").exists()
