"""The funding-settlement schedule of LN Markets: which UTC instants are settlement times.

The schedule changed twice over history:

* phase A: daily at 08:00, from 2021-01-11 08:00 to 2021-12-07 08:00;
* phase B: at 04:00, 12:00 and 20:00, from 2021-12-07 20:00 to 2025-04-11 04:00;
* phase C: at 00:00, 08:00 and 16:00, from 2025-04-11 16:00 on.

Between two phases there is a dead zone without settlements: flooring a time in it gives the
last settlement of the earlier phase, ceiling gives the first of the next one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from qx_actors.domain.spans import Grid
from qx_actors.domain.timeutil import DAY, FIRST_SETTLEMENT_TIME, require_utc

__all__ = [
    "SETTLEMENT_GRID",
    "ceil_settlement_time",
    "floor_settlement_time",
    "is_valid_settlement_time",
    "next_settlement_time",
    "previous_settlement_time",
    "settlement_times",
]

_TICK = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class _Phase:
    """Settlements at ``start + k * period`` for every ``k >= 0`` up to ``end`` (inclusive)."""

    start: datetime
    end: datetime | None
    period: timedelta


_PHASES: tuple[_Phase, ...] = (
    _Phase(datetime(2021, 1, 11, 8, tzinfo=UTC), datetime(2021, 12, 7, 8, tzinfo=UTC), DAY),
    _Phase(
        datetime(2021, 12, 7, 20, tzinfo=UTC),
        datetime(2025, 4, 11, 4, tzinfo=UTC),
        timedelta(hours=8),
    ),
    _Phase(datetime(2025, 4, 11, 16, tzinfo=UTC), None, timedelta(hours=8)),
)
assert _PHASES[0].start == FIRST_SETTLEMENT_TIME


def _utc(value: datetime) -> datetime:
    return require_utc(value, "settlement time")


def floor_settlement_time(value: datetime) -> datetime:
    """The last settlement time at or before ``value``; ``ValueError`` before the first one."""
    value = _utc(value)
    if value < FIRST_SETTLEMENT_TIME:
        raise ValueError(
            f"{value.isoformat()} is before the first funding settlement "
            f"{FIRST_SETTLEMENT_TIME.isoformat()}"
        )
    for phase in reversed(_PHASES):
        if value >= phase.start:
            if phase.end is not None and value >= phase.end:
                return phase.end
            return phase.start + ((value - phase.start) // phase.period) * phase.period
    raise AssertionError("unreachable: the first phase starts at the first settlement")


def ceil_settlement_time(value: datetime) -> datetime:
    """The first settlement time at or after ``value`` (the first settlement for older times)."""
    value = _utc(value)
    for phase in _PHASES:
        if phase.end is None or value <= phase.end:
            if value <= phase.start:
                return phase.start
            steps = -((phase.start - value) // phase.period)
            return phase.start + steps * phase.period
    raise AssertionError("unreachable: the last phase has no end")


def is_valid_settlement_time(value: datetime) -> bool:
    """Whether ``value`` is exactly a settlement time of the schedule."""
    value = _utc(value)
    return value >= FIRST_SETTLEMENT_TIME and floor_settlement_time(value) == value


def next_settlement_time(value: datetime) -> datetime:
    """The first settlement time strictly after ``value``."""
    return ceil_settlement_time(_utc(value) + _TICK)


def previous_settlement_time(value: datetime) -> datetime:
    """The last settlement time strictly before ``value``; ``ValueError`` if there is none."""
    return floor_settlement_time(_utc(value) - _TICK)


#: The settlement schedule as a grid (see :mod:`qx_actors.domain.spans`).
SETTLEMENT_GRID = Grid(
    "settlement time", is_valid_settlement_time, next_settlement_time, previous_settlement_time
)


def settlement_times(start: datetime, end: datetime) -> Iterator[datetime]:
    """Every settlement time in ``[start, end]``, ascending."""
    start = _utc(start)
    end = _utc(end)
    return _iter_settlement_times(ceil_settlement_time(start), end)


def _iter_settlement_times(first: datetime, end: datetime) -> Iterator[datetime]:
    current = first
    while current <= end:
        yield current
        current = next_settlement_time(current)
