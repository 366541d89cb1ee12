"""Price-history state and download plan."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qx_actors.domain.history import (
    DownloadKind,
    DownloadRange,
    PriceHistoryFacts,
    PriceHistoryState,
    TimeRange,
    check_reach_covered,
    is_stable_candle_time,
    last_stable_minute,
)
from qx_actors.errors import (
    LookbackBeyondReachError,
    ReachBeforeHistoryError,
    UnreachableGapError,
)

BASE = datetime(2026, 1, 1, tzinfo=UTC)
MIN = timedelta(minutes=1)
LATEST, UPPER, GAP, LOWER = (
    DownloadKind.LATEST,
    DownloadKind.UPPER_BOUND,
    DownloadKind.GAP,
    DownloadKind.LOWER_BOUND,
)


def at(index: int) -> datetime:
    """Minute number ``index`` after BASE."""
    return BASE + index * MIN


def idx(time: datetime) -> int:
    """The minute number of ``time``."""
    return (time - BASE) // MIN


def runs(minutes: Iterable[int]) -> list[tuple[int, int]]:
    """Consecutive runs of a set of minute numbers, as inclusive pairs."""
    result: list[tuple[int, int]] = []
    for minute in sorted(minutes):
        if result and result[-1][1] + 1 == minute:
            result[-1] = (result[-1][0], minute)
        else:
            result.append((minute, minute))
    return result


def facts_from(
    stored: dict[int, bool],
    verified: Iterable[tuple[int, int]] = (),
    *,
    unstable_from: int | None = None,
) -> PriceHistoryFacts:
    """What storage would report for ``stored`` (minute -> stable flag)."""
    times = sorted(stored)
    holes = tuple((at(a + 1), at(b - 1)) for a, b in itertools.pairwise(times) if b > a + 1)
    unstable = [t for t in times if not stored[t] and (unstable_from is None or t >= unstable_from)]
    return PriceHistoryFacts(
        earliest=at(times[0]) if times else None,
        latest=at(times[-1]) if times else None,
        holes=holes,
        verified_empty=tuple((at(a), at(b)) for a, b in verified),
        earliest_unstable=at(min(unstable)) if unstable else None,
    )


def state_of(
    stored: Iterable[int],
    *,
    reach: int,
    head: int,
    verified: Iterable[tuple[int, int]] = (),
    unstable: Iterable[int] = (),
    recheck: bool = False,
) -> PriceHistoryState:
    """A state at ``now`` = head minute + 30 s; young candles are unstable."""
    now = at(head) + timedelta(seconds=30)
    flags = {m: is_stable_candle_time(at(m), now) for m in stored}
    for m in unstable:
        flags[m] = False
    return PriceHistoryState.evaluate(
        facts_from(flags, verified), reach=at(reach), now=now, recheck_verified_empty=recheck
    )


def rng(kind: DownloadKind, start: int, end: int) -> DownloadRange:
    return DownloadRange(kind, at(start), at(end))


# --- values ---------------------------------------------------------------------------------


def test_time_range_counts_minutes_inclusively() -> None:
    """A TimeRange is inclusive: [t, t] is one minute."""
    assert TimeRange(at(3), at(3)).minutes == 1
    assert TimeRange(at(0), at(59)).minutes == 60
    assert at(5) in TimeRange(at(0), at(5))
    assert str(TimeRange(at(0), at(5))) == "[2026-01-01T00:00:00Z .. 2026-01-01T00:05:00Z]"


def test_ranges_reject_bad_bounds() -> None:
    """Unrounded, naive or reversed bounds are ValueErrors."""
    with pytest.raises(ValueError, match="not a whole minute"):
        TimeRange(at(0), at(1) + timedelta(seconds=1))
    with pytest.raises(ValueError, match="timezone-aware"):
        TimeRange(datetime(2026, 1, 1), at(1))
    with pytest.raises(ValueError, match="empty"):
        DownloadRange(GAP, at(2), at(1))


def test_download_range_requests() -> None:
    """A range needs ceil(minutes / batch) pages."""
    assert rng(GAP, 0, 999).requests() == 1
    assert rng(GAP, 0, 1000).requests() == 2
    assert rng(GAP, 0, 10).requests(batch_size=4) == 3


# --- the plan, kind by kind -------------------------------------------------------------------


def test_empty_table_fetches_latest() -> None:
    """An empty table fetches [reach, now]."""
    state = state_of([], reach=10, head=500)
    assert rng(LATEST, 10, 500) == state.next_download(newest_gap_first=False)
    assert state.is_empty
    assert state.coverage_ratio == 0.0
    assert state.missing_minutes == 491


def test_reach_is_rounded_up_and_capped_at_now() -> None:
    """A reach between minutes means the next whole minute; a future reach means now."""
    now = at(500) + timedelta(seconds=30)
    facts = facts_from({})
    state = PriceHistoryState.evaluate(facts, reach=at(10) + timedelta(seconds=1), now=now)
    assert at(11) == state.reach
    state = PriceHistoryState.evaluate(facts, reach=at(900), now=now)
    assert at(500) == state.reach


def test_complete_history_needs_nothing() -> None:
    """All of [reach, now] stored, young candles unstable: complete."""
    state = state_of(range(0, 501), reach=0, head=500)
    assert state.next_download(newest_gap_first=True) is None
    assert state.is_complete
    assert state.coverage_ratio == 1.0
    assert state.missing_minutes == 0


def test_new_minutes_fetch_the_upper_bound_with_young_candles() -> None:
    """Missing newest minutes fetch from the oldest unstable candle up to now."""
    state = state_of(range(0, 498), reach=0, head=500)
    assert rng(UPPER, idx(state.earliest_unstable or BASE), 500) == state.next_download(
        newest_gap_first=False
    )
    assert state.earliest_unstable is not None
    assert idx(state.earliest_unstable) == 441  # the first minute younger than an hour


def test_old_unstable_candle_fetches_the_upper_bound() -> None:
    """An unstable candle that is now over an hour old is re-fetched even when up to date."""
    state = state_of(range(0, 501), reach=0, head=500, unstable=[100])
    assert rng(UPPER, 100, 500) == state.next_download(newest_gap_first=False)


def test_young_unstable_candles_alone_need_nothing() -> None:
    """Unstable candles younger than an hour wait for the next pass when up to date."""
    state = state_of(range(0, 501), reach=0, head=500, unstable=[470])
    assert state.next_download(newest_gap_first=False) is None


def test_gaps_are_widened_and_ordered() -> None:
    """Gaps are fetched widened by 5 minutes, oldest first for backfill, newest first live."""
    stored = [m for m in range(0, 501) if not 100 <= m <= 109 and not 300 <= m <= 300]
    state = state_of(stored, reach=0, head=500)
    assert (TimeRange(at(100), at(109)), TimeRange(at(300), at(300))) == state.gaps
    assert rng(GAP, 95, 114) == state.next_download(newest_gap_first=False)
    assert rng(GAP, 295, 305) == state.next_download(newest_gap_first=True)
    assert state.missing_minutes == 11


def test_gap_widening_is_clamped_to_reach_and_now() -> None:
    """Widening never goes below the reach or beyond the current minute."""
    stored = [m for m in range(0, 501) if m not in (12, 13, 498, 499)]
    state = state_of(stored, reach=10, head=500)
    assert (rng(GAP, 10, 18), rng(GAP, 493, 500)) == state.downloads(newest_gap_first=False)


def test_gap_neighbours_do_not_trigger_the_upper_bound() -> None:
    """Unstable neighbours of a gap are re-fetched with the gap, not from the upper bound."""
    stored = [m for m in range(0, 501) if not 200 <= m <= 204]
    state = state_of(stored, reach=0, head=500, unstable=[195, 196, 205])
    assert (rng(GAP, 195, 209),) == state.downloads(newest_gap_first=False)


def test_gap_neighbours_with_new_minutes_refetch_only_young_candles() -> None:
    """With a gap neighbour unstable and new minutes, the upper bound starts at young ones."""
    stored = [m for m in range(0, 499) if not 200 <= m <= 204]
    state = state_of(stored, reach=0, head=500, unstable=[195])
    assert (rng(UPPER, 441, 500), rng(GAP, 195, 209)) == state.downloads(newest_gap_first=True)


def test_lower_bound_down_to_reach() -> None:
    """Stored history starting after the reach fetches [reach, earliest - 1m] last."""
    stored = [m for m in range(50, 501) if m != 300]
    state = state_of(stored, reach=10, head=500)
    assert (rng(GAP, 295, 305), rng(LOWER, 10, 49)) == state.downloads(newest_gap_first=False)
    assert state.missing_minutes == 41


def test_verified_empty_is_not_a_gap() -> None:
    """A hole confirmed empty by the exchange is no gap, unless asked to re-check."""
    stored = [m for m in range(0, 501) if not 100 <= m <= 109]
    state = state_of(stored, reach=0, head=500, verified=[(100, 109)])
    assert state.gaps == ()
    assert state.is_complete
    assert (TimeRange(at(100), at(109)),) == state.verified_empty
    rechecked = state_of(stored, reach=0, head=500, verified=[(100, 109)], recheck=True)
    assert rng(GAP, 95, 114) == rechecked.next_download(newest_gap_first=False)


def test_recheck_from_limits_the_rechecked_verified_ranges() -> None:
    """Re-checking asks again only about verified-empty holes ending at or after
    ``recheck_from`` (the gap-flag range); older ones stay verified, unflagged holes stay gaps
    wherever they are."""
    stored = [m for m in range(0, 501) if not (100 <= m <= 109 or 300 <= m <= 309 or m == 50)]
    verified = [(100, 109), (300, 309)]
    now = at(500) + timedelta(seconds=30)
    facts = facts_from({m: is_stable_candle_time(at(m), now) for m in stored}, verified)
    state = PriceHistoryState.evaluate(
        facts, reach=at(0), now=now, recheck_verified_empty=True, recheck_from=at(200)
    )
    assert (TimeRange(at(50), at(50)), TimeRange(at(300), at(309))) == state.gaps
    assert at(200) == state.recheck_from
    everything = PriceHistoryState.evaluate(
        facts, reach=at(0), now=now, recheck_verified_empty=True
    )
    assert [(50, 50), (100, 109), (300, 309)] == [
        (idx(g.start), idx(g.end)) for g in everything.gaps
    ]
    plain = PriceHistoryState.evaluate(facts, reach=at(0), now=now, recheck_from=at(200))
    assert (TimeRange(at(50), at(50)),) == plain.gaps
    assert plain.recheck_from is None


def test_recheck_from_keeps_old_verified_range_below_earliest_covered() -> None:
    """A verified-empty range below the earliest candle is asked about again (as the lower
    bound) only when it ends at or after ``recheck_from``."""
    now = at(500) + timedelta(seconds=30)
    facts = facts_from({m: is_stable_candle_time(at(m), now) for m in range(50, 501)}, [(10, 49)])

    def state(recheck_from: int) -> PriceHistoryState:
        return PriceHistoryState.evaluate(
            facts, reach=at(10), now=now, recheck_verified_empty=True, recheck_from=at(recheck_from)
        )

    assert state(100).is_complete
    assert 0 == state(100).missing_minutes
    assert rng(LOWER, 10, 49) == state(40).next_download(newest_gap_first=False)
    assert 40 == state(40).missing_minutes


def test_holes_anywhere_are_gaps_repaired_oldest_first_in_backfill() -> None:
    """Holes at any age between the bounds are gaps; backfill plans them oldest first (after
    the head), live newest first."""
    holes = [(20, 29), (120, 400), (450, 451)]
    stored = [m for m in range(0, 490) if not any(a <= m <= b for a, b in holes)]
    state = state_of(stored, reach=0, head=500)
    assert [(a, b) for a, b in holes] == [(idx(g.start), idx(g.end)) for g in state.gaps]
    assert not state.is_complete
    backfill = state.downloads(newest_gap_first=False)
    assert [UPPER, GAP, GAP, GAP] == [d.kind for d in backfill]
    assert [(15, 34), (115, 405), (445, 456)] == [(idx(d.start), idx(d.end)) for d in backfill[1:]]
    live = state.downloads(newest_gap_first=True)
    assert [(445, 456), (115, 405), (15, 34)] == [(idx(d.start), idx(d.end)) for d in live[1:]]


def test_partly_verified_hole_leaves_the_rest_as_gap() -> None:
    """Only the unverified part of a hole is a gap."""
    stored = [m for m in range(0, 501) if not 100 <= m <= 109]
    state = state_of(stored, reach=0, head=500, verified=[(100, 104)])
    assert (TimeRange(at(105), at(109)),) == state.gaps


def test_verified_empty_below_earliest_satisfies_the_lower_bound() -> None:
    """A verified-empty range reaching down from the earliest candle covers the reach."""
    state = state_of(range(50, 501), reach=10, head=500, verified=[(10, 49)])
    assert state.is_complete
    state = state_of(range(50, 501), reach=10, head=500, verified=[(30, 49)])
    assert rng(LOWER, 10, 29) == state.next_download(newest_gap_first=False)


def test_gap_before_reach_is_unreachable() -> None:
    """A gap starting before the reach is fatal and named."""
    stored = [m for m in range(0, 501) if not 5 <= m <= 14]
    with pytest.raises(UnreachableGapError) as info:
        state_of(stored, reach=10, head=500)
    assert "2026-01-01T00:05:00Z .. 2026-01-01T00:14:00Z" in str(info.value)
    assert "before the price history reach 2026-01-01T00:10:00Z" in str(info.value)


def test_verified_gap_before_reach_is_fine_even_when_rechecking() -> None:
    """Verified-empty holes before the reach are neither fatal nor re-checked."""
    stored = [m for m in range(0, 501) if not 5 <= m <= 14]
    state = state_of(stored, reach=10, head=500, verified=[(5, 14)], recheck=True)
    assert (TimeRange(at(10), at(14)),) == state.gaps


def test_old_data_below_reach_is_bridged_by_the_upper_bound() -> None:
    """History older than the reach is extended upwards, not leaving an unreachable hole."""
    state = state_of(range(0, 20), reach=100, head=500)
    assert rng(UPPER, 19, 500) == state.next_download(newest_gap_first=False)


def test_fetched_ranges_are_skipped() -> None:
    """A range inside one already fetched in this pass is not planned again."""
    state = state_of(range(0, 499), reach=0, head=500)
    first = state.next_download(newest_gap_first=False)
    assert first is not None
    assert state.next_download(newest_gap_first=False, fetched=[first]) is None


def test_within_lookback_only_considers_the_window() -> None:
    """Live lookback ignores gaps and missing history below the window."""
    stored = [m for m in range(300, 499) if m not in (310, 420)]
    state = state_of(stored, reach=0, head=500)
    upper = rng(UPPER, 441, 500)
    assert upper == state.next_download_within(at(400))
    assert rng(GAP, 415, 425) == state.next_download_within(at(400), fetched=[upper])
    skip = [upper, rng(GAP, 415, 425)]
    assert state.next_download_within(at(400), fetched=skip) is None
    assert rng(GAP, 305, 315) == state.next_download_within(at(200), fetched=skip)
    skip.append(rng(GAP, 305, 315))
    assert rng(LOWER, 200, 299) == state.next_download_within(at(200), fetched=skip)


def test_within_lookback_clamps_the_upper_bound_to_the_window() -> None:
    """Stored history older than the window is not extended in live mode."""
    state = state_of(range(0, 100), reach=0, head=500)
    assert rng(UPPER, 400, 500) == state.next_download_within(at(400))
    assert rng(LATEST, 400, 500) == state_of([], reach=0, head=500).next_download_within(at(400))


def test_lookback_beyond_reach_is_an_error() -> None:
    """A lookback starting before the reach is fatal."""
    state = state_of(range(0, 501), reach=100, head=500)
    with pytest.raises(LookbackBeyondReachError, match="before the price history reach"):
        state.next_download_within(at(50))


def test_summary() -> None:
    """The summary is flat and JSON-ready."""
    stored = [m for m in range(50, 501) if not 100 <= m <= 109]
    summary = state_of(stored, reach=0, head=500, verified=[(100, 104)]).summary()
    assert {
        "reach": "2026-01-01T00:00:00Z",
        "now": "2026-01-01T08:20:30Z",
        "earliest": "2026-01-01T00:50:00Z",
        "latest": "2026-01-01T08:20:00Z",
        "gaps": 1,
        "gap_minutes": 5,
        "verified_empty": 1,
        "verified_empty_minutes": 5,
        "earliest_unstable": "2026-01-01T07:21:00Z",
        "missing_minutes": 55,
        "coverage_ratio": round(1 - 55 / 501, 6),
        "complete": False,
    } == summary


# --- after a fetch ----------------------------------------------------------------------------


def test_check_reach_covered() -> None:
    """A lower-bound fetch that finds nothing at the reach means the reach is too old."""
    reach = at(10)
    check_reach_covered(rng(LOWER, 10, 99), at(10), reach)
    check_reach_covered(rng(GAP, 10, 99), None, reach)
    check_reach_covered(rng(LOWER, 20, 99), None, reach)
    check_reach_covered(rng(LOWER, 10, 99), at(12), reach, tolerance=2 * MIN)
    with pytest.raises(ReachBeforeHistoryError) as info:
        check_reach_covered(rng(LOWER, 10, 99), at(40), reach)
    assert "reach 2026-01-01T00:10:00Z is before the exchange's history" in str(info.value)
    assert "first available candle" in str(info.value)
    assert "2026-01-01T00:40:00Z" in str(info.value)
    with pytest.raises(ReachBeforeHistoryError, match="returned no candle at all"):
        check_reach_covered(rng(LATEST, 10, 99), None, reach)


# --- properties: following the plan converges to the exchange's truth ---------------------------


class Fatal(Exception):
    """The simulated caller stopped on a fatal error."""


def follow_plan(
    stored: dict[int, bool],
    verified: list[tuple[int, int]],
    truth: frozenset[int],
    *,
    reach: int,
    now: datetime,
    newest_gap_first: bool,
    recheck: bool = False,
    lookback: int | None = None,
) -> list[DownloadRange]:
    """Run one pass of plan -> fetch from ``truth`` -> store, like the engine and DB writer."""
    fetched: list[DownloadRange] = []
    lower = reach if lookback is None else lookback
    for _ in range(1000):
        state = PriceHistoryState.evaluate(
            facts_from(stored, verified, unstable_from=reach),
            reach=at(reach),
            now=now,
            recheck_verified_empty=recheck,
        )
        if lookback is None:
            planned = state.next_download(newest_gap_first=newest_gap_first, fetched=fetched)
        else:
            planned = state.next_download_within(
                at(lookback), newest_gap_first=newest_gap_first, fetched=fetched
            )
        if planned is None:
            return fetched
        assert not any(old.covers(planned) for old in fetched)
        first, last = idx(planned.start), idx(planned.end)
        verified_minutes = set() if recheck else {m for a, b in verified for m in range(a, b + 1)}
        assert any(
            (m not in stored and m not in verified_minutes)
            or (m in stored and not stored[m] and is_stable_candle_time(at(m), now))
            for m in range(first, last + 1)
        ), f"{planned} fetches nothing missing"
        fetched.append(planned)
        received = sorted((m for m in truth if first <= m <= last), reverse=True)
        if planned.kind in (LATEST, LOWER):
            try:
                check_reach_covered(planned, at(received[-1]) if received else None, at(lower))
            except ReachBeforeHistoryError as exc:
                raise Fatal from exc
        for m in received:
            stored[m] = is_stable_candle_time(at(m), now)
        verified.extend(unreturned_stable_minutes(planned, received, now))
    raise AssertionError("the plan did not terminate")


def unreturned_stable_minutes(
    planned: DownloadRange, received: Iterable[int], now: datetime
) -> list[tuple[int, int]]:
    """The minutes of ``planned`` older than an hour that the exchange returned no candle for:
    what the DB writer records as verified-empty in this model."""
    end = min(idx(planned.end), idx(last_stable_minute(now)))
    return runs(set(range(idx(planned.start), end + 1)) - set(received))


@st.composite
def worlds(draw: st.DrawFn, *, any_verified: bool = False) -> dict[str, object]:
    """A truth set, stored minutes (a subset), stability flags and verified-empty ranges."""
    head = draw(st.integers(0, 200))
    now = at(head) + timedelta(seconds=draw(st.integers(0, 59)))
    downtime = draw(st.sets(st.integers(0, head), max_size=head + 1))
    truth = frozenset(range(head + 1)) - downtime
    stored_minutes = draw(st.sets(st.sampled_from(sorted(truth)))) if truth else set()
    marked = draw(st.sets(st.sampled_from(sorted(stored_minutes)))) if stored_minutes else set()
    stored = {m: is_stable_candle_time(at(m), now) and m not in marked for m in stored_minutes}
    pool = sorted(
        m
        for m in range(head + 1)
        if m not in stored
        and is_stable_candle_time(at(m), now)
        and (any_verified or m not in truth)
    )
    verified = runs(draw(st.sets(st.sampled_from(pool)))) if pool else []
    reach = draw(st.integers(0, max(0, head - 61)))
    return {
        "stored": stored,
        "verified": verified,
        "truth": truth,
        "reach": reach,
        "now": now,
        "head": head,
    }


def unreachable(stored: dict[int, bool], verified: list[tuple[int, int]], reach: int) -> bool:
    """Whether a hole minute older than the reach is not verified empty."""
    times = sorted(stored)
    holes = {m for a, b in itertools.pairwise(times) for m in range(a + 1, b)}
    ve = {m for a, b in verified for m in range(a, b + 1)}
    return any(m < reach for m in holes - ve)


def check_converges(world: dict[str, object], newest_gap_first: bool, recheck: bool) -> None:
    stored = dict(world["stored"])  # type: ignore[call-overload]
    verified = list(world["verified"])  # type: ignore[call-overload]
    truth: frozenset[int] = world["truth"]  # type: ignore[assignment]
    reach: int = world["reach"]  # type: ignore[assignment]
    head: int = world["head"]  # type: ignore[assignment]
    now: datetime = world["now"]  # type: ignore[assignment]
    if unreachable(stored, verified, reach):
        with pytest.raises(UnreachableGapError):
            follow_plan(stored, verified, truth, reach=reach, now=now, newest_gap_first=True)
        return
    try:
        follow_plan(
            stored,
            verified,
            truth,
            reach=reach,
            now=now,
            newest_gap_first=newest_gap_first,
            recheck=recheck,
        )
    except Fatal:
        assert reach not in truth
        return
    window = range(reach, head + 1)
    assert {m for m in window if m in truth} == {m for m in window if m in stored}
    assert [
        m for m in window if m in stored and not stored[m] and is_stable_candle_time(at(m), now)
    ] == []
    if not recheck:
        assert not truth & {m for a, b in verified for m in range(a, b + 1)}
    if set(window) <= truth:
        state = PriceHistoryState.evaluate(
            facts_from(stored, verified, unstable_from=reach), reach=at(reach), now=now
        )
        assert state.is_complete
        assert state.missing_minutes == 0


@settings(max_examples=300, deadline=None)
@given(worlds(), st.booleans())
def test_plan_converges_to_the_truth(world: dict[str, object], newest_gap_first: bool) -> None:
    """Following the plan stores exactly the exchange's minutes in [reach, now], fetching
    only ranges with something missing or settling, never the same range twice."""
    check_converges(world, newest_gap_first, recheck=False)


@settings(max_examples=200, deadline=None)
@given(worlds(any_verified=True), st.booleans())
def test_recheck_converges_even_with_stale_verified_empty(
    world: dict[str, object], newest_gap_first: bool
) -> None:
    """With re-check, holes wrongly recorded as verified-empty are fetched and filled."""
    check_converges(world, newest_gap_first, recheck=True)


@settings(max_examples=200, deadline=None)
@given(worlds(), st.data())
def test_lookback_plan_converges_in_the_window(
    world: dict[str, object], data: st.DataObject
) -> None:
    """Live lookback fills exactly the exchange's minutes of [lookback, now]."""
    head: int = world["head"]  # type: ignore[assignment]
    truth: frozenset[int] = world["truth"]  # type: ignore[assignment]
    now: datetime = world["now"]  # type: ignore[assignment]
    reach: int = world["reach"]  # type: ignore[assignment]
    lookback = data.draw(st.integers(reach, head))
    stored = {m: s for m, s in world["stored"].items() if m >= reach}  # type: ignore[attr-defined]
    verified = list(world["verified"])  # type: ignore[call-overload]
    try:
        follow_plan(
            stored,
            verified,
            truth,
            reach=reach,
            now=now,
            newest_gap_first=True,
            lookback=lookback,
        )
    except Fatal:
        assert lookback not in truth
        return
    window = range(lookback, head + 1)
    assert {m for m in window if m in truth} == {m for m in window if m in stored}
