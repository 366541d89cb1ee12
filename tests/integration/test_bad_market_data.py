"""Bad market data end to end, as quantoxide treats its SDK's deserialisation errors.

A body of the wrong shape (:class:`ExchangeDecodeError`) or a page against the exchange's rules
(:class:`InvalidMarketData`: inconsistent OHLC, unordered or unrounded candles, unordered or
off-grid settlements) is asked for again like any REST error (``rest_error_max_trials`` trials,
``rest_error_cooldown_s`` apart). Bad once: the retry gets the right page and the run goes on
without a restart. Bad on every trial: the error is recoverable (``Running.Recovering``, the
mode restarts), never ``Failed``; the error names the item's time, the field and its value, and
nothing of the bad page is ever in the database.

The simulator records every page it served with bad data in it
(``faults.corrupted_pages()``): the database is checked against those pages.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from qx_actors.domain.history import last_stable_minute
from qx_actors.domain.settlements import floor_settlement_time
from qx_actors.domain.timeutil import FIRST_SETTLEMENT_TIME, MINUTE, floor_minute, format_utc
from qx_actors.errors import ExchangeDecodeError, InvalidMarketData, is_recoverable
from qx_actors.simulator import Faults, Simulator
from qx_actors.status import State, SyncStatus
from qx_actors.storage import Database
from tests.integration.conftest import Harness, Run

#: Later than any settlement a test can store.
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)
#: Trials per request in these tests (the cooldown is FAST_SYNC's 0.05 s).
TRIALS = 3
CANDLES = "/v3/futures/candles"
SETTLEMENTS = "/v3/futures/funding-settlements"


def stored_candles(
    url: str | None, now: datetime, start: datetime | None = None, end: datetime | None = None
) -> list[tuple[Any, ...]]:
    """The stored 1m candles of ``[start, end]`` (default: the last 3 days) as ``(time, open,
    high, low, close, volume)``, oldest first, read as of ``now`` (the test's clock)."""
    start = now - timedelta(days=3) if start is None else start
    end = now if end is None else end
    assert url is not None
    with Database(url) as db:
        rows = db.candles(start, end + MINUTE, now=now)
    return [(c.time, c.open, c.high, c.low, c.close, c.volume) for c in rows]


def stored_settlements(url: str | None) -> list[tuple[Any, ...]]:
    """Every stored settlement as ``(id, time, fixing_price, funding_rate)``, oldest first."""
    assert url is not None
    with Database(url) as db:
        rows = db.settlements(FIRST_SETTLEMENT_TIME, FAR_FUTURE)
    return [(s.id, s.time, s.fixing_price, s.funding_rate) for s in rows]


def final_candles(sim: Simulator, start: datetime, end: datetime) -> list[tuple[Any, ...]]:
    """The simulator's final candles of ``[start, end]`` as :func:`stored_candles` rows."""
    return [
        (c.time, c.open, c.high, c.low, c.close, c.volume)
        for c in sim.market.final_candles(start, end)
    ]


def in_bad_pages(sim: Simulator, endpoint: str, times: list[datetime]) -> list[datetime]:
    """Those of ``times`` that lie in a page the simulator served with bad data."""
    pages = [p for p in sim.faults.corrupted_pages() if p.endpoint == endpoint]
    return [t for t in times if any(p.oldest <= t <= p.newest for p in pages)]


def retried_trials(harness: Harness, error_type: str) -> list[int]:
    """The trial numbers of the REST retries of ``error_type`` logged before the first
    recoverable error of the run."""
    trials = []
    for event in harness.logs:
        if event["event"] == "status_transition" and event.get("trigger") == "recoverable_error":
            break
        if event["event"] == "rest_request_retry" and event["error_type"] == error_type:
            assert TRIALS == event["max_trials"]
            assert 0.05 == event["wait_s"]  # the cooldown
            trials.append(event["trial"])
    return trials


def assert_trials_exhausted(harness: Harness, error_type: str) -> None:
    """Before the first recoverable error, some page was asked for ``TRIALS`` times (its
    retries logged as trials 1 .. TRIALS - 1). A download longer than the batch size is fetched
    in parts at once, so the retries of several pages may interleave; the part that fails last
    cancels the others, which may have been retried fewer times."""
    trials = retried_trials(harness, error_type)
    exhausted = trials.count(TRIALS - 1)
    assert exhausted >= 1, trials
    assert set(trials) == set(range(1, TRIALS)), trials
    for trial in range(1, TRIALS - 1):  # a page is retried in order: 1, 2, ...
        assert trials.count(trial) >= trials.count(trial + 1), trials


def assert_never_failed(run: Run) -> None:
    """The run never reported Failed, and shuts down cleanly."""
    assert State.SHUTDOWN == run.shutdown().state
    assert [] == [s.text for s in run.statuses if s.state is State.FAILED]


# -- bad once: retried within the request, no restart ------------------------------------------

ONCE: dict[str, Callable[[Faults], None]] = {
    "candles of the wrong type": lambda f: f.wrong_types_next(1, endpoint="candles"),
    "candle time of the wrong type": lambda f: f.wrong_types_next(
        1, endpoint="candles", field="time", value=12
    ),
    "unordered candles": lambda f: f.unordered_next(1),
    "unrounded candle time": lambda f: f.unrounded_next(1, offset_s=30),
    "settlement of the wrong type": lambda f: f.wrong_types_next(1, endpoint="funding-settlements"),
    "unordered settlements": lambda f: f.unordered_next(1, endpoint="funding-settlements"),
}


@pytest.mark.parametrize("fault", list(ONCE))
def test_a_bad_page_once_is_asked_again_and_the_run_backfills(harness: Harness, fault: str) -> None:
    """One bad answer (wrong shape or against the rules): the client asks for the page again,
    the run reaches Backfilled without Recovering or Failed, and the database holds exactly
    the exchange's candles and settlements."""
    t0 = harness.now()
    sim = harness.simulator()
    ONCE[fault](sim.faults)
    config = harness.config(sim, price_history_batch_size=200, rest_error_max_trials=TRIALS)
    run = harness.start(config)
    run.wait_for_state(State.BACKFILLED, timeout=20)
    assert ["Running.Starting", "Running.InProgress", "Running.Backfilled"] == [
        s.name for s in run.statuses
    ]
    assert 1 == len(sim.faults.corrupted_pages())
    reach = config.sync.price_history_reach_at(t0)
    end = last_stable_minute(t0) - MINUTE
    assert final_candles(sim, reach, end) == stored_candles(
        harness.database_url, harness.now(), reach, end
    )
    start = floor_settlement_time(t0 - timedelta(days=2))  # FAST_SYNC's funding reach
    expected = [
        (s.id, s.time, s.fixing_price, s.funding_rate)
        for s in sim.market.settlements(start, sim.market.now())
    ]
    assert expected == stored_settlements(harness.database_url)
    assert_never_failed(run)


# -- bad on every trial: recoverable, nothing of it stored -------------------------------------


def bad_minute(harness: Harness) -> datetime:
    """A stable minute well inside the 6 h reach of the backfill tests."""
    return floor_minute(harness.now() - timedelta(hours=3)) - 7 * MINUTE


def test_an_inconsistent_candle_on_every_trial_is_recoverable_and_never_stored(
    harness: Harness,
) -> None:
    """A candle whose low is above its open on every answer: the page is asked for
    rest_error_max_trials times, then Running.Recovering with InvalidMarketData naming the
    candle's time, the field and the values; the mode restarts (and fails the same way),
    never Failed; no candle of the bad page is in the database."""
    sim = harness.simulator()
    bad = bad_minute(harness)
    sim.faults.bad_candle(bad, field="low")
    truth = sim.market.final_candle(bad)
    assert truth is not None
    low = max(truth.open, truth.close) + 1.0
    run = harness.start(
        harness.config(sim, price_history_batch_size=200, rest_error_max_trials=TRIALS)
    )
    recovering = run.wait_for_state(State.RECOVERING, timeout=20)
    expected = f"{CANDLES}: candle {format_utc(bad)}: low {low!r} is above open {truth.open!r}"
    assert isinstance(recovering.error, InvalidMarketData)
    assert is_recoverable(recovering.error)
    assert expected == str(recovering.error)
    assert f"Running.Recovering: InvalidMarketData: {expected}" == recovering.text
    assert_trials_exhausted(harness, "InvalidMarketData")
    first = sim.faults.corrupted_pages()[:TRIALS]
    assert TRIALS == len(first) and len(set(first)) == 1  # the same page, every trial
    assert first[0].oldest <= bad <= first[0].newest
    # the restart asks again and fails again: still recoverable
    again = run.wait_for_count(State.RECOVERING, 2, timeout=20)
    assert isinstance(again.error, InvalidMarketData)
    assert_never_failed(run)
    times = [row[0] for row in stored_candles(harness.database_url, harness.now())]
    assert bad not in times
    assert [] == in_bad_pages(sim, "candles", times)


def test_a_wrong_type_on_every_trial_is_recoverable_and_never_stored(harness: Harness) -> None:
    """A candle field of the wrong type on every answer: ExchangeDecodeError naming the path,
    the value and the candle's time, after rest_error_max_trials trials; Recovering, never
    Failed; nothing of the bad pages stored."""
    sim = harness.simulator()
    sim.faults.wrong_types_next(1_000_000, endpoint="candles", field="high", value="12.5")
    run = harness.start(
        harness.config(sim, price_history_batch_size=200, rest_error_max_trials=TRIALS)
    )
    recovering = run.wait_for_state(State.RECOVERING, timeout=20)
    error = recovering.error
    assert isinstance(error, ExchangeDecodeError)
    assert is_recoverable(error)
    assert "$.data[0].high" == error.path
    assert re.fullmatch(
        rf"invalid JSON from {CANDLES} at \$\.data\[0\]\.high: Expected `float`, got `str` "
        r'\(value "12\.5", item time \d{4}-\d\d-\d\dT\d\d:\d\d:00\.000Z\)',
        str(error),
    ), str(error)
    assert_trials_exhausted(harness, "ExchangeDecodeError")
    run.wait_for_count(State.RECOVERING, 2, timeout=20)
    assert_never_failed(run)
    times = [row[0] for row in stored_candles(harness.database_url, harness.now())]
    assert [] == in_bad_pages(sim, "candles", times)


def test_unordered_settlements_on_every_trial_are_recoverable_and_never_stored(
    harness: Harness,
) -> None:
    """Settlements out of order on every answer: InvalidMarketData naming both times after
    rest_error_max_trials trials; Recovering, never Failed; the candles are stored, no
    settlement of the bad page is."""
    sim = harness.simulator()
    sim.faults.unordered_next(1_000_000, endpoint="funding-settlements")
    run = harness.start(harness.config(sim, rest_error_max_trials=TRIALS))
    recovering = run.wait_for_state(State.RECOVERING, timeout=20)
    error = recovering.error
    assert isinstance(error, InvalidMarketData)
    assert is_recoverable(error)
    assert re.fullmatch(
        rf"{SETTLEMENTS}: funding settlements not strictly descending at "
        r"(\S+Z) \(it follows (\S+Z)\)",
        str(error),
    ), str(error)
    assert_trials_exhausted(harness, "InvalidMarketData")
    first = sim.faults.corrupted_pages()[:TRIALS]
    assert TRIALS == len(first) and len(set(first)) == 1  # the same page, every trial
    named = re.findall(r"\d{4}-\d\d-\d\dT\d\d:00:00Z", str(error))
    assert 2 == len(named)
    assert all(format_utc(first[0].oldest) <= t <= format_utc(first[0].newest) for t in named)
    run.wait_for_count(State.RECOVERING, 2, timeout=20)
    assert_never_failed(run)
    times = [row[1] for row in stored_settlements(harness.database_url)]
    assert [] == in_bad_pages(sim, "funding-settlements", times)
    assert stored_candles(harness.database_url, harness.now())  # the candle pass was done


def test_an_off_grid_settlement_is_recoverable_and_never_stored(harness: Harness) -> None:
    """A settlement off the schedule (03:00) on every answer: InvalidMarketData naming its
    time; Recovering, never Failed; nothing of its page stored."""
    off_grid = floor_settlement_time(harness.now() - timedelta(days=1)).replace(hour=3)
    sim = harness.simulator()
    sim.faults.add_off_grid_settlement(off_grid)
    run = harness.start(harness.config(sim, rest_error_max_trials=TRIALS))
    recovering = run.wait_for_state(State.RECOVERING, timeout=20)
    assert isinstance(recovering.error, InvalidMarketData)
    assert (
        f"{SETTLEMENTS}: funding settlement time {format_utc(off_grid)} is not on the "
        "settlement schedule"
    ) == str(recovering.error)
    run.wait_for_count(State.RECOVERING, 2, timeout=20)
    assert_never_failed(run)
    times = [row[1] for row in stored_settlements(harness.database_url)]
    assert off_grid not in times
    assert [] == in_bad_pages(sim, "funding-settlements", times)


def test_the_run_recovers_once_the_exchange_serves_good_data(harness: Harness) -> None:
    """A persistently bad candle, then the exchange fixes it: the next restart backfills
    everything, the bad minute with its true values."""
    sim = harness.simulator()
    bad = bad_minute(harness)
    sim.faults.bad_candle(bad, field="high")
    run = harness.start(
        harness.config(sim, price_history_batch_size=200, rest_error_max_trials=TRIALS)
    )
    recovering: SyncStatus = run.wait_for_state(State.RECOVERING, timeout=20)
    assert f"candle {format_utc(bad)}: high " in str(recovering.error)
    sim.faults.clear()
    run.wait_for_state(State.BACKFILLED, timeout=20)
    now = harness.now()
    rows = stored_candles(harness.database_url, now)
    assert final_candles(sim, bad - 10 * MINUTE, bad + 10 * MINUTE) == [
        row for row in rows if bad - 10 * MINUTE <= row[0] <= bad + 10 * MINUTE
    ]
    assert_never_failed(run)
