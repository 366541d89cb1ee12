"""The synthetic market: determinism, candle invariants, instability, ticks, settlements."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

from qx_actors.domain.timeutil import FIRST_CANDLE_TIME, MINUTE, to_epoch_ms
from qx_actors.simulator import ManualClock, Market
from qx_actors.simulator.market import minute_index

T0 = datetime(2023, 5, 17, 23, 0, tzinfo=UTC)


def test_same_seed_same_candles() -> None:
    """Two markets with one seed agree; another seed differs."""
    a, b, c = Market(7), Market(7), Market(8)
    start, end = T0, T0 + timedelta(hours=3)
    b.final_candle(T0 - timedelta(days=300))  # another access order must not matter
    assert a.final_candles(start, end) == b.final_candles(start, end)
    assert a.final_candles(start, end) != c.final_candles(start, end)


def test_candles_are_consistent() -> None:
    """high/low bound open/close, prices are 0.5 steps, each open is the previous close."""
    market = Market(3)
    candles = market.final_candles(T0, T0 + timedelta(hours=2))  # crosses midnight
    assert len(candles) == 121
    for prev, cur in itertools.pairwise(candles):
        assert cur.time - prev.time == MINUTE
        assert prev.close == cur.open
    for c in candles:
        assert c.high >= max(c.open, c.close)
        assert c.low <= min(c.open, c.close)
        assert c.volume >= 0
        assert all((2 * v).is_integer() for v in (c.open, c.high, c.low, c.close))


def test_history_starts_2020_03_01() -> None:
    """No candle before 2020-03-01; the first one is at 00:00Z."""
    market = Market()
    assert market.final_candle(FIRST_CANDLE_TIME - MINUTE) is None
    first = market.final_candles(FIRST_CANDLE_TIME - timedelta(hours=1), FIRST_CANDLE_TIME)
    assert [c.time for c in first] == [FIRST_CANDLE_TIME]


def test_downtime_has_no_candles() -> None:
    """Downtime minutes have no final candle and are left out of ranges."""
    market = Market()
    market.add_downtime(T0 + 2 * MINUTE, T0 + 5 * MINUTE)
    assert market.final_candle(T0 + 2 * MINUTE) is None
    assert market.final_candle(T0 + 4 * MINUTE) is None
    times = [c.time for c in market.final_candles(T0, T0 + 6 * MINUTE)]
    assert [T0 + i * MINUTE for i in (0, 1, 5, 6)] == times


def test_unstable_candles_change_then_become_final() -> None:
    """A candle younger than 1 h is served revised each minute, and final at 1 h of age."""
    minute = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    clock = ManualClock(minute + timedelta(minutes=5))
    market = Market(1, clock=clock)
    final = market.final_candle(minute)
    index = minute_index(minute)
    first = market.served_candle(index, market.now_ms())
    clock.advance(MINUTE)
    second = market.served_candle(index, market.now_ms())
    assert first is not None and second is not None and final is not None
    assert final != first
    assert first != second
    assert first.open == final.open and first.close == final.close
    clock.set(minute + timedelta(hours=1))
    assert market.served_candle(index, market.now_ms()) is None
    assert [final] == market.candles(minute, minute)


def test_current_minute_is_forming() -> None:
    """The current minute closes at the price now, bounded by the final low..high."""
    now = datetime(2025, 6, 1, 12, 0, 20, tzinfo=UTC)
    market = Market(1, clock=ManualClock(now))
    minute = now.replace(second=0)
    served = market.candles(minute - MINUTE, now + timedelta(hours=1))
    assert [minute - MINUTE, minute] == [c.time for c in served]
    forming = served[-1]
    final = market.final_candle(now)
    assert final is not None
    assert market.price_at(now) == forming.close
    assert final.low <= forming.low <= forming.high <= final.high
    assert final.volume > forming.volume


def test_ticks_lie_within_their_minute() -> None:
    """Every tick price lies within its minute's final low..high; a minute opens at its open."""
    market = Market(5)
    rng = random.Random(1)
    base = to_epoch_ms(T0)
    for _ in range(2000):
        ms = base + rng.randrange(3 * 86_400_000)
        minute = datetime.fromtimestamp(ms // 60_000 * 60, UTC)
        candle = market.final_candle(minute)
        assert candle is not None
        assert candle.low <= market.price_at_ms(ms) <= candle.high
        assert candle.open == market.price_at(minute)


def _at(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def test_settlement_schedule_phases() -> None:
    """Settlements follow phases A, B and C exactly, across both boundaries."""
    market = Market()
    a_to_b = [s.time for s in market.settlements(_at(2021, 12, 6), _at(2021, 12, 8, 23))]
    assert [
        _at(2021, 12, 6, 8),
        _at(2021, 12, 7, 8),
        _at(2021, 12, 7, 20),
        _at(2021, 12, 8, 4),
        _at(2021, 12, 8, 12),
        _at(2021, 12, 8, 20),
    ] == a_to_b
    b_to_c = [s.time for s in market.settlements(_at(2025, 4, 10, 12), _at(2025, 4, 12, 8))]
    assert [
        _at(2025, 4, 10, 12),
        _at(2025, 4, 10, 20),
        _at(2025, 4, 11, 4),
        _at(2025, 4, 11, 16),
        _at(2025, 4, 12, 0),
        _at(2025, 4, 12, 8),
    ] == b_to_c
    start = [s.time for s in market.settlements(_at(2020, 1, 1), _at(2021, 1, 12, 8))]
    assert [_at(2021, 1, 11, 8), _at(2021, 1, 12, 8)] == start


def test_settlements_are_deterministic_and_plausible() -> None:
    """Ids are stable UUIDs, fixing prices match the market, rates are small."""
    a, b = Market(9), Market(9)
    settlements = a.settlements(_at(2024, 1, 1), _at(2024, 1, 10))
    assert settlements == b.settlements(_at(2024, 1, 1), _at(2024, 1, 10))
    assert len({s.id for s in settlements}) == len(settlements) == 27
    for s in settlements:
        assert a.price_at(s.time) == s.fixing_price
        assert 0.0001 <= abs(s.funding_rate) <= 0.0005


def test_settlements_stop_at_now() -> None:
    """No settlement after the market's now."""
    market = Market(clock=ManualClock(_at(2025, 6, 1, 12)))
    times = [s.time for s in market.settlements(_at(2025, 6, 1), _at(2025, 6, 2))]
    assert [_at(2025, 6, 1, 0), _at(2025, 6, 1, 8)] == times


def test_prewarm_builds_the_covering_days() -> None:
    """prewarm builds every day touched by the range and leaves the candles unchanged."""
    market = Market(2)
    before = Market(2).final_candles(T0, T0 + timedelta(hours=2))
    assert market.prewarm(T0, T0 + timedelta(hours=2)) == 2
    assert market.final_candles(T0, T0 + timedelta(hours=2)) == before
