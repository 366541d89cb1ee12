"""The simulator's deterministic synthetic BTC/USD market.

One seed fixes everything: candles, ticks and funding settlements agree with each other.

* A **daily anchor walk** (log-normal, reflected into a plausible band) fixes the price at every
  midnight UTC from 2020-03-01 on. It is computed once, sequentially, from ``Random(seed)``.
* Each **day's minute path** is a Brownian bridge between two anchors, generated on demand from
  ``Random(f"{seed}:{day}")`` and kept in a bounded LRU cache, so random access to any minute is
  cheap and does not depend on what was asked before. Prices are rounded to 0.5 USD; the open of
  a minute is the close of the previous minute (across days too).
* **Ticks** are derived from the candles: inside a minute the last price follows the
  piecewise-linear path ``open -> low -> high -> close`` (rising minute) or
  ``open -> high -> low -> close`` (falling minute) with corners at 1/3 and 2/3 of the minute,
  rounded to 0.5 USD. Every tick therefore lies within its minute's final ``low..high``.
* Candles younger than one hour are **unstable**: what is served differs from the final value
  (wicks widened by a revision that changes every minute) and the current minute is still forming
  (its close is the price now). At one hour of age the served candle equals :meth:`final_candle`.
* **Funding settlements** follow LN Markets' schedule exactly (phases A, B, C), with
  ``uuid5`` ids, the market price at the settlement time as ``fixingPrice`` and a seeded rate.

All times are timezone-aware UTC. The clock is injectable (:class:`ManualClock` for tests).
"""

from __future__ import annotations

import math
import random
import threading
import time
import uuid
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import accumulate

from qx_actors.domain.timeutil import (
    DAY,
    FIRST_CANDLE_TIME,
    floor_day,
    from_epoch_ms,
    to_epoch_ms,
    utc_now,
)
from qx_actors.domain.values import Candle, FundingSettlement

__all__ = [
    "FIRST_MS",
    "HOUR_MS",
    "MINUTES_PER_DAY",
    "MINUTE_MS",
    "Clock",
    "ManualClock",
    "Market",
    "OffsetClock",
    "ceil_index",
    "encode_candle",
    "index_time",
    "minute_index",
]

Clock = Callable[[], datetime]

MINUTES_PER_DAY = 1440
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
FIRST_MS = to_epoch_ms(FIRST_CANDLE_TIME)

_START_PRICE = 8_600.0
_DAILY_SIGMA = 0.035
_MINUTE_SIGMA = _DAILY_SIGMA / math.sqrt(MINUTES_PER_DAY)
_LOG_LOW = math.log(3_000.0)
_LOG_HIGH = math.log(250_000.0)
_SETTLEMENT_NS = uuid.UUID("6b1d4c1e-8e0f-5a53-9a43-6c6e6d61726b")

# Settlement schedule phases: (first, last or None, hours of the day).
_PHASE_A = (datetime(2021, 1, 11, 8, tzinfo=UTC), datetime(2021, 12, 7, 8, tzinfo=UTC), (8,))
_PHASE_B = (
    datetime(2021, 12, 7, 20, tzinfo=UTC),
    datetime(2025, 4, 11, 4, tzinfo=UTC),
    (4, 12, 20),
)
_PHASE_C_START = datetime(2025, 4, 11, 16, tzinfo=UTC)
_PHASE_C_HOURS = (0, 8, 16)

_MINUTE_SUFFIXES = [f"{m // 60:02d}:{m % 60:02d}:00.000Z" for m in range(MINUTES_PER_DAY)]


def _half(value: float) -> float:
    """Round to the exchange's 0.5 USD tick."""
    return round(value * 2.0) / 2.0


def minute_index(value: datetime) -> int:
    """Index of the minute containing ``value`` (0 = 2020-03-01T00:00Z); may be negative."""
    return (to_epoch_ms(value) - FIRST_MS) // MINUTE_MS


def ceil_index(value: datetime) -> int:
    """Index of the first whole minute at or after ``value``."""
    return -(-(to_epoch_ms(value) - FIRST_MS) // MINUTE_MS)


def index_time(index: int) -> datetime:
    """Start time of minute ``index``."""
    return FIRST_CANDLE_TIME + timedelta(minutes=index)


def encode_candle(
    time_text: bytes, open_: float, high: float, low: float, close: float, volume: float
) -> bytes:
    """One candle as the exchange's JSON object (bytes), ``time_text`` already formatted."""
    return (
        b'{"time":"'
        + time_text
        + f'","open":{open_!r},"high":{high!r},"low":{low!r},"close":{close!r},'
        f'"volume":{volume!r}}}'.encode()
    )


class ManualClock:
    """A clock for tests: it only moves when told to."""

    def __init__(self, start: datetime) -> None:
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, value: datetime) -> None:
        """Jump to ``value``."""
        with self._lock:
            self._now = value.astimezone(UTC)

    def advance(self, delta: timedelta) -> datetime:
        """Move forward by ``delta``; returns the new time."""
        with self._lock:
            self._now += delta
            return self._now


class OffsetClock:
    """A clock that starts at ``start`` and then ticks with real time (a fixed offset from the
    wall clock, measured on the monotonic clock): share one between a :class:`Simulator` and a
    ``SyncEngine`` to run both at a chosen instant, e.g. just before midnight UTC."""

    def __init__(self, start: datetime) -> None:
        self.start = start.astimezone(UTC)
        self._began = time.monotonic()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self._began)

    def __repr__(self) -> str:
        return f"OffsetClock(start={self.start.isoformat()})"


class _Day:
    """The 1440 final candles of one day, columnar, plus their encoded JSON (built lazily)."""

    __slots__ = ("_encoded", "closes", "highs", "lows", "opens", "prefix", "volumes")

    def __init__(
        self,
        day: int,
        opens: list[float],
        highs: list[float],
        lows: list[float],
        closes: list[float],
        volumes: list[float],
    ) -> None:
        self.opens = array("d", opens)
        self.highs = array("d", highs)
        self.lows = array("d", lows)
        self.closes = array("d", closes)
        self.volumes = array("d", volumes)
        self.prefix = (FIRST_CANDLE_TIME + day * DAY).strftime("%Y-%m-%dT")
        self._encoded: list[bytes] | None = None

    def encoded(self) -> list[bytes]:
        """Each candle as the exchange's JSON object, in time order."""
        if self._encoded is None:
            p = self.prefix
            self._encoded = [
                f'{{"time":"{p}{t}","open":{o!r},"high":{h!r},"low":{lo!r},"close":{c!r},'
                f'"volume":{v!r}}}'.encode()
                for t, o, h, lo, c, v in zip(
                    _MINUTE_SUFFIXES,
                    self.opens,
                    self.highs,
                    self.lows,
                    self.closes,
                    self.volumes,
                    strict=True,
                )
            ]
        return self._encoded


class Market:
    """A deterministic synthetic BTC/USD market (see the module docstring)."""

    def __init__(self, seed: int = 42, clock: Clock | None = None, cache_days: int = 96) -> None:
        self.seed = seed
        self.clock: Clock = clock or utc_now
        self._cache_days = cache_days
        self._lock = threading.RLock()
        self._days: OrderedDict[int, _Day] = OrderedDict()
        self._anchor_rng = random.Random(seed)
        self._anchors: list[float] = [math.log(_START_PRICE)]
        self._anchor_prices: list[float] = [_half(_START_PRICE)]
        self._downtime: list[tuple[int, int]] = []
        self._last_minute: tuple[int, Candle] | None = None
        self._settlements: dict[int, FundingSettlement] = {}
        self._settlements_lock = threading.Lock()

    # -- time ------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The market's current time (its clock)."""
        return self.clock()

    def now_ms(self) -> int:
        """The market's current time in epoch milliseconds."""
        return to_epoch_ms(self.clock())

    # -- downtime --------------------------------------------------------------------------

    def add_downtime(self, start: datetime, end: datetime) -> None:
        """Exchange downtime: no candle for the minutes in ``[start, end)``, ever."""
        first = ceil_index(start)
        last = ceil_index(end) - 1
        if last >= first:
            with self._lock:
                self._downtime.append((first, last))

    def downtime(self) -> list[tuple[int, int]]:
        """Downtime as inclusive minute-index intervals."""
        with self._lock:
            return list(self._downtime)

    def is_downtime(self, index: int) -> bool:
        """Whether minute ``index`` has no candle because of exchange downtime."""
        return any(a <= index <= b for a, b in self.downtime())

    # -- generation ------------------------------------------------------------------------

    def _anchor(self, day: int) -> tuple[float, float]:
        """Log price and rounded price at midnight of ``day``."""
        anchors = self._anchors
        # _anchor_prices is appended last, so its length says what is complete.
        if day >= len(self._anchor_prices):
            with self._lock:
                rng = self._anchor_rng
                while day >= len(anchors):
                    step = rng.gauss(0.0008, _DAILY_SIGMA)
                    nxt = anchors[-1] + step
                    if nxt > _LOG_HIGH:
                        nxt = 2 * _LOG_HIGH - nxt
                    elif nxt < _LOG_LOW:
                        nxt = 2 * _LOG_LOW - nxt
                    anchors.append(nxt)
                    self._anchor_prices.append(_half(math.exp(nxt)))
        return anchors[day], self._anchor_prices[day]

    def day_data(self, day: int) -> _Day:
        """The (cached) final candles of ``day`` (0 = 2020-03-01)."""
        with self._lock:
            cached = self._days.get(day)
            if cached is not None:
                self._days.move_to_end(day)
                return cached
            built = self._build_day(day)
            self._days[day] = built
            while len(self._days) > self._cache_days:
                self._days.popitem(last=False)
            return built

    def _build_day(self, day: int) -> _Day:
        rng = random.Random(f"{self.seed}:{day}")
        gauss, rand, exp, log = rng.gauss, rng.random, math.exp, math.log
        n = MINUTES_PER_DAY
        log_a, price_a = self._anchor(day)
        log_b, price_b = self._anchor(day + 1)
        walk = list(accumulate([gauss(0.0, _MINUTE_SIGMA) for _ in range(n)], initial=0.0))
        drift = (log_b - log_a - walk[-1]) / n
        points = [round(exp(log_a + w + drift * i) * 2.0) * 0.5 for i, w in enumerate(walk)]
        points[0] = price_a
        points[n] = price_b
        opens = points[:n]
        closes = points[1:]
        # Exponential wicks, scaled to the minute's volatility.
        wick = _MINUTE_SIGMA * 0.6 * 2.0
        highs = [
            (o if o > c else c) + round(-log(1.0 - rand()) * wick * o) * 0.5
            for o, c in zip(opens, closes, strict=True)
        ]
        lows = [
            (c if o > c else o) - round(-log(1.0 - rand()) * wick * o) * 0.5
            for o, c in zip(opens, closes, strict=True)
        ]
        volumes = [float(int(-log(1.0 - rand()) * 60_000.0)) for _ in range(n)]
        return _Day(day, opens, highs, lows, closes, volumes)

    def prewarm(self, start: datetime, end: datetime) -> int:
        """Build (and cache, up to ``cache_days``) the days covering ``[start, end]`` now, so
        that serving them later costs only the encoding join; returns the number of days."""
        first = max(0, minute_index(start) // MINUTES_PER_DAY)
        last = minute_index(end) // MINUTES_PER_DAY
        for day in range(first, last + 1):
            self.day_data(day).encoded()
        return max(0, last - first + 1)

    # -- candles ---------------------------------------------------------------------------

    def final_candle(self, minute: datetime) -> Candle | None:
        """The final (truth) candle of the minute containing ``minute``; ``None`` if none.

        ``None`` before 2020-03-01 and for downtime minutes. The current minute and future
        minutes also have a final value here (it is what they will become).
        """
        index = minute_index(minute)
        if index < 0 or self.is_downtime(index):
            return None
        return self.candle_at(index)

    def candle_at(self, index: int) -> Candle:
        """The final candle of minute ``index`` (ignores downtime)."""
        day, i = divmod(index, MINUTES_PER_DAY)
        d = self.day_data(day)
        return Candle(
            time=index_time(index),
            open=d.opens[i],
            high=d.highs[i],
            low=d.lows[i],
            close=d.closes[i],
            volume=d.volumes[i],
        )

    def final_candles(self, start: datetime, end: datetime) -> list[Candle]:
        """Final candles with ``start <= time <= end``, oldest first, downtime excluded."""
        first = max(0, ceil_index(start))
        last = minute_index(end)
        down = self.downtime()
        return [
            self.candle_at(i)
            for i in range(first, last + 1)
            if not any(a <= i <= b for a, b in down)
        ]

    def candles(self, start: datetime, end: datetime) -> list[Candle]:
        """Candles as served now with ``start <= time <= end``, oldest first.

        Nothing after the current minute; unstable candles carry their served (not final)
        values.
        """
        now_ms = self.now_ms()
        result = []
        for candle in self.final_candles(start, min(end, from_epoch_ms(now_ms))):
            result.append(self.served_candle(minute_index(candle.time), now_ms) or candle)
        return result

    def served_candle(self, index: int, now_ms: int) -> Candle | None:
        """What the exchange serves now for an unstable minute; ``None`` when it is stable."""
        start_ms = FIRST_MS + index * MINUTE_MS
        age_ms = now_ms - start_ms
        if age_ms >= HOUR_MS:
            return None
        final = self.candle_at(index)
        if age_ms < MINUTE_MS:
            # Still forming: the path up to now.
            frac = max(0.0, age_ms / MINUTE_MS)
            close = self._path_price(final, index, frac)
            high = max(final.open, close)
            low = min(final.open, close)
            for corner_frac, corner in self._corners(final, index):
                if corner_frac <= frac:
                    high = max(high, corner)
                    low = min(low, corner)
            volume = float(int(final.volume * frac))
            return Candle(final.time, final.open, high, low, close, volume)
        revision = age_ms // MINUTE_MS
        widen = 0.5 * (1 + (index * 7 + revision * 13) % 4)
        return Candle(
            final.time,
            final.open,
            final.high + widen,
            final.low - widen,
            final.close,
            final.volume + 10.0 * widen,
        )

    # -- ticks -----------------------------------------------------------------------------

    @staticmethod
    def _corners(candle: Candle, index: int) -> tuple[tuple[float, float], tuple[float, float]]:
        if candle.close >= candle.open:
            return (1 / 3, candle.low), (2 / 3, candle.high)
        return (1 / 3, candle.high), (2 / 3, candle.low)

    def _path_price(self, candle: Candle, index: int, frac: float) -> float:
        (f1, p1), (f2, p2) = self._corners(candle, index)
        if frac <= f1:
            value = candle.open + (p1 - candle.open) * (frac / f1)
        elif frac <= f2:
            value = p1 + (p2 - p1) * ((frac - f1) / (f2 - f1))
        else:
            value = p2 + (candle.close - p2) * ((frac - f2) / (1 - f2))
        return _half(value)

    def price_at_ms(self, ms: int) -> float:
        """The last price at epoch millisecond ``ms`` (the tick path; before 2020-03-01: the
        first open)."""
        offset = ms - FIRST_MS
        if offset < 0:
            return self.candle_at(0).open
        index, within = divmod(offset, MINUTE_MS)
        cached = self._last_minute
        if cached is not None and cached[0] == index:
            candle = cached[1]
        else:
            candle = self.candle_at(index)
            self._last_minute = (index, candle)
        return self._path_price(candle, index, within / MINUTE_MS)

    def price_at(self, when: datetime) -> float:
        """The last price at ``when``."""
        return self.price_at_ms(to_epoch_ms(when))

    # -- funding settlements ---------------------------------------------------------------

    @staticmethod
    def is_settlement_time(when: datetime) -> bool:
        """Whether ``when`` is on LN Markets' funding-settlement schedule."""
        if when.minute or when.second or when.microsecond:
            return False
        for first, last, hours in (_PHASE_A, _PHASE_B):
            if first <= when <= last:
                return when.hour in hours
        return when >= _PHASE_C_START and when.hour in _PHASE_C_HOURS

    @classmethod
    def settlement_times_desc(cls, start: datetime, end: datetime) -> Iterator[datetime]:
        """Scheduled settlement times with ``start <= t <= end``, newest first."""
        day = floor_day(end)
        floor = floor_day(start)
        while day >= floor:
            for hour in (20, 16, 12, 8, 4, 0):
                t = day + timedelta(hours=hour)
                if start <= t <= end and cls.is_settlement_time(t):
                    yield t
            day -= DAY

    def settlement_at(self, when: datetime) -> FundingSettlement:
        """The settlement the market has at ``when`` (on the grid or not); memoised, since its
        fixing price needs the whole day's minute path."""
        ms = to_epoch_ms(when)
        known = self._settlements.get(ms)
        if known is not None:
            return known
        settlement = self._make_settlement(when, ms)
        with self._settlements_lock:
            self._settlements[ms] = settlement
        return settlement

    def _make_settlement(self, when: datetime, ms: int) -> FundingSettlement:
        rng = random.Random(f"{self.seed}:funding:{ms}")
        magnitude = rng.uniform(0.0001, 0.0005)
        rate = round(magnitude if rng.random() < 0.6 else -magnitude, 8)
        return FundingSettlement(
            id=str(uuid.uuid5(_SETTLEMENT_NS, f"{self.seed}:{ms}")),
            time=when.astimezone(UTC),
            fixing_price=self.price_at_ms(ms),
            funding_rate=rate,
        )

    def settlements(self, start: datetime, end: datetime) -> list[FundingSettlement]:
        """Scheduled settlements with ``start <= time <= end`` (capped at now), oldest first."""
        end = min(end, self.now())
        return [
            self.settlement_at(t) for t in reversed(list(self.settlement_times_desc(start, end)))
        ]

    def next_settlement_time(self, after: datetime) -> datetime:
        """The first scheduled settlement strictly after ``after``."""
        t = after.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        while not self.is_settlement_time(t):
            t += timedelta(hours=1)
        return t
