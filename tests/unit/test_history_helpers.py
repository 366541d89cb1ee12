"""quantoxide's PriceHistoryState helpers (bounds, gaps, is_range_available, ...) against a
brute-force model over a small window of minutes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_history import MIN, at, runs, state_of

WINDOW = 40
HEAD = WINDOW + 200  # far ahead: every stored minute is old and stable


def covered_from(stored: set[int], verified: set[int]) -> int:
    """The oldest stored minute, extended down through adjacent verified-empty minutes."""
    lower = min(stored)
    while lower - 1 in verified:
        lower -= 1
    return lower


def missing(stored: set[int], verified: set[int]) -> set[int]:
    """Minutes between the bounds neither stored nor verified empty (the gaps)."""
    return {m for m in range(min(stored), max(stored)) if m not in stored | verified}


@st.composite
def histories(draw: st.DrawFn) -> tuple[set[int], set[int]]:
    """Stored minutes and verified-empty minutes (disjoint, as storage keeps them)."""
    stored = draw(st.sets(st.integers(0, WINDOW), min_size=1, max_size=WINDOW))
    candidates = sorted(set(range(-5, WINDOW + 1)) - stored)
    verified = draw(st.sets(st.sampled_from(candidates))) if candidates else set()
    return stored, verified


def evaluate(stored: set[int], verified: set[int], reach: int) -> object:
    return state_of(stored, reach=reach, head=HEAD, verified=runs(verified))


@settings(max_examples=300, deadline=None)
@given(
    history=histories(),
    start_s=st.integers(-10 * 60, (WINDOW + 10) * 60),
    length_s=st.integers(1, 20 * 60),
)
def test_is_range_available_matches_the_model(
    history: tuple[set[int], set[int]], start_s: int, length_s: int
) -> None:
    stored, verified = history
    state = evaluate(stored, verified, reach=-10)
    range_from = at(0) + timedelta(seconds=start_s)
    range_to = range_from + timedelta(seconds=length_s)
    within = at(covered_from(stored, verified)) <= range_from and range_to <= at(max(stored))
    crosses = any(
        at(m) - MIN < range_to and range_from < at(m) + MIN for m in missing(stored, verified)
    )
    assert (within and not crosses) == state.is_range_available(range_from, range_to)  # type: ignore[attr-defined]


@settings(max_examples=300, deadline=None)
@given(history=histories(), reach=st.integers(-8, 0))
def test_bounds_gaps_tail_and_has_gaps_match_the_model(
    history: tuple[set[int], set[int]], reach: int
) -> None:
    stored, verified = history
    state = evaluate(stored, verified, reach=reach)
    gaps = missing(stored, verified)
    assert (at(min(stored)), at(max(stored))) == state.bounds  # type: ignore[attr-defined]
    assert at(min(stored)) == state.bound_start  # type: ignore[attr-defined]
    assert at(max(stored)) == state.bound_end  # type: ignore[attr-defined]
    assert [(at(a), at(b)) for a, b in runs(gaps)] == [
        (g.start, g.end)
        for g in state.gaps  # type: ignore[attr-defined]
    ]
    tail_start = max(gaps) + 1 if gaps else min(stored)
    assert (at(max(stored)) - at(tail_start)) == state.tail_continuous_duration()  # type: ignore[attr-defined]
    expected = bool(gaps) or reach < covered_from(stored, verified)
    assert expected is state.has_gaps()  # type: ignore[attr-defined]


def test_nothing_stored() -> None:
    state = state_of([], reach=0, head=10)
    assert state.bounds is None and state.bound_start is None and state.bound_end is None
    assert state.tail_continuous_duration() is None
    assert state.has_gaps()
    assert not state.is_range_available(at(1), at(2))


def test_an_empty_or_reversed_range_is_an_error() -> None:
    state = state_of(range(10), reach=0, head=100)
    with pytest.raises(ValueError, match="not before"):
        state.is_range_available(at(3), at(3))
    with pytest.raises(ValueError, match="not before"):
        state.is_range_available(at(4), at(3))


def test_downtime_is_available_and_reported_apart() -> None:
    """Verified-empty minutes are no gap: a range across them is available."""
    state = state_of([0, 1, 2, 6, 7], reach=0, head=100, verified=[(3, 5)])
    assert () == state.gaps
    assert [(at(3), at(5))] == [(v.start, v.end) for v in state.verified_empty]
    assert state.is_range_available(at(1), at(7))
    assert not state.has_gaps()


def test_flag_gap_range_reach_means_the_whole_reach() -> None:
    """price_history_flag_gap_range_h: reach starts the range at the reach (null turns it off:
    tests/unit/test_config.py)."""
    from qx_actors.config import config_from_mapping

    now = at(10_000)
    reach = at(100)
    whole = config_from_mapping(
        {"database": "sqlite:///:memory:", "sync": {"price_history_flag_gap_range_h": "reach"}}
    ).sync
    recent = config_from_mapping(
        {"database": "sqlite:///:memory:", "sync": {"price_history_flag_gap_range_h": 2}}
    ).sync
    assert reach == whole.price_history_flag_gap_from(now, reach)
    assert now - timedelta(hours=2) == recent.price_history_flag_gap_from(now, reach)
    assert reach == recent.price_history_flag_gap_from(at(150), reach)  # never before the reach
