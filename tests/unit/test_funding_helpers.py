"""quantoxide's funding-state helpers (bounds, is_range_available, has_missing, the reach and
UnreachableMissingSettlement) against a brute-force model of the schedule.

The model knows the schedule only by its published rule (hour of day per phase), walking whole
hours; it shares no code with ``qx_actors.domain.settlements``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from qx_actors.domain.funding import FundingSettlementsFacts, FundingSettlementsState
from qx_actors.domain.timeutil import format_utc
from qx_actors.errors import UnreachableMissingSettlement

HOUR = timedelta(hours=1)
A_START = datetime(2021, 1, 11, 8, tzinfo=UTC)
A_END = datetime(2021, 12, 7, 8, tzinfo=UTC)
B_START = datetime(2021, 12, 7, 20, tzinfo=UTC)
B_END = datetime(2025, 4, 11, 4, tzinfo=UTC)
C_START = datetime(2025, 4, 11, 16, tzinfo=UTC)


def is_settlement(t: datetime) -> bool:
    """The schedule's rule, written out: phase A daily 08, B 04/12/20, C 00/08/16."""
    if t.minute or t.second or t.microsecond:
        return False
    if A_START <= t <= A_END:
        return t.hour == 8
    if B_START <= t <= B_END:
        return t.hour in (4, 12, 20)
    return t >= C_START and t.hour in (0, 8, 16)


def model_times(start: datetime, end: datetime) -> list[datetime]:
    """Every settlement in ``[start, end]``, by walking whole hours."""
    t = start.replace(minute=0, second=0, microsecond=0)
    if t < start:
        t += HOUR
    out = []
    while t <= end:
        if is_settlement(t):
            out.append(t)
        t += HOUR
    return out


def model_floor(t: datetime) -> datetime:
    """The last settlement at or before ``t`` (``t`` not before the first one)."""
    t = t.replace(minute=0, second=0, microsecond=0)
    while not is_settlement(t):
        t -= HOUR
    return t


def evaluate(
    stored: set[datetime], *, reach: datetime, now: datetime, scan_from: datetime
) -> FundingSettlementsState:
    times = sorted(stored)
    facts = FundingSettlementsFacts(
        earliest=times[0] if times else None,
        latest=times[-1] if times else None,
        stored_times_in_scan=tuple(t for t in times if t >= scan_from),
    )
    return FundingSettlementsState.evaluate(facts, reach=reach, now=now, scan_from=scan_from)


instants = st.datetimes(
    min_value=datetime(2021, 1, 5), max_value=datetime(2026, 6, 1), timezones=st.just(UTC)
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[set[datetime], datetime, datetime, datetime]:
    """Stored settlements of a window of up to 20 days, and a reach, now and scan start."""
    start = draw(instants)
    universe = model_times(start, start + timedelta(days=draw(st.integers(0, 20))))
    assume(universe)
    stored = set(draw(st.sets(st.sampled_from(universe))))
    now = universe[-1] + timedelta(minutes=draw(st.integers(0, 3 * 24 * 60)))
    low = max(start - timedelta(days=3), A_START - timedelta(days=2))
    span = int((now - low).total_seconds())
    reach = low + timedelta(seconds=draw(st.integers(0, span)))
    scan_from = low + timedelta(seconds=draw(st.integers(0, span)))
    return stored, reach, now, scan_from


def model_reach(reach: datetime, now: datetime) -> datetime:
    return min(model_floor(max(reach, A_START)), model_floor(now))


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_evaluate_matches_the_model(
    scenario: tuple[set[datetime], datetime, datetime, datetime],
) -> None:
    """Floored reach, bounds, missing, has_missing and the unreachable-missing error."""
    stored, reach, now, scan_from = scenario
    expected_reach = model_reach(reach, now)
    missing: list[datetime] = []
    if stored:
        missing = [
            t for t in model_times(max(scan_from, min(stored)), max(stored)) if t not in stored
        ]
    if missing and missing[0] < expected_reach:
        with pytest.raises(UnreachableMissingSettlement) as caught:
            evaluate(stored, reach=reach, now=now, scan_from=scan_from)
        assert format_utc(missing[0]) in str(caught.value)
        assert f"reach {format_utc(expected_reach)}" in str(caught.value)
        return
    state = evaluate(stored, reach=reach, now=now, scan_from=scan_from)
    assert expected_reach == state.reach
    assert tuple(missing) == state.missing
    bounds = (min(stored), max(stored)) if stored else None
    assert bounds == state.bounds
    assert (None if bounds is None else bounds[0]) == state.bound_start
    assert (None if bounds is None else bounds[1]) == state.bound_end
    assert state.has_missing() == (not stored or bool(missing) or expected_reach < min(stored))


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.data())
def test_is_range_available_matches_the_model(
    scenario: tuple[set[datetime], datetime, datetime, datetime], data: st.DataObject
) -> None:
    """Inclusive on both ends: within the bounds and no missing settlement in the range."""
    stored, _, now, scan_from = scenario
    low = min(stored) - timedelta(days=1) if stored else now - timedelta(days=5)
    span = int((now + timedelta(days=1) - low).total_seconds())
    # half the draws land on settlement times, where inclusivity matters
    on_grid = st.sampled_from(sorted(stored)) if stored else st.nothing()
    anywhere = st.integers(0, span).map(lambda s: low + timedelta(seconds=s))
    a, b = sorted([data.draw(on_grid | anywhere), data.draw(on_grid | anywhere)])
    # a reach at the oldest stored keeps every hole reachable: this test is about ranges
    reach = min(stored) if stored else now
    state = evaluate(stored, reach=reach, now=now, scan_from=scan_from)
    known_missing = set(state.missing)
    expected = bool(stored) and min(stored) <= a and b <= max(stored)
    expected = expected and not any(t in known_missing for t in model_times(a, b))
    assert expected == state.is_range_available(a, b)
    if scan_from <= min(stored, default=scan_from):
        # the whole table is scanned: available == every scheduled settlement is stored
        whole = bool(stored) and min(stored) <= a and b <= max(stored)
        assert (whole and all(t in stored for t in model_times(a, b))) == (
            state.is_range_available(a, b)
        )
    if a < b:
        with pytest.raises(ValueError, match="after range_to"):
            state.is_range_available(b, a)


def test_is_range_available_edges() -> None:
    """Bounds are inclusive, a single instant is a range, holes and naive times rejected."""
    day = [datetime(2026, 1, 1, h, tzinfo=UTC) for h in (0, 8, 16)]
    stored = {*day, datetime(2026, 1, 2, 8, tzinfo=UTC)}  # 2026-01-02 00:00 missing
    now = datetime(2026, 1, 3, tzinfo=UTC)
    state = evaluate(stored, reach=day[0], now=now, scan_from=day[0])
    assert state.is_range_available(day[0], day[2])
    assert state.is_range_available(day[1], day[1])
    assert state.is_range_available(day[2], day[2] + timedelta(hours=7))  # no settlement there
    assert not state.is_range_available(day[0] - timedelta(microseconds=1), day[2])
    assert not state.is_range_available(day[0], datetime(2026, 1, 2, 8, tzinfo=UTC))
    assert not state.is_range_available(now, now)  # past the latest stored
    empty = evaluate(set(), reach=day[0], now=now, scan_from=day[0])
    assert empty.bounds is None and empty.bound_start is None and empty.bound_end is None
    assert not empty.is_range_available(day[0], day[2])
    assert empty.has_missing()
    with pytest.raises(ValueError, match="timezone-aware"):
        state.is_range_available(datetime(2026, 1, 1), day[2])


def test_summary_keys_are_unchanged() -> None:
    """The CLI and the logs read these keys; the helpers add none."""
    state = evaluate(set(), reach=A_START, now=datetime(2026, 1, 3, tzinfo=UTC), scan_from=A_START)
    assert list(state.summary()) == [
        "reach",
        "now",
        "scan_from",
        "earliest",
        "latest",
        "missing",
        "first_missing",
        "caught_up",
        "complete",
    ]
