"""Holes anywhere in the reach are found and repaired by the next backfill pass, oldest first.

A stored history is written through ``Storage`` with holes left out, as an interrupted first
backfill leaves them (long ranges are fetched in parallel parts; a kill or a failed last trial
leaves whole parts missing): one 25-day hole from 31 to 6 days ago, i.e. starting before the
4-week ``price_history_flag_gap_range``, and holes at random ages from one day to the reach.
The next run must report every hole in its first history state, repair them all in its first
pass (oldest first), and only then report ``Backfilled``, with the database equal to the
simulator's truth. The run's clock is pinned (engine and simulator share a ``ManualClock``) at
instants chosen across the day, so the test means the same at any hour.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from qx_actors.domain.history import PriceHistoryState, last_stable_minute
from qx_actors.domain.timeutil import MINUTE, floor_minute
from qx_actors.domain.values import Candle
from qx_actors.simulator import ManualClock
from qx_actors.status import State
from qx_actors.storage import Database, open_storage
from qx_actors.updates import PriceHistoryStateUpdate, StatusUpdate
from tests.integration.conftest import Harness

Span = tuple[datetime, datetime]

#: the reach of these runs: long enough for a 25-day hole from 31 to 6 days ago
REACH_DAYS = 35
#: how long the engine may take for the first pass (a deadline, not a speed claim)
PASS_DEADLINE_S = 180.0


def punch_holes(rng: random.Random, now: datetime, reach: datetime, count: int) -> list[Span]:
    """The 25-day hole from 31 to 6 days ago plus ``count`` holes of 1..3000 minutes at random
    ages (1 day .. the reach); holes closer than 11 minutes are merged (a gap fetch re-fetches
    5 neighbours on each side, so nearby holes are one repair)."""
    holes = [(floor_minute(now - timedelta(days=31)), floor_minute(now - timedelta(days=6)))]
    oldest_age = (now - reach) // MINUTE - 1
    for _ in range(count):
        age = rng.randint(24 * 60, oldest_age)
        start = floor_minute(now) - age * MINUTE
        length = rng.randint(1, 3000)
        end = min(start + (length - 1) * MINUTE, floor_minute(now - timedelta(days=1)))
        holes.append((start, max(start, end)))
    merged: list[Span] = []
    for start, end in sorted(holes):
        if merged and start <= merged[-1][1] + 11 * MINUTE:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def write_history(url: str, candles: list[Candle], holes: list[Span], now: datetime) -> int:
    """Store ``candles`` minus the holes through ``Storage``, newest first in 1000-candle
    batches (as the engine writes pages); returns how many were stored."""
    kept = [c for c in candles if not any(a <= c.time <= b for a, b in holes)]
    kept.reverse()
    with open_storage(url) as storage:
        for first in range(0, len(kept), 1000):
            storage.upsert_candles(kept[first : first + 1000], now=now)
    return len(kept)


@pytest.mark.parametrize(
    ("pinned", "seed"),
    [
        (datetime(2026, 2, 10, 0, 5, 17, tzinfo=UTC), 1),
        (datetime(2026, 2, 10, 16, 45, 41, tzinfo=UTC), 2),
        (datetime(2026, 2, 10, 23, 59, 53, tzinfo=UTC), 3),
    ],
    ids=["00:05", "16:45", "23:59"],
)
def test_holes_anywhere_in_the_reach_are_repaired_oldest_first(
    harness: Harness, pinned: datetime, seed: int
) -> None:
    """Every hole (also one starting before the gap-flag range) is found in the first state,
    repaired in the first pass oldest first, and the database then equals the truth."""
    clock = ManualClock(pinned)
    sim = harness.simulator(clock=clock)
    config = harness.config(sim, price_history_reach=f"{REACH_DAYS}d")
    now = clock()
    reach = config.sync.price_history_reach_at(now)
    assert config.sync.price_history_flag_gap_range_h == 672  # the default 4 weeks
    holes = punch_holes(random.Random(seed), now, reach, count=4)
    # one hole starts before the gap-flag range and reaches into it
    assert any(a < now - timedelta(weeks=4) < b for a, b in holes)
    history_end = floor_minute(now - timedelta(hours=2))
    truth = sim.market.final_candles(reach, history_end)
    write_history(harness.database_url, truth, holes, now)

    run = harness.start(config, clock=clock)
    status = run.wait_for_state(State.BACKFILLED, timeout=PASS_DEADLINE_S)
    assert State.BACKFILLED == status.state, status

    # the first pass: everything the receiver delivered up to the first Backfilled
    first_pass: list[PriceHistoryState] = []
    for update in run.updates:
        if isinstance(update, StatusUpdate) and update.status.state is State.BACKFILLED:
            break
        if isinstance(update, PriceHistoryStateUpdate):
            first_pass.append(update.state)

    # every hole is seen at once, wherever it is
    expected = holes
    assert expected == [(g.start, g.end) for g in first_pass[0].gaps]

    # repaired oldest first: the gaps left are always the newest ones, in order
    progress = []
    for state in first_pass:
        left = [(g.start, g.end) for g in state.gaps]
        assert left == expected[len(expected) - len(left) :], left
        progress.append(len(left))
    assert progress == sorted(progress, reverse=True)
    assert 0 == progress[-1]

    # Backfilled means every minute of [reach, now - 1 h] is stored (no downtime here)
    final_state = first_pass[-1]
    assert () == final_state.gaps
    assert final_state.earliest == reach
    stable_end = last_stable_minute(now)
    with Database(harness.database_url) as db:
        rows = db.candles(reach, stable_end + MINUTE, now=now)
        facts = db.price_history_facts()
    want = sim.market.final_candles(reach, stable_end)
    assert len(want) == len(rows) == (stable_end - reach) // MINUTE + 1
    assert [(c.time, c.open, c.high, c.low, c.close, c.volume) for c in want] == [
        (r.time, r.open, r.high, r.low, r.close, r.volume) for r in rows
    ]
    assert all(r.stable for r in rows)
    assert () == facts.holes
    run.shutdown()
