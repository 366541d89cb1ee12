"""RunHealth.view: the one fold of the update stream that the progress lines and the TUI read."""

from __future__ import annotations

from datetime import UTC, datetime

from qx_actors.domain.values import PriceTick
from qx_actors.observability import RunHealth
from qx_actors.status import State, SyncStatus
from qx_actors.updates import Lagged, PriceTickUpdate

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class ManualClock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_view_folds_ticks_per_second_and_lag_as_the_snapshot_does() -> None:
    """Ticks committed, last price, ticks per whole second and the receivers' lag: the same
    figures in view() and snapshot()."""
    clock = ManualClock()
    health = RunHealth(lambda: SyncStatus(State.SYNCED), monotonic=clock)
    for second, count in ((100.2, 3), (101.5, 1), (103.0, 6)):
        clock.now = second
        for _ in range(count):
            health.observe(PriceTickUpdate(PriceTick(T0, 42_000.0 + count)))
    health.observe(Lagged(4))
    clock.now = 104.1
    view = health.view()
    assert (10, 42_006.0, T0, 4) == (view.ticks, view.last_price, view.last_tick_time, view.lagged)
    assert [3.0, 1.0, 0.0, 6.0] == view.tick_series(4)
    assert 10 / 5 == view.ticks_per_second(5)
    assert State.SYNCED is view.status.state
    snapshot = health.snapshot()
    assert (10, 42_006.0, 4) == (
        snapshot["ticks_committed"],
        snapshot["last_price"],
        snapshot["updates_lagged"],
    )


def test_the_view_forgets_seconds_past_its_window() -> None:
    """Only the last TICK_WINDOW_S seconds of ticks per second are kept."""
    clock = ManualClock()
    health = RunHealth(lambda: SyncStatus(State.SYNCED), monotonic=clock)
    for second in range(100, 400):
        clock.now = float(second)
        health.observe(PriceTickUpdate(PriceTick(T0, 1.0)))
    view = health.view()
    assert 300 == view.ticks
    assert len(view.per_second) <= 122
    assert [1.0] * 5 == view.tick_series(5)
