"""Holes outside the reach are not the engine's business (issue 18).

A hole wholly older than the current reach is neither fatal nor fetched: the run goes on, the
state lists it in ``holes_before_reach``. A hole that straddles the reach is repaired from the
reach on. Before this issue both ended the run ``Failed: UnreachableGapError`` (holes are found
anywhere in the table and a rolling reach moves past them). Shown on a history of ours whose
reach was shortened (both backends) and on an adopted quantoxide database whose history goes
further back than the reach, in backfill and live mode. The clock is pinned.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from qx_actors.app import cli
from qx_actors.domain.history import PriceHistoryState
from qx_actors.domain.timeutil import MINUTE, floor_day
from qx_actors.simulator import ManualClock, Simulator
from qx_actors.simulator.rest import RequestRecord
from qx_actors.status import State
from qx_actors.storage import Database, open_storage
from qx_actors.testing import Harness, RunProbe
from tests.quantoxide_db import connect, create_quantoxide_schema, fill_quantoxide

Span = tuple[datetime, datetime]

PINNED = datetime(2026, 5, 20, 10, 17, 23, tzinfo=UTC)
#: ``1d`` at PINNED: the reach is floored to midnight.
REACH = floor_day(PINNED - timedelta(days=1))
#: A 10-minute hole two days before the reach, and one straddling it (23:50 .. 00:09).
OLD_HOLE = (REACH - timedelta(days=2, hours=3), REACH - timedelta(days=2, hours=3) + 9 * MINUTE)
STRADDLING = (REACH - 10 * MINUTE, REACH + 9 * MINUTE)
HISTORY_START = REACH - timedelta(days=3)
DEADLINE_S = 120.0


@pytest.fixture
def harness(storage_url: str) -> Iterator[Harness]:
    with Harness(storage_url) as started:
        yield started


def asked(records: list[RequestRecord]) -> list[Span]:
    """The minutes each candles request asked for (our client widens by a minute each side)."""
    spans = []
    for record in records:
        if record.endpoint == "candles" and "from" in record.query:
            start = datetime.fromisoformat(record.query["from"]) + MINUTE
            end = datetime.fromisoformat(record.query["to"]) - MINUTE
            spans.append((start, end))
    return spans


def overlaps(spans: list[Span], span: Span) -> bool:
    return any(a <= span[1] and span[0] <= b for a, b in spans)


def stored_minutes(url: str, span: Span) -> int:
    with Database(url) as database:
        return len(database.candles(span[0], span[1] + MINUTE))


def run_to(harness: Harness, sim: Simulator, clock: ManualClock, mode: str) -> RunProbe:
    config = harness.config(
        sim,
        mode=mode,
        stream=False,
        lookback="30 x 1m" if mode == "live" else None,
        price_history_reach="1d",
        price_history_re_sync_interval_s=0.05,
    )
    run = harness.start(config, clock=clock)
    state = State.BACKFILLED if mode == "backfill" else State.SYNCED
    run.wait_for_state(state, timeout=DEADLINE_S)
    return run


def check_outcome(run: RunProbe, sim: Simulator, url: str, mode: str) -> None:
    """Not failed; the old hole listed, not fetched, still empty; the straddling hole repaired
    from the reach on (the part before the reach left) in backfill mode, left alone by a live
    run (its lookback is all it backfills)."""
    first: PriceHistoryState = run.price_history_states[0]
    # the part of the straddling hole before the reach is listed too
    old = [OLD_HOLE, (STRADDLING[0], REACH - MINUTE)]
    assert old == [(h.start, h.end) for h in first.holes_before_reach]
    assert REACH == first.reach
    assert all(gap.start >= REACH for gap in first.gaps)
    assert not overlaps(asked(sim.requests()), OLD_HOLE)
    assert 0 == stored_minutes(url, OLD_HOLE)
    assert 0 == stored_minutes(url, (STRADDLING[0], REACH - MINUTE))
    assert (10 if mode == "backfill" else 0) == stored_minutes(url, (REACH, STRADDLING[1]))
    final = run.shutdown()
    assert State.SHUTDOWN is final.state, final


@pytest.mark.parametrize("mode", ["backfill", "live"])
def test_reach_shortened_past_a_hole(harness: Harness, storage_url: str, mode: str) -> None:
    """Our history of three days with holes, then runs with the reach shortened to one day."""
    clock = ManualClock(PINNED)
    sim = harness.simulator(clock=clock)
    truth = sim.market.final_candles(HISTORY_START, PINNED - timedelta(hours=2))
    kept = [c for c in truth if not any(a <= c.time <= b for a, b in (OLD_HOLE, STRADDLING))]
    with open_storage(storage_url) as storage:
        for first in range(0, len(kept), 1000):
            storage.upsert_candles(kept[first : first + 1000], now=PINNED)
    check_outcome(run_to(harness, sim, clock, mode), sim, storage_url, mode)


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["backfill", "live"])
def test_adopted_quantoxide_history_older_than_the_reach(postgres_db_url: str, mode: str) -> None:
    """quantoxide's three days with the same holes, adopted, then synced with a 1-day reach."""
    url = postgres_db_url
    clock = ManualClock(PINNED)
    with Harness(url) as harness:
        sim = harness.simulator(clock=clock)
        create_quantoxide_schema(url)
        fill_quantoxide(
            url, sim.market, start=HISTORY_START, last=PINNED - timedelta(hours=2), now=PINNED
        )
        with connect(url) as cursor:
            for first, last in (OLD_HOLE, STRADDLING):
                cursor.execute(
                    "DELETE FROM ohlc_candles WHERE time >= %s AND time <= %s", (first, last)
                )
        assert 0 == cli.main(["adopt", "--database", url])
        check_outcome(run_to(harness, sim, clock, mode), sim, url, mode)
