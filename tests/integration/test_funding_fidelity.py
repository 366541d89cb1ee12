"""Funding settlements as quantoxide: the reach floored to the grid, and its two fatal errors
(a missing settlement older than the reach; no settlements below the stored ones down to the
reach) instead of a pass that ends quietly.

Every run reads a fixed market clock (2026-01-10 09:30 UTC, between two settlements; a reach
of "max" is read at :data:`EARLY_NOW`, a few weeks into the schedule, not five years of it),
so the reach and the schedule are the same at any hour the tests run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from qx_actors.domain.timeutil import FIRST_SETTLEMENT_TIME
from qx_actors.errors import SettlementsBeforeHistoryStart, UnreachableMissingSettlement
from qx_actors.simulator import ManualClock, Simulator
from qx_actors.status import State
from qx_actors.storage import Database
from tests.integration.conftest import Harness

NOW = datetime(2026, 1, 10, 9, 30, tzinfo=UTC)
#: "20d" before NOW is 2025-12-21 09:30: floored to 08:00 (rounding up would give 16:00).
REACH_20D = datetime(2025, 12, 21, 8, tzinfo=UTC)
#: The clock of the tests with reach "max": the whole schedule is ~100 settlements then.
EARLY_NOW = datetime(2021, 2, 15, 9, 30, tzinfo=UTC)


def stored_times(url: str) -> list[datetime]:
    with Database(url) as db:
        return [s.time for s in db.settlements(FIRST_SETTLEMENT_TIME, NOW)]


def exchange_times(sim: Simulator, start: datetime) -> list[datetime]:
    return [s.time for s in sim.market.settlements(start, NOW)]


def fmt(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_reach_is_floored_to_the_settlement_grid(harness: Harness) -> None:
    """The settlement at or before the reach is stored: the table starts at 08:00, not 16:00."""
    clock = ManualClock(NOW)
    sim = harness.simulator(clock=clock)
    run = harness.start(harness.config(sim, funding_settlement_reach="20d"), clock=clock)
    assert State.BACKFILLED == run.wait(State.BACKFILLED, timeout=30).state
    assert exchange_times(sim, REACH_20D) == stored_times(harness.database_url)
    state = run.funding_states()[-1]
    assert REACH_20D == state.reach
    assert (REACH_20D, datetime(2026, 1, 10, 8, tzinfo=UTC)) == state.bounds
    assert not state.has_missing()
    assert state.is_range_available(REACH_20D, datetime(2026, 1, 10, 8, tzinfo=UTC))
    run.shutdown()


def test_no_settlements_down_to_the_reach_fails(harness: Harness) -> None:
    """The exchange has nothing below 2025-12-25 (nor in the page under the reach): Failed
    with SettlementsBeforeHistoryStart naming that start and the reach; what it has is kept."""
    clock = ManualClock(NOW)
    sim = harness.simulator(clock=clock)
    sim.faults.hide_settlements(FIRST_SETTLEMENT_TIME, datetime(2025, 12, 25, tzinfo=UTC))
    run = harness.start(harness.config(sim, funding_settlement_reach="20d"), clock=clock)
    final = run.controller.until_stopped(timeout=30)
    assert State.FAILED == final.state
    assert isinstance(final.error, SettlementsBeforeHistoryStart)
    assert "before 2025-12-25T08:00:00Z" in str(final.error)
    assert f"reach {fmt(REACH_20D)}" in str(final.error)
    assert exchange_times(sim, datetime(2025, 12, 25, 8, tzinfo=UTC)) == stored_times(
        harness.database_url
    )
    # the latest range, then one page below the reach; the lower bound is not asked twice
    assert 2 == sim.request_count("funding-settlements")


def test_no_first_settlement_with_reach_max_fails(harness: Harness) -> None:
    """With reach "max" there is nothing below the first settlement to look at: the exchange
    lacking it is SettlementsBeforeHistoryStart at once."""
    clock = ManualClock(EARLY_NOW)
    sim = harness.simulator(clock=clock)
    hidden_end = FIRST_SETTLEMENT_TIME + timedelta(days=2)
    sim.faults.hide_settlements(FIRST_SETTLEMENT_TIME, hidden_end)
    run = harness.start(harness.config(sim, funding_settlement_reach="max"), clock=clock)
    final = run.controller.until_stopped(timeout=60)
    assert State.FAILED == final.state
    assert isinstance(final.error, SettlementsBeforeHistoryStart)
    assert "before 2021-01-14T08:00:00Z" in str(final.error)
    assert "older than the first settlement" in str(final.error)


def test_downtime_at_the_reach_is_stepped_over(harness: Harness) -> None:
    """The exchange lacks the two settlements at the reach but has older ones: as quantoxide's
    open-ended lower page, one page below the reach is stored and the run goes on, the two
    reported missing (asked for once per pass)."""
    clock = ManualClock(NOW)
    sim = harness.simulator(clock=clock)
    hidden = [REACH_20D, REACH_20D + timedelta(hours=8)]
    sim.faults.hide_settlements(hidden[0], hidden[-1])
    run = harness.start(harness.config(sim, funding_settlement_reach="20d"), clock=clock)
    assert State.BACKFILLED == run.wait(State.BACKFILLED, timeout=30).state
    state = run.funding_states()[-1]
    assert tuple(hidden) == state.missing
    assert state.bound_start is not None and state.bound_start < REACH_20D
    stored = stored_times(harness.database_url)
    assert 1000 - 1 <= sum(1 for t in stored if t < REACH_20D) <= 1000
    assert [t for t in exchange_times(sim, stored[0]) if t not in hidden] == stored
    assert not state.is_range_available(REACH_20D, NOW)
    assert state.is_range_available(
        REACH_20D + timedelta(hours=16), NOW - timedelta(hours=1, minutes=30)
    )
    run.wait_passes(run.passes() + 2)
    assert State.BACKFILLED == run.controller.status_snapshot().state
    run.shutdown()


def test_missing_settlement_older_than_the_reach_fails(harness: Harness) -> None:
    """A hole stored under a 20-day reach becomes older than the reach when it shrinks to 10
    days: Failed with UnreachableMissingSettlement naming the hole and the reach."""
    clock = ManualClock(NOW)
    sim = harness.simulator(clock=clock)
    hole = datetime(2025, 12, 25, tzinfo=UTC)
    sim.faults.hide_settlements(hole, hole)
    first = harness.start(harness.config(sim, funding_settlement_reach="20d"), clock=clock)
    assert State.BACKFILLED == first.wait(State.BACKFILLED, timeout=30).state
    assert (hole,) == first.funding_states()[-1].missing
    first.shutdown()
    again = harness.start(harness.config(sim, funding_settlement_reach="10d"), clock=clock)
    final = again.controller.until_stopped(timeout=30)
    assert State.FAILED == final.state
    assert isinstance(final.error, UnreachableMissingSettlement)
    assert fmt(hole) in str(final.error)
    assert "reach 2025-12-31T08:00:00Z" in str(final.error)
