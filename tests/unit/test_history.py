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
from qx_actors.errors import LookbackBeyondReachError, ReachBeforeHistoryError

BASE = datetime(2026, 1, 1, tzinfo=UTC)
MIN = timedelta(minutes=1)
LATEST, UPPER, REVISION, GAP, LOWER = (
    DownloadKind.LATEST,
    DownloadKind.UPPER_BOUND,
    DownloadKind.REVISION,
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
        unstable=tuple((at(a), at(b)) for a, b in runs(unstable)),
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


def test_complete_history_refetches_only_its_young_candles() -> None:
    """All of [reach, now] stored, young candles unstable: complete, and the plan is only the
    re-fetch of the young (unstable) candles, up to now."""
    state = state_of(range(0, 501), reach=0, head=500)
    young = rng(UPPER, 441, 500)  # the first minute younger than an hour, up to now
    assert (young,) == state.downloads(newest_gap_first=True)
    assert (young,) == state.downloads(newest_gap_first=False)
    assert state.next_download(newest_gap_first=True, fetched=[young]) is None
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


def test_old_unstable_candle_is_a_revision() -> None:
    """An unstable candle that is now over an hour old (older than the revision window) is
    re-fetched, as a REVISION after the young candles' upper bound, even when up to date."""
    state = state_of(range(0, 501), reach=0, head=500, unstable=[100])
    expected = (rng(UPPER, 441, 500), rng(REVISION, 100, 100))
    assert expected == state.downloads(newest_gap_first=False)
    assert expected == state.downloads(newest_gap_first=True)
    assert not state.is_complete


def test_young_unstable_candles_need_only_the_young_refetch() -> None:
    """Unstable candles younger than an hour are only re-fetched with the upper bound when up
    to date; they don't make the history incomplete."""
    state = state_of(range(0, 501), reach=0, head=500, unstable=[470])
    assert (rng(UPPER, 441, 500),) == state.downloads(newest_gap_first=False)
    assert state.is_complete


def test_unstable_candles_of_the_revision_window_start_the_upper_bound() -> None:
    """An unstable candle between 60 and 66 minutes old is in the revision window: the upper
    bound starts at it (no REVISION), and, being old enough to be final, it makes the
    history incomplete."""
    state = state_of(range(0, 501), reach=0, head=500, unstable=[436])
    assert (rng(UPPER, 436, 500),) == state.downloads(newest_gap_first=False)
    assert not state.is_complete
    older = state_of(range(0, 501), reach=0, head=500, unstable=[433])
    assert (rng(UPPER, 441, 500), rng(REVISION, 433, 433)) == older.downloads(
        newest_gap_first=False
    )


def test_gaps_are_widened_and_ordered() -> None:
    """Gaps are fetched widened by 5 minutes, oldest first for backfill, newest first live."""
    stored = [m for m in range(0, 501) if not 100 <= m <= 109 and not 300 <= m <= 300]
    state = state_of(stored, reach=0, head=500)
    assert (TimeRange(at(100), at(109)), TimeRange(at(300), at(300))) == state.gaps
    young = rng(UPPER, 441, 500)
    assert (young, rng(GAP, 95, 114), rng(GAP, 295, 305)) == state.downloads(newest_gap_first=False)
    assert (young, rng(GAP, 295, 305), rng(GAP, 95, 114)) == state.downloads(newest_gap_first=True)
    assert rng(GAP, 95, 114) == state.next_download(newest_gap_first=False, fetched=[young])
    assert rng(GAP, 295, 305) == state.next_download(newest_gap_first=True, fetched=[young])
    assert state.missing_minutes == 11


def test_gap_widening_is_clamped_to_reach_and_now() -> None:
    """Widening never goes below the reach or beyond the current minute."""
    stored = [m for m in range(0, 501) if m not in (12, 13, 498, 499)]
    state = state_of(stored, reach=10, head=500)
    assert (rng(UPPER, 441, 500), rng(GAP, 10, 18), rng(GAP, 493, 500)) == state.downloads(
        newest_gap_first=False
    )


def test_gap_neighbours_are_refetched_with_their_gap() -> None:
    """Unstable neighbours of a gap are re-fetched with the gap: neither from the upper bound
    (which only takes the young candles) nor as a REVISION."""
    stored = [m for m in range(0, 501) if not 200 <= m <= 204]
    state = state_of(stored, reach=0, head=500, unstable=[195, 196, 205])
    assert (rng(UPPER, 441, 500), rng(GAP, 195, 209)) == state.downloads(newest_gap_first=False)


def test_gap_neighbours_with_new_minutes_refetch_only_young_candles() -> None:
    """With a gap neighbour unstable and new minutes, the upper bound starts at young ones."""
    stored = [m for m in range(0, 499) if not 200 <= m <= 204]
    state = state_of(stored, reach=0, head=500, unstable=[195])
    assert (rng(UPPER, 441, 500), rng(GAP, 195, 209)) == state.downloads(newest_gap_first=True)


def test_lower_bound_down_to_reach() -> None:
    """Stored history starting after the reach fetches [reach, earliest - 1m] last."""
    stored = [m for m in range(50, 501) if m != 300]
    state = state_of(stored, reach=10, head=500)
    assert (rng(UPPER, 441, 500), rng(GAP, 295, 305), rng(LOWER, 10, 49)) == state.downloads(
        newest_gap_first=False
    )
    assert state.missing_minutes == 41


def test_verified_empty_is_not_a_gap() -> None:
    """A hole confirmed empty by the exchange is no gap, unless asked to re-check."""
    stored = [m for m in range(0, 501) if not 100 <= m <= 109]
    state = state_of(stored, reach=0, head=500, verified=[(100, 109)])
    assert state.gaps == ()
    assert state.is_complete
    assert (TimeRange(at(100), at(109)),) == state.verified_empty
    assert (rng(UPPER, 441, 500),) == state.downloads(newest_gap_first=False)
    rechecked = state_of(stored, reach=0, head=500, verified=[(100, 109)], recheck=True)
    assert (rng(UPPER, 441, 500), rng(GAP, 95, 114)) == rechecked.downloads(newest_gap_first=False)


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
    assert (rng(UPPER, 441, 500), rng(LOWER, 10, 49)) == state(40).downloads(newest_gap_first=False)
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
    assert (rng(UPPER, 441, 500), rng(LOWER, 10, 29)) == state.downloads(newest_gap_first=False)


def test_hole_before_reach_is_listed_and_one_straddling_it_repaired_from_the_reach() -> None:
    """A hole wholly before the reach is no error and no gap: it is listed in
    ``holes_before_reach`` and not fetched. A hole straddling the reach is a gap from the reach
    on (its older part listed), repaired from the reach."""
    stored = [m for m in range(0, 501) if not (2 <= m <= 3 or 5 <= m <= 14)]
    state = state_of(stored, reach=10, head=500)
    assert (TimeRange(at(10), at(14)),) == state.gaps
    assert (TimeRange(at(2), at(3)), TimeRange(at(5), at(9))) == state.holes_before_reach
    assert (rng(UPPER, 441, 500), rng(GAP, 10, 19)) == state.downloads(newest_gap_first=False)
    assert state.missing_minutes == 5
    assert not state.is_complete


def test_verified_gap_before_reach_is_fine_even_when_rechecking() -> None:
    """Verified-empty holes before the reach are neither fatal nor re-checked."""
    stored = [m for m in range(0, 501) if not 5 <= m <= 14]
    state = state_of(stored, reach=10, head=500, verified=[(5, 14)], recheck=True)
    assert (TimeRange(at(10), at(14)),) == state.gaps


def test_old_data_below_reach_is_extended_from_the_reach() -> None:
    """History older than the reach is extended upwards from the reach, not from its newest
    candle: what lies between them is older than the reach, not the engine's business."""
    state = state_of(range(0, 20), reach=100, head=500)
    assert (rng(UPPER, 100, 500),) == state.downloads(newest_gap_first=False)
    after = state_of([*range(0, 20), *range(100, 501)], reach=100, head=500)
    assert (TimeRange(at(20), at(99)),) == after.holes_before_reach
    assert () == after.gaps
    assert after.is_complete
    assert (rng(UPPER, 441, 500),) == after.downloads(newest_gap_first=False)


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


def test_young_unstable_candles_below_the_lookback_are_in_the_upper_bound() -> None:
    """A 20-minute lookback doesn't shorten the young re-fetch: the upper bound starts at the
    oldest young unstable candle, below the window, both up to date and with new minutes."""
    state = state_of(range(0, 501), reach=0, head=500)
    assert rng(UPPER, 441, 500) == state.next_download_within(at(480))
    behind = state_of(range(0, 495), reach=0, head=500)
    assert rng(UPPER, 441, 500) == behind.next_download_within(at(480))
    assert behind.next_download_within(at(480), fetched=[rng(UPPER, 441, 500)]) is None


def test_unstable_run_left_by_a_stop_is_revised_even_outside_the_lookback() -> None:
    """An unstable run 5 hours old (left by a stop) is a REVISION range, even with a lookback
    that excludes it: the lookback limits the backfill, not the revisions."""
    state = state_of(range(0, 501), reach=0, head=500, unstable=range(200, 211))
    upper = rng(UPPER, 441, 500)
    assert upper == state.next_download_within(at(480))
    assert rng(REVISION, 200, 210) == state.next_download_within(at(480), fetched=[upper])
    skip = [upper, rng(REVISION, 200, 210)]
    assert state.next_download_within(at(480), fetched=skip) is None
    assert (upper, rng(REVISION, 200, 210)) == state.downloads(newest_gap_first=True)
    assert not state.is_complete


def test_revisions_skip_unstable_neighbours_inside_a_widened_gap() -> None:
    """Unstable runs reaching into a gap's widened range are revised only outside it (the gap
    fetch takes the rest); REVISION ranges come after the upper bound and before the gaps,
    newest first for live."""
    stored = [m for m in range(0, 501) if not 200 <= m <= 204]
    unstable = [100, 101, *range(190, 200), *range(205, 216)]
    state = state_of(stored, reach=0, head=500, unstable=unstable)
    upper, gap = rng(UPPER, 441, 500), rng(GAP, 195, 209)
    oldest_first = (rng(REVISION, 100, 101), rng(REVISION, 190, 194), rng(REVISION, 210, 215))
    assert (upper, *oldest_first, gap) == state.downloads(newest_gap_first=False)
    assert (upper, *reversed(oldest_first), gap) == state.downloads(newest_gap_first=True)
    # a lookback cutting the gap: only the window's part of it is fetched, so the neighbours
    # below the window are revised
    plan: list[DownloadRange] = []
    while (download := state.next_download_within(at(202), fetched=plan)) is not None:
        plan.append(download)
    assert [
        upper,
        rng(REVISION, 210, 215),
        rng(REVISION, 190, 199),
        rng(REVISION, 100, 101),
        rng(GAP, 202, 209),
    ] == plan


def test_hole_straddling_the_reach_is_repaired_from_the_reach() -> None:
    """A hole that starts before the reach and ends after it is a gap from the reach on,
    widened only upwards; its part before the reach is listed, not fetched."""
    stored = [m for m in range(0, 501) if not 50 <= m <= 120]
    state = state_of(stored, reach=100, head=500)
    assert (TimeRange(at(100), at(120)),) == state.gaps
    assert (TimeRange(at(50), at(99)),) == state.holes_before_reach
    assert (rng(UPPER, 441, 500), rng(GAP, 100, 125)) == state.downloads(newest_gap_first=True)
    assert state.missing_minutes == 21
    assert state.has_gaps()


def test_shortened_reach_leaves_an_old_hole_alone() -> None:
    """A reach moved past the stored history's old hole (and an old unstable candle): no
    error, nothing fetched for them; the hole is only listed (and counted in the summary)."""
    stored = [m for m in range(0, 501) if not 100 <= m <= 109]
    full = state_of(stored, reach=0, head=500, unstable=[50])
    assert (rng(UPPER, 441, 500), rng(REVISION, 50, 50), rng(GAP, 95, 114)) == full.downloads(
        newest_gap_first=False
    )
    assert () == full.holes_before_reach
    state = state_of(stored, reach=200, head=500, unstable=[50])
    assert () == state.gaps
    assert (TimeRange(at(100), at(109)),) == state.holes_before_reach
    assert (rng(UPPER, 441, 500),) == state.downloads(newest_gap_first=False)
    assert state.next_download_within(at(300), fetched=[rng(UPPER, 441, 500)]) is None
    assert state.is_complete
    assert state.missing_minutes == 0
    summary = state.summary()
    assert summary["holes_before_reach"] == 1
    assert summary["gaps"] == 0
    assert summary["unstable_minutes"] == 60  # the young ones; the old one is before the reach
    assert summary["complete"] is True


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
        "unstable_minutes": 60,
        "holes_before_reach": 0,
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


def revision_window_start(reach: int, now: datetime) -> int:
    """The first minute whose unstable candle the upper bound re-fetches (66 minutes back,
    never before the reach); older unstable candles are REVISIONs."""
    return max(idx(now - timedelta(minutes=66)), reach)


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
    """Run one pass of plan -> fetch from ``truth`` -> store, like the engine and DB writer:
    fetched candles are stored stable iff at least an hour old at ``now``; the pass ends when
    the plan has nothing left that is not within a range already fetched in it."""
    fetched: list[DownloadRange] = []
    lower = reach if lookback is None else lookback
    head = idx(now)
    for _ in range(1000):
        state = PriceHistoryState.evaluate(
            facts_from(stored, verified),
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
        assert reach <= first and last <= head, f"{planned} leaves [reach, now]"
        verified_minutes = set() if recheck else {m for a, b in verified for m in range(a, b + 1)}
        assert any(
            (m not in stored and m not in verified_minutes) or (m in stored and not stored[m])
            for m in range(first, last + 1)
        ), f"{planned} fetches nothing missing or unstable"
        if planned.kind is REVISION:
            assert all(
                m in stored and not stored[m] and m < revision_window_start(reach, now)
                for m in range(first, last + 1)
            ), f"{planned} revises something not old and unstable"
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


def expect_complete(
    stored: dict[int, bool], verified: Iterable[tuple[int, int]], reach: int, now: datetime
) -> bool:
    """The model of ``is_complete``: every minute of [reach, now] stored or verified empty,
    and no stored candle there at least an hour old still unstable (young ones don't count)."""
    ve = {m for a, b in verified for m in range(a, b + 1)}
    window = range(reach, idx(now) + 1)
    return all(m in stored or m in ve for m in window) and not any(
        m in stored and not stored[m] and is_stable_candle_time(at(m), now) for m in window
    )


@st.composite
def stored_sets(draw: st.DrawFn) -> dict[str, object]:
    """Random stored minutes with random stable flags (some possibly before the reach),
    verified-empty runs among the unstored minutes older than an hour, a reach and a now."""
    head = draw(st.integers(0, 250))
    now = at(head) + timedelta(seconds=draw(st.integers(0, 59)))
    reach = draw(st.integers(-20, head))
    minutes = draw(st.sets(st.integers(-30, head), max_size=head + 31))
    stored = {m: draw(st.booleans()) for m in sorted(minutes)}
    pool = sorted(
        m for m in range(-30, head + 1) if m not in stored and is_stable_candle_time(at(m), now)
    )
    verified = runs(draw(st.sets(st.sampled_from(pool)))) if pool else []
    return {"stored": stored, "verified": verified, "reach": reach, "now": now}


@settings(max_examples=400, deadline=None)
@given(stored_sets(), st.booleans(), st.data())
def test_every_unstable_candle_of_the_reach_is_planned(
    world: dict[str, object], newest_gap_first: bool, data: st.DataObject
) -> None:
    """Every unstable stored minute of [reach, now] lies in a planned range (the young ones of
    the revision window in the UPPER_BOUND), also under any lookback; no range starts before
    the reach; REVISION ranges hold only old unstable candles, in order; ``is_complete`` iff
    nothing of the reach is missing and no candle an hour old is still unstable."""
    stored: dict[int, bool] = world["stored"]  # type: ignore[assignment]
    verified: list[tuple[int, int]] = world["verified"]  # type: ignore[assignment]
    reach: int = world["reach"]  # type: ignore[assignment]
    now: datetime = world["now"]  # type: ignore[assignment]
    head = idx(now)
    state = PriceHistoryState.evaluate(facts_from(stored, verified), reach=at(reach), now=now)
    plan = state.downloads(newest_gap_first=newest_gap_first)
    unstable = [m for m in range(reach, head + 1) if m in stored and not stored[m]]
    young_from = revision_window_start(reach, now)
    for download in plan:
        assert at(reach) <= download.start and download.end <= at(head), download
    for m in unstable:
        assert any(at(m) in TimeRange(d.start, d.end) for d in plan), f"minute {m} not planned"
        if m >= young_from:
            assert plan[0].kind is UPPER and plan[0].start <= at(m), f"minute {m} not upper"
    revisions = [d for d in plan if d.kind is REVISION]
    for download in revisions:
        assert all(
            stored.get(m) is False and m < young_from
            for m in range(idx(download.start), idx(download.end) + 1)
        ), download
    starts = [d.start for d in revisions]
    assert starts == sorted(starts, reverse=newest_gap_first)
    kinds = [d.kind for d in plan]
    assert kinds == sorted(kinds, key=[LATEST, UPPER, REVISION, GAP, LOWER].index)
    assert expect_complete(stored, verified, reach, now) is state.is_complete
    # a live lookback limits the backfill, never the revisions: the pass plan (each range
    # planned once) still covers every unstable candle of the reach
    lookback = data.draw(st.integers(reach, head), label="lookback")
    within: list[DownloadRange] = []
    for _ in range(1000):
        step = state.next_download_within(at(lookback), fetched=within)
        if step is None:
            break
        assert at(reach) <= step.start and step.end <= at(head), step
        within.append(step)
    for m in unstable:
        assert any(at(m) in TimeRange(d.start, d.end) for d in within), f"minute {m} not planned"


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


def check_pass_result(
    stored: dict[int, bool],
    verified: list[tuple[int, int]],
    fetched: list[DownloadRange],
    *,
    truth: frozenset[int],
    reach: int,
    lower: int,
    now: datetime,
) -> None:
    """After a pass: [lower, now] holds exactly the exchange's candles; in all of [reach, now]
    (a lookback limits the backfill, not the revisions) every candle old enough to be final is
    stored stable, every unstable one left was fetched in this pass, and ``is_complete`` says
    whether the reach is covered and final."""
    head = idx(now)
    window = range(lower, head + 1)
    assert {m for m in window if m in truth} == {m for m in window if m in stored}
    reach_window = range(reach, head + 1)
    assert [
        m
        for m in reach_window
        if m in stored and not stored[m] and is_stable_candle_time(at(m), now)
    ] == []
    assert [
        m
        for m in reach_window
        if m in stored and not stored[m] and not any(at(m) in f for f in fetched_spans(fetched))
    ] == []
    state = PriceHistoryState.evaluate(facts_from(stored, verified), reach=at(reach), now=now)
    assert expect_complete(stored, verified, reach, now) is state.is_complete


def fetched_spans(fetched: Iterable[DownloadRange]) -> list[TimeRange]:
    return [TimeRange(f.start, f.end) for f in fetched]


def check_pass(
    world: dict[str, object],
    newest_gap_first: bool,
    *,
    recheck: bool = False,
    lookback: int | None = None,
) -> tuple[dict[int, bool], list[tuple[int, int]]] | None:
    """Follow one pass of the plan on a copy of ``world``'s stored minutes and verified-empty
    ranges and check its result (:func:`check_pass_result`, from ``lookback`` if set, else from
    the reach); the stored minutes and verified ranges after it, or None where the pass failed
    (ReachBeforeHistory), which it may only when the exchange has no candle at its lower end."""
    stored = dict(world["stored"])  # type: ignore[call-overload]
    verified = list(world["verified"])  # type: ignore[call-overload]
    truth: frozenset[int] = world["truth"]  # type: ignore[assignment]
    reach: int = world["reach"]  # type: ignore[assignment]
    now: datetime = world["now"]  # type: ignore[assignment]
    lower = reach if lookback is None else lookback
    try:
        fetched = follow_plan(
            stored,
            verified,
            truth,
            reach=reach,
            now=now,
            newest_gap_first=newest_gap_first,
            recheck=recheck,
            lookback=lookback,
        )
    except Fatal:
        assert lower not in truth
        return None
    check_pass_result(stored, verified, fetched, truth=truth, reach=reach, lower=lower, now=now)
    return stored, verified


def check_converges(world: dict[str, object], newest_gap_first: bool, recheck: bool) -> None:
    passed = check_pass(world, newest_gap_first, recheck=recheck)
    if passed is None:
        return
    stored, verified = passed
    truth: frozenset[int] = world["truth"]  # type: ignore[assignment]
    reach: int = world["reach"]  # type: ignore[assignment]
    now: datetime = world["now"]  # type: ignore[assignment]
    if not recheck:
        assert not truth & {m for a, b in verified for m in range(a, b + 1)}
    if set(range(reach, idx(now) + 1)) <= truth:
        state = PriceHistoryState.evaluate(facts_from(stored, verified), reach=at(reach), now=now)
        assert state.is_complete
        assert state.missing_minutes == 0


@settings(max_examples=300, deadline=None)
@given(worlds(), st.booleans())
def test_plan_converges_to_the_truth(world: dict[str, object], newest_gap_first: bool) -> None:
    """Following the plan stores exactly the exchange's minutes in [reach, now], all final
    once an hour old, fetching only ranges with something missing or unstable, never the same
    range twice in a pass; holes older than the reach are left alone."""
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
    """Live lookback fills exactly the exchange's minutes of [lookback, now], and still
    revises unstable candles anywhere in the reach."""
    head: int = world["head"]  # type: ignore[assignment]
    reach: int = world["reach"]  # type: ignore[assignment]
    lookback = data.draw(st.integers(reach, head))
    check_pass(world, newest_gap_first=True, lookback=lookback)
