"""Young candles become final in every mode, whatever the lookback, across stops (issue 18).

The exchange revises a candle for an hour. Every scenario here runs the whole engine against
the simulator on one pinned :class:`~qx_actors.simulator.ManualClock` and moves that clock
on in steps of at most 5 simulated minutes, waiting after each step for a pass that evaluated
the history at the new instant *and fetched* (two published states at that instant: one
before the fetch, one after). At the end, every stored candle at least an hour old must be
``stable`` and equal to the simulator's final values; every younger one must be unstable (it
may still change). quantoxide gets there by fetching at least the last 66 minutes on every
re-sync; so do we, plus a fetch of older unstable runs (left by a stop) anywhere in the reach.

Before this issue, ``lookback: 20 x 1m`` and 70 simulated minutes left every candle
unstable with provisional values (live mode only fetched what was missing near the head).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qx_actors.domain.history import is_stable_candle_time
from qx_actors.simulator import ManualClock, Simulator
from qx_actors.status import State
from qx_actors.storage import Database
from qx_actors.testing import Harness, RunProbe

#: A pinned instant well inside a day (the scenarios run over the next ~3 hours).
PINNED = datetime(2026, 3, 4, 10, 17, 23, tzinfo=UTC)
STEP = timedelta(minutes=5)
#: A deadline for one pass, not a speed claim.
PASS_DEADLINE_S = 60.0

LIVE_SYNC = {
    "price_history_re_sync_interval_s": 0.02,
    "price_history_reach": "1d",
    "live_price_tick_max_interval_s": 600,
}


@pytest.fixture
def harness(storage_url: str) -> Iterator[Harness]:
    with Harness(storage_url) as started:
        yield started


def start_live(
    harness: Harness,
    sim: Simulator,
    clock: ManualClock,
    *,
    lookback: str | None,
    stream: bool = False,
    mode: str = "live",
) -> RunProbe:
    sync = dict(LIVE_SYNC)
    if mode != "live":
        sync["price_history_re_backfill_interval_s"] = 0.02
    config = harness.config(sim, mode=mode, lookback=lookback, stream=stream, **sync)
    run = harness.start(config, clock=clock)
    run.wait_for_state(State.BACKFILLED if mode == "backfill" else State.SYNCED, PASS_DEADLINE_S)
    return run


def fetched_at(run: RunProbe, when: datetime) -> None:
    """Wait until a pass evaluated the history at ``when`` and fetched (two states at it)."""
    run.wait_until(
        lambda: sum(1 for state in run.price_history_states if state.now == when) >= 2,
        PASS_DEADLINE_S,
        what=f"a pass that fetched at {when.isoformat()}",
    )


def advance(run: RunProbe, clock: ManualClock, span: timedelta) -> None:
    """Move the clock on by ``span`` in steps of at most :data:`STEP`, a fetching pass each."""
    end = clock() + span
    while clock() < end:
        fetched_at(run, clock.advance(min(STEP, end - clock())))


def assert_final(url: str, sim: Simulator, now: datetime) -> tuple[int, int]:
    """Every stored candle >= 1 h old is stable and the exchange's final value; younger
    ones are unstable. Returns (final, young) counts."""
    with Database(url) as database:
        rows = database.candles(now - timedelta(days=2), now + timedelta(minutes=1))
    assert rows, "nothing stored"
    truth = {c.time: c for c in sim.market.final_candles(rows[0].time, rows[-1].time)}
    final = young = 0
    wrong = []
    for row in rows:
        if is_stable_candle_time(row.time, now):
            expected = truth[row.time]
            values = (row.open, row.high, row.low, row.close, row.volume)
            wanted = (expected.open, expected.high, expected.low, expected.close, expected.volume)
            if not row.stable or values != wanted:
                wrong.append((row.time.isoformat(), row.stable, values, wanted))
            final += 1
        else:
            assert not row.stable, f"{row.time.isoformat()} is young but stored stable"
            young += 1
    assert not wrong, f"{len(wrong)} of {final} old candles not final: {wrong[:3]}"
    return final, young


@pytest.mark.parametrize("lookback", ["20 x 1m", "90 x 1m", None], ids=["20m", "90m", "none"])
def test_live_candles_become_final_over_simulated_hours(
    harness: Harness, storage_url: str, lookback: str | None
) -> None:
    """Live (stream off), a lookback under or over an hour or none, 70 simulated minutes:
    every candle older than an hour ends stable with the final values."""
    clock = ManualClock(PINNED)
    sim = harness.simulator(clock=clock)
    run = start_live(harness, sim, clock, lookback=lookback)
    advance(run, clock, timedelta(minutes=70))
    final, young = assert_final(storage_url, sim, clock())
    assert final >= 10  # the candles of the first minutes of the run are now final
    assert 60 <= young <= 61
    run.shutdown()


@pytest.mark.parametrize("mode", ["full", "backfill"])
def test_full_and_backfill_candles_become_final(
    harness: Harness, storage_url: str, mode: str
) -> None:
    """Full and backfill modes (a one-day reach), stopped for 20 minutes on the way: the
    same."""
    clock = ManualClock(PINNED)
    sim = harness.simulator(clock=clock)
    first = start_live(harness, sim, clock, lookback=None, mode=mode)
    advance(first, clock, timedelta(minutes=15))
    first.shutdown()
    clock.advance(timedelta(minutes=20))
    second = start_live(harness, sim, clock, lookback=None, mode=mode)
    advance(second, clock, timedelta(minutes=70))
    final, young = assert_final(storage_url, sim, clock())
    assert final >= 10 * 60  # the reach starts at midnight, 10 hours before PINNED
    assert 60 <= young <= 61
    second.shutdown()


def test_live_without_lookback_after_a_stop(harness: Harness, storage_url: str) -> None:
    """Live without a lookback, stopped for 5 minutes and started again, then 75 minutes:
    the candles stored as young by the first run are fetched again and final."""
    clock = ManualClock(PINNED)
    sim = harness.simulator(clock=clock)
    first = start_live(harness, sim, clock, lookback=None)
    advance(first, clock, timedelta(minutes=10))
    first.shutdown()
    clock.advance(timedelta(minutes=5))
    second = start_live(harness, sim, clock, lookback=None)
    advance(second, clock, timedelta(minutes=75))
    final, _ = assert_final(storage_url, sim, clock())
    assert final >= 80  # the first run's hour of history and its 10 minutes
    second.shutdown()


def test_live_with_the_stream_on_keeps_revising_young_candles(
    harness: Harness, storage_url: str
) -> None:
    """With the stream on, the head re-sync still fetches the young candles again."""
    clock = ManualClock(PINNED)
    sim = harness.simulator(clock=clock, tick_rate_per_s=20)
    run = start_live(harness, sim, clock, lookback="20 x 1m", stream=True)
    advance(run, clock, timedelta(minutes=70))
    final, _ = assert_final(storage_url, sim, clock())
    assert final >= 10
    run.shutdown()


def test_a_stop_longer_than_an_hour_settles_the_old_young_candles(
    harness: Harness, storage_url: str
) -> None:
    """Live with a 20-minute lookback stopped for 3 hours: the unstable candles it left lie
    far below the new lookback and are still fetched again (once) and final."""
    clock = ManualClock(PINNED)
    sim = harness.simulator(clock=clock)
    first = start_live(harness, sim, clock, lookback="20 x 1m")
    advance(first, clock, timedelta(minutes=10))
    first.shutdown()
    clock.advance(timedelta(hours=3))
    second = start_live(harness, sim, clock, lookback="20 x 1m")
    fetched_at(second, clock())
    final, _ = assert_final(storage_url, sim, clock())
    assert final >= 30  # the first run's 30 minutes
    second.shutdown()


def test_random_stop_start_schedules_end_final(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Hypothesis: for random lookbacks and stop/start schedules (runs of 5..40 simulated
    minutes, stops of 0..150 minutes), after a last run of 70 minutes no candle older than
    an hour is unstable or differs from the simulator's final values."""

    @settings(
        max_examples=4,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(
        lookback=st.sampled_from([None, "20 x 1m", "90 x 1m", "3 x 5m"]),
        schedule=st.lists(
            st.tuples(st.integers(5, 40), st.integers(0, 150)), min_size=1, max_size=3
        ),
    )
    def scenario(lookback: str | None, schedule: list[tuple[int, int]]) -> None:
        url = f"sqlite:///{tmp_path_factory.mktemp('finality') / 'qx.db'}"
        clock = ManualClock(PINNED)
        with Harness(url) as harness:
            sim = harness.simulator(clock=clock)
            for run_minutes, stop_minutes in schedule:
                run = start_live(harness, sim, clock, lookback=lookback)
                advance(run, clock, timedelta(minutes=run_minutes))
                run.shutdown()
                clock.advance(timedelta(minutes=stop_minutes))
            run = start_live(harness, sim, clock, lookback=lookback)
            advance(run, clock, timedelta(minutes=70))
            assert_final(url, sim, clock())
            run.shutdown()

    scenario()
