"""Funding settlements end to end: backfill against the simulator's schedule, into a DB."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from qx_actors.domain.settlements import floor_settlement_time
from qx_actors.domain.timeutil import FIRST_SETTLEMENT_TIME
from qx_actors.errors import ExchangeDecodeError, InvalidMarketData
from qx_actors.simulator import Simulator
from qx_actors.status import State
from qx_actors.storage import Database
from tests.integration.conftest import Harness

#: Later than any settlement a test can store.
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)


def settlements(url: str) -> list[tuple]:
    """Every stored settlement as ``(id, time, fixing_price, funding_rate)``, oldest first."""
    with Database(url) as db:
        rows = db.settlements(FIRST_SETTLEMENT_TIME, FAR_FUTURE)
    return [(s.id, s.time, s.fixing_price, s.funding_rate) for s in rows]


def schedule(sim: Simulator, start: datetime = FIRST_SETTLEMENT_TIME) -> list[tuple]:
    """The simulator's settlements from ``start`` to its now, as :func:`settlements` rows."""
    return [
        (s.id, s.time, s.fixing_price, s.funding_rate)
        for s in sim.market.settlements(start, sim.market.now())
    ]


def pages_asked(sim: Simulator) -> int:
    """How many distinct settlement pages were asked for (a retried request asks the same
    page again: on a loaded machine a slow answer may be asked twice)."""
    return len(
        {
            tuple(sorted(r.query.items()))
            for r in sim.requests()
            if r.endpoint == "funding-settlements" and r.status == 200
        }
    )


def test_backfill_from_max_stores_the_whole_schedule(harness: Harness) -> None:
    """With reach "max" the table equals the exchange's schedule exactly, in a few pages."""
    sim = harness.simulator()
    run = harness.start(harness.config(sim, funding_settlement_reach="max"))
    run.wait_for_state(State.BACKFILLED, timeout=30)
    expected = schedule(sim)
    assert len(expected) > 3000  # several pages (from 2021 to any date of 2024 on)
    assert expected == settlements(harness.database_url)
    assert -(-len(expected) // 1000) == pages_asked(sim)
    asked = sim.request_count("funding-settlements")
    state = run.funding_settlement_states[-1]
    assert state.is_caught_up and state.is_complete
    run.wait_for_count(State.BACKFILLED, 3)
    # later passes have nothing to fetch
    assert asked == sim.request_count("funding-settlements")
    run.shutdown()


def test_hidden_settlements_are_fetched_on_a_later_pass(harness: Harness) -> None:
    """Settlements missing inside the scan are asked for once per pass and stored once the
    exchange serves them."""
    now = harness.now()
    first = floor_settlement_time(now - timedelta(days=10))
    last = floor_settlement_time(now - timedelta(days=9))
    sim = harness.simulator()
    sim.faults.hide_settlements(first, last)
    run = harness.start(harness.config(sim, funding_settlement_reach="20d"))
    run.wait_for_state(State.BACKFILLED)
    start = floor_settlement_time(now - timedelta(days=20))
    hidden = [row for row in schedule(sim, start) if first <= row[1] <= last]
    assert len(hidden) >= 3
    assert [row for row in schedule(sim, start) if row not in hidden] == settlements(
        harness.database_url
    )
    assert [row[1] for row in hidden] == list(run.funding_settlement_states[-1].missing)
    asked = sim.request_count("funding-settlements")
    run.wait_for_count(State.BACKFILLED, 3)
    # once per pass, not in a loop
    assert sim.request_count("funding-settlements") - asked in (2, 3)  # 3: a new settlement
    sim.faults.reveal_hidden()
    run.wait_for_count(State.BACKFILLED, run.state_count(State.BACKFILLED) + 2)
    assert schedule(sim, start) == settlements(harness.database_url)
    assert () == run.funding_settlement_states[-1].missing
    run.shutdown()


def test_off_grid_settlement_is_recoverable_naming_it(harness: Harness) -> None:
    """A settlement off the schedule (03:00) → retried, then Recovering (never Failed) naming
    its time; nothing of it stored. (More in ``test_bad_market_data.py``.)"""
    off_grid = floor_settlement_time(harness.now() - timedelta(days=1)).replace(hour=3)
    sim = harness.simulator()
    sim.faults.add_off_grid_settlement(off_grid)
    run = harness.start(harness.config(sim))
    recovering = run.wait_for_state(State.RECOVERING)
    assert isinstance(recovering.error, InvalidMarketData)
    assert off_grid.strftime("%Y-%m-%dT%H:%M:%SZ") in str(recovering.error)
    assert [] == settlements(harness.database_url)
    assert State.SHUTDOWN == run.shutdown().state


def test_wrong_settlement_type_is_recoverable_naming_the_field(harness: Harness) -> None:
    """A settlement with a string funding rate on every answer → retried, then Recovering
    (never Failed) naming the field path; nothing stored."""
    sim = harness.simulator()
    sim.faults.wrong_types_next(1_000_000, endpoint="funding-settlements")
    run = harness.start(harness.config(sim))
    recovering = run.wait_for_state(State.RECOVERING)
    assert isinstance(recovering.error, ExchangeDecodeError)
    text = str(recovering.error)
    assert re.search(r"at \$\.data\[0\]\.fundingRate", text), text
    assert [] == settlements(harness.database_url)
    assert State.SHUTDOWN == run.shutdown().state


def test_restart_does_not_download_stored_settlements_again(harness: Harness) -> None:
    """A restart on an existing database asks at most for a settlement newer than the stored."""
    sim = harness.simulator()
    config = harness.config(sim, funding_settlement_reach="20d")
    run = harness.start(config)
    run.wait_for_state(State.BACKFILLED)
    run.shutdown()
    stored = settlements(harness.database_url)
    asked = sim.requests()
    again = harness.start(config)
    again.wait_for_state(State.BACKFILLED)
    new = [r for r in sim.requests()[len(asked) :] if r.endpoint == "funding-settlements"]
    assert len(new) <= 1  # 1 only if a settlement time passed in between
    assert all(r.query["from"] > stored[-1][1].strftime("%Y-%m-%dT%H:%M") for r in new)
    assert stored == settlements(harness.database_url)[: len(stored)]
    again.shutdown()


def test_missing_scan_off_fetches_no_hole_and_reach_scans_the_whole_reach(
    harness: Harness,
) -> None:
    """``funding_settlement_flag_missing_range_h: null`` (quantoxide's ``None``): settlements
    missing between the stored ones are neither looked for nor fetched, pass after pass, even
    once the exchange serves them. The default 672 h does not look 35 days back; ``reach``
    looks through the whole reach, and a restart with it fetches them."""
    now = harness.now()
    first = floor_settlement_time(now - timedelta(days=35))
    last = floor_settlement_time(now - timedelta(days=34))
    sim = harness.simulator()
    sim.faults.hide_settlements(first, last)
    url = harness.database_url

    off = harness.start(
        harness.config(
            sim, funding_settlement_reach="40d", funding_settlement_flag_missing_range_h=None
        )
    )
    off.wait_for_state(State.BACKFILLED)
    start = floor_settlement_time(now - timedelta(days=40))
    hidden = [row for row in schedule(sim, start) if first <= row[1] <= last]
    assert len(hidden) >= 3
    assert [row for row in schedule(sim, start) if row not in hidden] == settlements(url)
    state = off.funding_settlement_states[-1]
    assert (None, ()) == (state.scan_from, state.missing)
    assert not state.has_missing() and state.is_complete
    sim.faults.reveal_hidden()
    asked = sim.request_count("funding-settlements")
    off.wait_for_count(State.BACKFILLED, off.state_count(State.BACKFILLED) + 2)
    # at most a settlement time that passed meanwhile; the hole is never asked for
    assert sim.request_count("funding-settlements") - asked <= 1
    assert not set(hidden) & set(settlements(url))
    off.shutdown()

    default = harness.start(harness.config(sim, funding_settlement_reach="40d"))
    default.wait_for_state(State.BACKFILLED)
    assert () == default.funding_settlement_states[-1].missing  # older than 672 h
    assert not set(hidden) & set(settlements(url))
    default.shutdown()

    whole = harness.start(
        harness.config(
            sim, funding_settlement_reach="40d", funding_settlement_flag_missing_range_h="reach"
        )
    )
    whole.wait_for_state(State.BACKFILLED)
    assert set(hidden) <= set(settlements(url))
    assert schedule(sim, start) == settlements(url)[: len(schedule(sim, start))]
    assert () == whole.funding_settlement_states[-1].missing
    assert whole.funding_settlement_states[0].missing == tuple(row[1] for row in hidden)
    whole.shutdown()
