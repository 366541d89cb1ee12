"""Recorded data in the order it happened: what a replay delivers, read through :class:`Database`.

:func:`replay_events` merges the stored ticks, the closes of the stored minutes and the funding
settlements of ``[start, end)`` into one stream ordered by when each happened: a tick at its
time, a candle at the close of its minute (``time + 1 min``: after every tick of the minute), a
settlement at its time. Events at the same instant come candle close, settlement, tick (the
close of 07:59 and the 08:00 settlement precede the first tick of 08:00). Each event has a
unique :attr:`ReplayEvent.key` (one tick, one candle, one settlement per instant at most), so a
replay can resume right after the last one it delivered.

It reads window after window (short reads, never blocking a writer), the
window growing over sparse stretches and shrinking over dense ones, so memory stays bounded
whatever the range. It only reads: the database is the caller's read-only :class:`Database`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import NamedTuple

from qx_actors.domain.timeutil import MINUTE, require_utc
from qx_actors.domain.values import Candle, FundingSettlement, PriceTick

from ._backend import guard
from ._read import Database
from ._storage import Storage

#: Order of events at the same instant.
CANDLE_RANK, SETTLEMENT_RANK, TICK_RANK = 0, 1, 2

_MIN_WINDOW = timedelta(minutes=1)
_MAX_WINDOW = timedelta(days=30)
_FIRST_WINDOW = timedelta(hours=1)
#: Events per window the window size aims at.
_AIM_LOW, _AIM_HIGH = 2_000, 20_000


class ReplayEvent(NamedTuple):
    """One recorded event and when it happened (``at``); ``rank`` orders equal instants."""

    at: datetime
    rank: int
    item: PriceTick | Candle | FundingSettlement

    @property
    def key(self) -> tuple[datetime, int]:
        """Unique within a database: where a replay stands after delivering this event."""
        return (self.at, self.rank)


def replay_events(
    database: Database,
    start: datetime,
    end: datetime,
    *,
    after: tuple[datetime, int] | None = None,
) -> Iterator[ReplayEvent]:
    """Every stored tick with ``start <= time < end``, every stored 1m candle with
    ``start <= time < end`` (at ``time + 1 min``) and every settlement with
    ``start <= time < end``, in the order they happened; only those after ``after`` (a
    :attr:`ReplayEvent.key`) when given."""
    window = _FIRST_WINDOW
    lo = start if after is None else max(start, after[0])
    # candle closes run up to a minute past ``end``
    stop = end + MINUTE
    while lo < stop:
        hi = min(lo + window, stop)
        events = _window(database, start, end, lo, hi)
        if after is not None:
            events = [event for event in events if event.key > after]
        yield from events
        lo = hi
        if len(events) < _AIM_LOW:
            window = min(window * 2, _MAX_WINDOW)
        elif len(events) > _AIM_HIGH:
            window = max(window / 2, _MIN_WINDOW)


def _window(
    database: Database, start: datetime, end: datetime, lo: datetime, hi: datetime
) -> list[ReplayEvent]:
    """The events happening in ``[lo, hi)``, in order."""
    events: list[ReplayEvent] = []
    tick_lo, tick_hi = max(lo, start), min(hi, end)
    if tick_lo < tick_hi:
        events += [ReplayEvent(t.time, TICK_RANK, t) for t in database.ticks(tick_lo, tick_hi)]
        events += [
            ReplayEvent(s.time, SETTLEMENT_RANK, s) for s in database.settlements(tick_lo, tick_hi)
        ]
    # a minute closes in [lo, hi) when it starts in [lo - 1m, hi - 1m)
    minute_lo, minute_hi = max(lo - MINUTE, start), min(hi - MINUTE, end)
    if minute_lo < minute_hi:
        for row in database.candles(minute_lo, minute_hi, "1m", now=minute_hi + MINUTE):
            if minute_lo <= row.time < minute_hi:
                candle = Candle(row.time, row.open, row.high, row.low, row.close, row.volume)
                events.append(ReplayEvent(row.time + MINUTE, CANDLE_RANK, candle))
    events.sort(key=_key)
    return events


def _key(event: ReplayEvent) -> tuple[datetime, int]:
    return (event.at, event.rank)


def stable_minutes(storage: Storage, lo: datetime, hi: datetime) -> set[datetime]:
    """The times of the candles stored stable with ``lo <= time <= hi`` (the DB writer asks
    before a page of young candles, to tell which of them its upsert makes final)."""
    backend = storage._backend  # the package's own: Storage keeps its backend private
    tp, tv = backend.time_param, backend.time_value
    with guard(backend, "read stable candles"):
        cursor = backend.execute(
            "SELECT time FROM ohlc_candles WHERE time >= ? AND time <= ? AND stable",
            (tp(require_utc(lo)), tp(require_utc(hi))),
        )
        return {tv(row[0]) for row in cursor.fetchall()}
