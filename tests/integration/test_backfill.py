"""Backfill end to end: the actor system against the simulator, over real sockets, into a DB.

Each test compares the database with the simulator's truth (``market.final_candles``) and
checks the documented outcome of one scenario (downtime, hidden candles, REST faults, invalid
data, restarts). The ``harness`` fixture stops every engine and simulator and checks that every
logged status transition is an edge of the status graph.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from qx_actors.config import QxConfig
from qx_actors.domain.history import last_stable_minute
from qx_actors.domain.timeutil import MINUTE, floor_minute, parse_rfc3339
from qx_actors.errors import (
    ExchangeBodyError,
    ExchangeClientError,
    ExchangeDecodeError,
    ExchangeServerError,
    ExchangeTimeout,
    InvalidMarketData,
    ReachBeforeHistoryError,
)
from qx_actors.simulator import Faults, ManualClock, Simulator
from qx_actors.status import State
from qx_actors.storage import Database, open_storage
from tests.integration.conftest import Harness

Span = tuple[datetime, datetime]


def values(candles: list) -> list[tuple]:
    """``(time, open, high, low, close, volume)`` of candles or stored rows."""
    return [(c.time, c.open, c.high, c.low, c.close, c.volume) for c in candles]


def stored(url: str, start: datetime, end: datetime, now: datetime) -> list:
    """Stored 1m rows with ``start <= time <= end`` as of ``now`` (the test's clock)."""
    with Database(url) as db:
        return db.candles(start, end + MINUTE, now=now)


def verified_empty(url: str) -> list[Span]:
    """The verified-empty ranges recorded in the database."""
    with Database(url) as db:
        return list(db.price_history_facts().verified_empty)


def assert_final(url: str, sim: Simulator, start: datetime, end: datetime, now: datetime) -> None:
    """Every minute of ``[start, end]`` the exchange has is stored once, stable, final values
    (read as of ``now``, the test's clock)."""
    rows = stored(url, start, end, now)
    assert values(sim.market.final_candles(start, end)) == values(rows)
    assert [] == [row.time for row in rows if not row.stable]


def asked_window(query: dict[str, str]) -> Span:
    """The minutes one candle request asked for, ``(first, last)``: ``from`` up to ``to``
    narrowed by the (exclusive) ``cursor``, so that the next page of a bulk fetch counts by
    the older minutes it asked for, not by the whole window of the fetch."""
    last = parse_rfc3339(query["to"])
    if "cursor" in query:
        last = min(last, floor_minute(parse_rfc3339(query["cursor"]) - timedelta(milliseconds=1)))
    return parse_rfc3339(query["from"]), last


def candle_requests(sim: Simulator, overlapping: Span | None = None) -> list[Span]:
    """The windows (:func:`asked_window`) of the candle requests answered so far (those
    overlapping a span)."""
    spans = []
    for record in sim.requests():
        if record.endpoint != "candles" or "from" not in record.query:
            continue
        span = asked_window(record.query)
        if overlapping is None or (span[0] <= overlapping[1] and overlapping[0] <= span[1]):
            spans.append(span)
    return spans


def test_backfill_stores_final_candles_and_records_downtime_once(harness: Harness) -> None:
    """Every minute of [reach, now - 1 h] is stored once with final values; downtime is
    recorded verified-empty, never filled in, and not fetched again on later passes."""
    t0 = harness.now()
    down = (
        floor_minute(t0 - timedelta(hours=3)),
        floor_minute(t0 - timedelta(hours=3)) + 10 * MINUTE,
    )
    sim = harness.simulator(downtime=(down,))
    config = harness.config(sim)
    run = harness.start(config)
    run.wait_for_state(State.BACKFILLED)
    # confirmed within the first pass, before it reports Backfilled
    assert [(down[0], down[1] - MINUTE)] == verified_empty(harness.database_url)
    assert () == run.price_history_states[-1].gaps
    first_pass = len(candle_requests(sim, (down[0], down[1] - MINUTE)))
    run.wait_for_count(State.BACKFILLED, 4)
    reach = config.sync.price_history_reach_at(t0)
    assert_final(harness.database_url, sim, reach, last_stable_minute(t0) - MINUTE, harness.now())
    assert [] == stored(harness.database_url, down[0], down[1] - MINUTE, harness.now())
    assert [(down[0], down[1] - MINUTE)] == verified_empty(harness.database_url)
    # asked once in bulk, once as a gap; later passes leave it alone
    assert 2 >= first_pass
    assert first_pass == len(candle_requests(sim, (down[0], down[1] - MINUTE)))
    now = harness.now()
    young = stored(harness.database_url, last_stable_minute(now) + MINUTE, now, now)
    assert young and not any(row.stable for row in young)
    states = run.price_history_states
    assert states[-1].gaps == ()
    run.shutdown()


def test_hidden_young_candles_are_repaired_once_the_exchange_has_them(harness: Harness) -> None:
    """A hole among young candles is not recorded as downtime and is filled on a later pass."""
    t0 = harness.now()
    first = floor_minute(t0 - timedelta(minutes=30))
    last = first + 4 * MINUTE
    sim = harness.simulator()
    sim.faults.hide_candles(first, last + MINUTE)
    run = harness.start(harness.config(sim))
    run.wait_for_state(State.BACKFILLED)
    assert [] == stored(harness.database_url, first, last, harness.now())
    assert [] == verified_empty(harness.database_url)
    assert [(first, last)] == [(g.start, g.end) for g in run.price_history_states[-1].gaps]
    sim.faults.reveal_hidden()
    run.wait_for_count(State.BACKFILLED, run.state_count(State.BACKFILLED) + 2)
    rows = stored(harness.database_url, first - MINUTE, last + MINUTE, harness.now())
    expected = [first - MINUTE + i * MINUTE for i in range(7)]
    assert expected == [row.time for row in rows]
    assert () == run.price_history_states[-1].gaps
    run.shutdown()


def test_hidden_stable_candles_are_repaired_after_a_restart(harness: Harness) -> None:
    """A stable hole the exchange confirms empty is recorded once, left alone by later passes,
    and re-checked (and filled) on the first pass after a restart."""
    t0 = harness.now()
    first = floor_minute(t0 - timedelta(hours=4))
    last = first + 9 * MINUTE
    sim = harness.simulator()
    sim.faults.hide_candles(first, last + MINUTE)
    config = harness.config(sim)
    run = harness.start(config)
    run.wait_for_state(State.BACKFILLED)
    assert [(first, last)] == verified_empty(harness.database_url)
    asked = len(candle_requests(sim, (first, last)))
    run.wait_for_count(State.BACKFILLED, 3)
    assert asked == len(candle_requests(sim, (first, last)))
    run.shutdown()

    sim.faults.reveal_hidden()
    again = harness.start(config)
    again.wait_for_state(State.BACKFILLED)
    assert asked + 1 == len(candle_requests(sim, (first, last)))
    assert [] == verified_empty(harness.database_url)
    reach = config.sync.price_history_reach_at(t0)
    assert_final(harness.database_url, sim, reach, last_stable_minute(t0) - MINUTE, harness.now())
    again.shutdown()


def test_restart_on_an_existing_database_resumes(harness: Harness) -> None:
    """A restart fetches only the young head again, not what is stored and stable."""
    sim = harness.simulator()
    config = harness.config(sim)
    run = harness.start(config)
    run.wait_for_state(State.BACKFILLED)
    run.shutdown()
    before = len(candle_requests(sim))
    restart_time = harness.now()
    again = harness.start(config)
    again.wait_for_state(State.BACKFILLED)
    new = candle_requests(sim)[before:]
    assert len(new) <= 1
    assert all(start >= last_stable_minute(restart_time) - 2 * MINUTE for start, _ in new)
    reach = config.sync.price_history_reach_at(restart_time)
    assert_final(
        harness.database_url, sim, reach, last_stable_minute(restart_time) - MINUTE, harness.now()
    )
    again.shutdown()


#: Faults armed for as many answers as the trials (2): the trials are spent, then the error.
RECOVERABLE_FAULTS: dict[str, tuple[Callable[[Faults], None], type[Exception], str]] = {
    "503": (
        lambda f: f.fail_next(2, status=503, endpoint="candles"),
        ExchangeServerError,
        r"^HTTP 503 /v3/futures/candles: Service Unavailable$",
    ),
    "502 plain text": (
        lambda f: f.fail_next(2, status=502, endpoint="candles", plain_text=True),
        ExchangeServerError,
        r"^HTTP 502 /v3/futures/candles: 502 Bad Gateway$",
    ),
    "408": (
        lambda f: f.fail_next(2, status=408, endpoint="candles"),
        ExchangeServerError,
        r"^HTTP 408 /v3/futures/candles: Request Timeout$",
    ),
    "stray 400": (
        lambda f: f.fail_next(2, status=400, endpoint="candles"),
        ExchangeClientError,
        r"^HTTP 400 /v3/futures/candles: Bad Request$",
    ),
    "429": (
        lambda f: f.rate_limit_next(2, retry_after=0.05, endpoint="candles"),
        ExchangeServerError,
        r"^HTTP 429 /v3/futures/candles: Too Many Requests$",
    ),
    "slow": (
        lambda f: f.delay_next(2, 30.0, endpoint="candles"),
        ExchangeTimeout,
        r"no complete answer within 0.5 s",
    ),
    "hang": (
        lambda f: f.hang_next(2, endpoint="candles"),
        ExchangeTimeout,
        r"no complete answer within 0.5 s",
    ),
    "malformed JSON": (
        lambda f: f.malformed_next(2, endpoint="candles"),
        ExchangeBodyError,
        r"^/v3/futures/candles: HTTP 200 body is not JSON \(.+\): \{\"data\":\[",
    ),
    "truncated body": (
        lambda f: f.truncate_next(2, endpoint="candles"),
        ExchangeBodyError,
        r"^GET /v3/futures/candles: HTTP 200 body not received whole: .*received \d+ of \d+ bytes",
    ),
}


@pytest.mark.parametrize("fault", list(RECOVERABLE_FAULTS))
def test_recoverable_rest_fault_restarts_and_completes(harness: Harness, fault: str) -> None:
    """5xx / 408 / a stray 400 / 429 / slow / hanging answers, bodies that are not JSON or cut
    off in transit, past the last trial → Recovering naming the fault, restart, Backfilled."""
    arm, error_type, message = RECOVERABLE_FAULTS[fault]
    t0 = harness.now()
    sim = harness.simulator()
    arm(sim.faults)
    # a timeout short enough to make the slow/hanging answers fail (each trial waits it out),
    # long enough for the others
    config = harness.config(sim, rest_timeout_s=0.5 if error_type is ExchangeTimeout else 1.0)
    run = harness.start(config)
    run.wait_for_state(State.BACKFILLED)
    assert [
        "Running.Starting",
        "Running.InProgress",
        "Running.Recovering",
        "Running.Restarting",
        "Running.InProgress",
        "Running.Backfilled",
    ] == [s.name for s in run.statuses]
    assert type(run.statuses[2].error) is error_type
    assert re_search(message, str(run.statuses[2].error)), str(run.statuses[2].error)
    reach = config.sync.price_history_reach_at(t0)
    assert_final(harness.database_url, sim, reach, last_stable_minute(t0) - MINUTE, harness.now())
    triggers = [trigger for trigger, _, _ in harness.transitions()]
    # up to the first Backfilled: the next pass may have begun meanwhile
    assert [
        "start",
        "progress",
        "recoverable_error",
        "restart",
        "progress",
        "backfilled",
    ] == triggers[: triggers.index("backfilled") + 1]
    run.shutdown()


def test_fault_within_the_trials_is_retried_without_restart(harness: Harness) -> None:
    """One 503 with two trials allowed is retried by the client: no Recovering."""
    sim = harness.simulator()
    sim.faults.fail_next(1, status=503, endpoint="candles")
    run = harness.start(harness.config(sim))
    run.wait_for_state(State.BACKFILLED)
    assert ["Running.Starting", "Running.InProgress", "Running.Backfilled"] == [
        s.name for s in run.statuses
    ]
    assert 1 == sim.request_count("candles", 503)
    run.shutdown()


#: On every answer (as many times as a test can ask).
ALWAYS = 1_000_000

INVALID_FAULTS: dict[str, tuple[Callable[[Faults], None], type[Exception], str]] = {
    "wrong type": (
        lambda f: f.wrong_types_next(ALWAYS, endpoint="candles"),
        ExchangeDecodeError,
        r"at \$\.data\[0\]\.open",
    ),
    "wrong time type": (
        lambda f: f.wrong_types_next(ALWAYS, endpoint="candles", field="time", value=12),
        ExchangeDecodeError,
        r"at \$\.data\[0\]\.time",
    ),
    "unordered": (
        lambda f: f.unordered_next(ALWAYS),
        InvalidMarketData,
        r"not strictly descending at \d{4}-\d\d-\d\dT\d\d:\d\d:00Z",
    ),
    "unrounded": (
        lambda f: f.unrounded_next(ALWAYS, offset_s=30),
        InvalidMarketData,
        r"candle time \d{4}-\d\d-\d\dT\d\d:\d\d:30Z is not a whole minute",
    ),
}


@pytest.mark.parametrize("fault", list(INVALID_FAULTS))
def test_invalid_candle_page_is_recoverable_and_writes_nothing(
    harness: Harness, fault: str
) -> None:
    """Well-formed JSON with wrong types, unordered or unrounded candles on every answer →
    retried, then Recovering (never Failed) naming the cause; nothing of the rejected pages is
    written. (Bad once: ``test_bad_market_data.py``; bodies that are not JSON at all: see
    ``RECOVERABLE_FAULTS``.)"""
    arm, error_type, message = INVALID_FAULTS[fault]
    sim = harness.simulator()
    arm(sim.faults)
    run = harness.start(harness.config(sim, price_history_batch_size=200))
    recovering = run.wait_for_state(State.RECOVERING)
    assert isinstance(recovering.error, error_type)
    assert re_search(message, str(recovering.error)), str(recovering.error)
    now = harness.now()
    assert [] == stored(harness.database_url, now - timedelta(days=3), now, now)
    assert ("recoverable_error", "Running.InProgress", "Running.Recovering") in (
        harness.transitions()
    )
    assert State.SHUTDOWN == run.shutdown().state


def re_search(pattern: str, text: str) -> bool:
    """Whether ``pattern`` occurs in ``text``."""
    import re

    return re.search(pattern, text) is not None


def _down_until_after_the_reach(
    harness: Harness, hours: int
) -> tuple[datetime, Simulator, QxConfig, datetime]:
    """A config with a reach of 2 days at ``t0`` (now), against a simulator without a candle
    from a day before the reach to ``hours`` after it: ``(t0, sim, config, reach)``."""
    t0 = harness.now()
    sim = harness.simulator()
    config = harness.config(sim, price_history_reach="2d")
    reach = config.sync.price_history_reach_at(t0)
    sim.market.add_downtime(reach - timedelta(days=1), reach + timedelta(hours=hours))
    return t0, sim, config, reach


def test_reach_before_the_exchange_history_fails(harness: Harness) -> None:
    """No candle within hours of the reach (history starts later) → Failed(ReachBeforeHistory)."""
    _, _, config, reach = _down_until_after_the_reach(harness, 7)
    run = harness.start(config)
    final = run.controller.until_stopped(timeout=10)
    assert State.FAILED == final.state
    assert isinstance(final.error, ReachBeforeHistoryError)
    assert reach.strftime("%Y-%m-%dT%H:%M:%SZ") in str(final.error)


def test_gap_older_than_the_reach_is_left_alone(harness: Harness) -> None:
    """A stored hole wholly before the reach is not the engine's business: listed in
    ``holes_before_reach``, never fetched, the run backfills the reach (once it failed with
    ``UnreachableGapError``)."""
    t0 = harness.now()
    sim = harness.simulator()
    config = harness.config(sim)
    reach = config.sync.price_history_reach_at(t0)
    hole = (reach - timedelta(minutes=60), reach - timedelta(minutes=31))
    with open_storage(harness.database_url) as storage:
        storage.upsert_candles(
            sim.market.final_candles(reach - timedelta(hours=2), hole[0] - MINUTE), now=t0
        )
        storage.upsert_candles(
            sim.market.final_candles(hole[1] + MINUTE, reach + timedelta(minutes=10)), now=t0
        )
    run = harness.start(config)
    assert State.BACKFILLED is run.wait_for_state(State.BACKFILLED, timeout=60).state
    first = run.price_history_states[0]
    assert [hole] == [(h.start, h.end) for h in first.holes_before_reach]
    assert not first.gaps or first.gaps[0].start >= reach
    with Database(harness.database_url) as database:
        assert [] == database.candles(hole[0], hole[1] + MINUTE)
    assert State.SHUTDOWN == run.shutdown().state


def test_unstable_candles_settle_to_final_values(harness: Harness) -> None:
    """Young candles are stored unstable with the exchange's provisional values; once an hour
    old (market clock moved on) they are fetched again and stored stable and final."""
    t0 = floor_minute(harness.now()) + timedelta(seconds=30)
    clock = ManualClock(t0)
    sim = harness.simulator(clock=clock)
    config = harness.config(sim)

    run = harness.start(config, clock=clock)
    run.wait_for_state(State.BACKFILLED)
    young_start = last_stable_minute(t0) + MINUTE
    young = stored(harness.database_url, young_start, t0, now=t0)
    final = sim.market.final_candles(young_start, t0)
    assert [c.time for c in final] == [row.time for row in young]
    assert not any(row.stable for row in young)
    # revised wicks for the past young minutes; the current one is still forming
    assert all(row.high > c.high for row, c in zip(young[:-1], final[:-1], strict=True))
    clock.advance(timedelta(minutes=61))
    run.wait_for_count(State.BACKFILLED, run.state_count(State.BACKFILLED) + 2)
    reach = config.sync.price_history_reach_at(t0)
    assert_final(harness.database_url, sim, reach, floor_minute(t0), now=clock())
    run.shutdown()


@pytest.mark.parametrize(
    ("from_inclusive", "to_inclusive"), [(True, False), (False, True), (False, False)]
)
def test_backfill_is_exact_whichever_bounds_the_exchange_includes(
    harness: Harness, from_inclusive: bool, to_inclusive: bool
) -> None:
    """Exclusive ``from``/``to`` on the exchange side change nothing: same candles, paging ok."""
    t0 = harness.now()
    down = (
        floor_minute(t0 - timedelta(hours=2)),
        floor_minute(t0 - timedelta(hours=2)) + 3 * MINUTE,
    )
    sim = harness.simulator(
        from_inclusive=from_inclusive, to_inclusive=to_inclusive, downtime=(down,)
    )
    config = harness.config(sim, price_history_batch_size=250)
    run = harness.start(config)
    run.wait_for_state(State.BACKFILLED)
    reach = config.sync.price_history_reach_at(t0)
    assert_final(harness.database_url, sim, reach, last_stable_minute(t0) - MINUTE, harness.now())
    assert [(down[0], down[1] - MINUTE)] == verified_empty(harness.database_url)
    run.shutdown()


def test_downtime_right_at_the_reach_is_recorded_not_fatal(harness: Harness) -> None:
    """No candle for the first hours after the reach (within tolerance) → verified-empty, and
    later passes don't ask for the range below the oldest candle again."""
    t0, sim, config, reach = _down_until_after_the_reach(harness, 2)
    run = harness.start(config)
    run.wait_for_state(State.BACKFILLED)
    assert [(reach, reach + timedelta(hours=2) - MINUTE)] == verified_empty(harness.database_url)
    asked = len(candle_requests(sim))
    run.wait_for_count(State.BACKFILLED, 3)
    assert all(start > reach + timedelta(hours=2) for start, _ in candle_requests(sim)[asked:])
    assert_final(harness.database_url, sim, reach, last_stable_minute(t0) - MINUTE, harness.now())
    run.shutdown()
    # the first pass after a restart asks again, and the exchange still has nothing there
    again = harness.start(config)
    again.wait_for_state(State.BACKFILLED)
    assert [(reach, reach + timedelta(hours=2) - MINUTE)] == verified_empty(harness.database_url)
    again.shutdown()


def test_rate_limited_exchange_is_paced_without_429(harness: Harness) -> None:
    """With the exchange's limit equal to the client's pace, no request is rejected."""
    t0 = harness.now()
    batch = 50
    # The exchange's bucket holds 2 requests: what it measures is our send time plus a transit
    # time that varies on a busy machine (one request's arrival can be late, the next on time).
    # The client's own spacing is proven exactly by test_lnm_rest's rate-limiter tests; a
    # client faster than the limit still runs the 2 tokens dry within a few of the >= 8 pages.
    sim = harness.simulator(rate_limit_per_s=20.0, rate_limit_burst=2)
    config = harness.config(sim, rest_rate_limit_per_s=20.0, price_history_batch_size=batch)
    run = harness.start(config)
    run.wait_for_state(State.BACKFILLED)
    # [reach, now] is 6 to 30 hours (the reach is floored to midnight), whatever the hour:
    # at least 8 pages of 50 candles back to back, every one of them within the limit
    pages = -(-int((t0 - config.sync.price_history_reach_at(t0)) / MINUTE) // batch)
    assert pages >= 8
    assert sim.request_count("candles", status=200) >= pages
    assert 0 == sim.request_count(status=429)
    run.shutdown()


def test_random_server_errors_end_in_a_complete_history(harness: Harness) -> None:
    """A quarter of the answers fail (seeded), one trial each: the run recovers as often as it
    takes, resumes from what was stored, and ends with every candle final."""
    t0 = harness.now()
    sim = harness.simulator()
    sim.faults.set_error_fraction(0.25, status=503, seed=3)
    config = harness.config(
        sim, rest_error_max_trials=1, restart_interval_s=0.02, price_history_batch_size=100
    )
    run = harness.start(config)
    run.wait_for_state(State.BACKFILLED, timeout=20)
    assert any(s.state is State.RECOVERING for s in run.statuses)
    reach = config.sync.price_history_reach_at(t0)
    assert_final(harness.database_url, sim, reach, last_stable_minute(t0) - MINUTE, harness.now())
    run.shutdown()


def test_shutdown_does_not_wait_for_a_hanging_request(harness: Harness) -> None:
    """A request that hangs (long timeout) is cancelled by a shutdown, which ends in Shutdown."""
    sim = harness.simulator()
    sim.faults.hang_next(1, endpoint="candles")
    run = harness.start(harness.config(sim, rest_timeout_s=30.0))
    assert sim.faults.wait_hung(1, timeout=5)
    run.controller.shutdown()
    assert State.SHUTDOWN == run.controller.until_stopped(timeout=5).state


def test_moving_the_reach_back_fetches_only_the_older_part(harness: Harness) -> None:
    """A restart with an older reach fetches the range below the stored candles, nothing else."""
    t0 = harness.now()
    sim = harness.simulator()
    run = harness.start(harness.config(sim))
    run.wait_for_state(State.BACKFILLED)
    run.shutdown()
    with Database(harness.database_url) as db:
        earliest = db.price_history_facts().earliest
    assert earliest is not None
    before = len(candle_requests(sim))
    config = harness.config(sim, price_history_reach="2d")
    again = harness.start(config)
    again.wait_for_state(State.BACKFILLED)
    reach = config.sync.price_history_reach_at(t0)
    new = candle_requests(sim)[before:]
    older = [span for span in new if span[0] < earliest - timedelta(minutes=2)]
    assert older and all(end <= earliest + MINUTE for _, end in older)
    assert_final(harness.database_url, sim, reach, last_stable_minute(t0) - MINUTE, harness.now())
    again.shutdown()


def test_downtime_older_than_the_gap_scan_is_confirmed_by_the_bulk_fetch(
    harness: Harness,
) -> None:
    """A hole older than price_history_flag_gap_range_h is recorded from the bulk fetch alone."""
    t0 = harness.now()
    down = (
        floor_minute(t0 - timedelta(hours=4)),
        floor_minute(t0 - timedelta(hours=4)) + 5 * MINUTE,
    )
    sim = harness.simulator(downtime=(down,))
    run = harness.start(harness.config(sim, price_history_flag_gap_range_h=2))
    run.wait_for_state(State.BACKFILLED)
    assert [(down[0], down[1] - MINUTE)] == verified_empty(harness.database_url)
    assert 1 == len(candle_requests(sim, (down[0], down[1] - MINUTE)))
    run.shutdown()
