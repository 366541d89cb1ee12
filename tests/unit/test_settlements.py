"""The funding-settlement schedule: phases, dead zones, floor/ceil/next."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qx_actors.domain.settlements import (
    ceil_settlement_time,
    floor_settlement_time,
    is_valid_settlement_time,
    next_settlement_time,
    previous_settlement_time,
    settlement_times,
)
from qx_actors.domain.timeutil import FIRST_SETTLEMENT_TIME


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


FIRST = FIRST_SETTLEMENT_TIME
A_END = utc(2021, 12, 7, 8)
B_START = utc(2021, 12, 7, 20)
B_END = utc(2025, 4, 11, 4)
C_START = utc(2025, 4, 11, 16)


@pytest.mark.parametrize(
    ("time", "valid"),
    [
        (FIRST, True),
        (utc(2021, 1, 10, 8), False),
        (utc(2021, 1, 12, 8), True),
        (utc(2021, 1, 12, 16), False),
        (utc(2021, 6, 1, 8, 0, 1), False),
        (A_END, True),
        (utc(2021, 12, 7, 12), False),
        (utc(2021, 12, 7, 16), False),
        (B_START, True),
        (utc(2021, 12, 8, 4), True),
        (utc(2021, 12, 8, 8), False),
        (utc(2024, 2, 29, 4), True),
        (utc(2024, 2, 29, 12), True),
        (utc(2024, 2, 29, 20), True),
        (utc(2024, 2, 29, 0), False),
        (B_END, True),
        (utc(2025, 4, 11, 8), False),
        (utc(2025, 4, 11, 12), False),
        (C_START, True),
        (utc(2025, 4, 12, 0), True),
        (utc(2025, 4, 12, 4), False),
        (utc(2026, 1, 1, 0), True),
        (utc(2026, 1, 1, 8), True),
        (utc(2026, 1, 1, 16), True),
        (utc(2026, 1, 1, 20), False),
        (utc(2028, 2, 29, 16), True),
    ],
)
def test_is_valid_settlement_time(time: datetime, valid: bool) -> None:
    """Settlement times follow the three phases and nothing else."""
    assert valid == is_valid_settlement_time(time)


@pytest.mark.parametrize(
    ("time", "floor", "ceil"),
    [
        # phase A
        (utc(2021, 1, 11, 8, 0, 0, 1), FIRST, utc(2021, 1, 12, 8)),
        (utc(2021, 3, 1, 0, 0), utc(2021, 2, 28, 8), utc(2021, 3, 1, 8)),
        (utc(2021, 3, 1, 23, 59, 59, 999999), utc(2021, 3, 1, 8), utc(2021, 3, 2, 8)),
        (utc(2021, 12, 6, 9), utc(2021, 12, 6, 8), A_END),
        # dead zone A -> B
        (utc(2021, 12, 7, 8, 0, 0, 1), A_END, B_START),
        (utc(2021, 12, 7, 12), A_END, B_START),
        (utc(2021, 12, 7, 19, 59, 59), A_END, B_START),
        # phase B
        (utc(2021, 12, 7, 20, 0, 1), B_START, utc(2021, 12, 8, 4)),
        (utc(2021, 12, 8, 0), B_START, utc(2021, 12, 8, 4)),
        (utc(2022, 1, 1, 0), utc(2021, 12, 31, 20), utc(2022, 1, 1, 4)),
        (utc(2024, 2, 29, 0), utc(2024, 2, 28, 20), utc(2024, 2, 29, 4)),
        (utc(2024, 2, 29, 23, 59), utc(2024, 2, 29, 20), utc(2024, 3, 1, 4)),
        (utc(2024, 2, 29, 13), utc(2024, 2, 29, 12), utc(2024, 2, 29, 20)),
        (utc(2025, 4, 11, 3, 59), utc(2025, 4, 10, 20), B_END),
        # dead zone B -> C
        (utc(2025, 4, 11, 4, 0, 0, 1), B_END, C_START),
        (utc(2025, 4, 11, 8), B_END, C_START),
        (utc(2025, 4, 11, 12), B_END, C_START),
        (utc(2025, 4, 11, 15, 59, 59, 999999), B_END, C_START),
        # phase C
        (utc(2025, 4, 11, 16, 0, 1), C_START, utc(2025, 4, 12, 0)),
        (utc(2025, 12, 31, 23, 59, 59), utc(2025, 12, 31, 16), utc(2026, 1, 1, 0)),
        (utc(2026, 1, 1, 0, 0, 1), utc(2026, 1, 1, 0), utc(2026, 1, 1, 8)),
        (utc(2028, 2, 29, 9), utc(2028, 2, 29, 8), utc(2028, 2, 29, 16)),
    ],
)
def test_floor_and_ceil(time: datetime, floor: datetime, ceil: datetime) -> None:
    """Floor and ceil snap inside phases and to phase boundaries in dead zones."""
    assert floor == floor_settlement_time(time)
    assert ceil == ceil_settlement_time(time)


@pytest.mark.parametrize("time", [FIRST, A_END, B_START, B_END, C_START, utc(2026, 3, 1, 8)])
def test_floor_and_ceil_of_a_settlement_time_is_itself(time: datetime) -> None:
    """A settlement time (including every phase boundary) is its own floor and ceil."""
    assert time == floor_settlement_time(time) == ceil_settlement_time(time)


def test_next_settlement_time_crosses_dead_zones() -> None:
    """The next settlement after a phase's last one is the next phase's first."""
    assert next_settlement_time(A_END) == B_START
    assert next_settlement_time(B_END) == C_START
    assert utc(2025, 4, 12, 0) == next_settlement_time(C_START)
    assert next_settlement_time(utc(2020, 1, 1)) == FIRST


def test_previous_settlement_time_crosses_dead_zones() -> None:
    """The settlement before a phase's first one is the previous phase's last."""
    assert previous_settlement_time(B_START) == A_END
    assert previous_settlement_time(C_START) == B_END


def test_floor_before_the_first_settlement_is_an_error() -> None:
    """Flooring before the first settlement raises a ValueError naming it."""
    with pytest.raises(ValueError, match="2021-01-11T08:00:00"):
        floor_settlement_time(utc(2021, 1, 11, 7, 59))
    with pytest.raises(ValueError, match="before the first funding settlement"):
        previous_settlement_time(FIRST)


def test_ceil_before_the_first_settlement_is_the_first() -> None:
    """Ceiling any earlier time gives the first settlement."""
    assert ceil_settlement_time(utc(2015, 6, 1)) == FIRST
    assert not is_valid_settlement_time(utc(2020, 1, 1, 8))


@pytest.mark.parametrize(
    "function",
    [floor_settlement_time, ceil_settlement_time, is_valid_settlement_time, next_settlement_time],
)
def test_naive_datetimes_are_rejected(function: object) -> None:
    """A naive datetime is a ValueError saying it must be timezone-aware."""
    assert callable(function)
    with pytest.raises(ValueError, match="timezone-aware"):
        function(datetime(2025, 1, 1, 4))


def test_other_timezones_are_converted() -> None:
    """An aware non-UTC time is judged by its UTC instant, and results are UTC."""
    paris = timezone(timedelta(hours=1))
    assert is_valid_settlement_time(datetime(2026, 1, 1, 9, tzinfo=paris))
    assert utc(2026, 1, 1, 8) == floor_settlement_time(datetime(2026, 1, 1, 10, tzinfo=paris))
    assert floor_settlement_time(datetime(2026, 1, 1, 10, tzinfo=paris)).tzinfo == UTC


def test_settlement_times_over_both_dead_zones() -> None:
    """The iterator lists every settlement in the closed range, across phase changes."""
    times = list(settlement_times(utc(2021, 12, 6, 0), utc(2021, 12, 8, 12)))
    assert [
        utc(2021, 12, 6, 8),
        A_END,
        B_START,
        utc(2021, 12, 8, 4),
        utc(2021, 12, 8, 12),
    ] == times
    times = list(settlement_times(utc(2025, 4, 10, 20), C_START))
    assert [utc(2025, 4, 10, 20), B_END, C_START] == times


def test_settlement_times_count_over_a_year() -> None:
    """A whole phase-B year has three settlements a day (2024 is a leap year)."""
    times = list(settlement_times(utc(2024, 1, 1), utc(2024, 12, 31, 23, 59)))
    assert len(times) == 366 * 3
    assert all(later > earlier for earlier, later in itertools.pairwise(times))


def test_settlement_times_empty_and_naive() -> None:
    """An empty range yields nothing; naive bounds fail at the call."""
    assert list(settlement_times(utc(2026, 1, 1, 1), utc(2026, 1, 1, 7))) == []
    with pytest.raises(ValueError, match="timezone-aware"):
        settlement_times(datetime(2026, 1, 1), utc(2026, 1, 2))


instants = st.datetimes(
    min_value=datetime(2021, 1, 11, 8), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)
any_instants = st.datetimes(
    min_value=datetime(2019, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)


@given(instants)
def test_floor_and_ceil_bracket_the_time(time: datetime) -> None:
    """floor(t) <= t <= ceil(t), both valid, no valid time between them, both idempotent."""
    floor = floor_settlement_time(time)
    ceil = ceil_settlement_time(time)
    assert floor <= time <= ceil
    assert is_valid_settlement_time(floor)
    assert is_valid_settlement_time(ceil)
    assert floor == floor_settlement_time(floor)
    assert ceil == ceil_settlement_time(ceil)
    assert (floor == ceil) == is_valid_settlement_time(time)
    if floor != ceil:
        assert ceil == next_settlement_time(floor)
        assert [t for t in settlement_times(floor, ceil) if floor < t < ceil] == []


@given(any_instants)
def test_next_is_strictly_later_and_valid(time: datetime) -> None:
    """next(t) > t, is valid, and is the ceil of anything in (t, next]."""
    following = next_settlement_time(time)
    assert following > time
    assert is_valid_settlement_time(following)
    assert following == ceil_settlement_time(time + timedelta(microseconds=1))
    if time >= FIRST:
        assert floor_settlement_time(time) == previous_settlement_time(following)


@given(
    st.datetimes(
        min_value=datetime(2021, 11, 1), max_value=datetime(2025, 6, 1), timezones=st.just(UTC)
    ),
    st.integers(min_value=0, max_value=20),
)
def test_settlement_times_agrees_with_next(start: datetime, count: int) -> None:
    """The iterator is the chain ceil(start), next(...), ... up to the end."""
    chain = [ceil_settlement_time(start)]
    for _ in range(count):
        chain.append(next_settlement_time(chain[-1]))
    assert chain == list(settlement_times(start, chain[-1]))
