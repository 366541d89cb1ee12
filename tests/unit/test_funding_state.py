"""Funding-settlement state and download plan."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qx_actors.domain.funding import (
    FundingSettlementsFacts,
    FundingSettlementsState,
    SettlementDownload,
    settlements_before_history_start,
)
from qx_actors.domain.planner import DownloadKind
from qx_actors.domain.settlements import settlement_times
from qx_actors.domain.timeutil import FIRST_SETTLEMENT_TIME
from qx_actors.errors import SettlementsBeforeHistoryStart, UnreachableMissingSettlement

LATEST, UPPER, MISSING, LOWER = (
    DownloadKind.LATEST,
    DownloadKind.UPPER_BOUND,
    DownloadKind.MISSING,
    DownloadKind.LOWER_BOUND,
)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def facts_from(stored: Iterable[datetime], scan_from: datetime) -> FundingSettlementsFacts:
    """What storage would report for the stored settlement times."""
    times = sorted(stored)
    return FundingSettlementsFacts(
        earliest=times[0] if times else None,
        latest=times[-1] if times else None,
        stored_times_in_scan=tuple(t for t in times if t >= scan_from),
    )


def evaluate(
    stored: Iterable[datetime], *, reach: datetime, now: datetime, scan_from: datetime
) -> FundingSettlementsState:
    return FundingSettlementsState.evaluate(
        facts_from(stored, scan_from), reach=reach, now=now, scan_from=scan_from
    )


def dl(kind: DownloadKind, start: datetime, end: datetime) -> SettlementDownload:
    return SettlementDownload(kind, start, end)


NOW = utc(2026, 1, 10, 9, 30)
HEAD = utc(2026, 1, 10, 8)


def test_empty_table_fetches_latest() -> None:
    """An empty table fetches [reach, newest settlement], the reach floored to the grid as
    quantoxide does (sync/config.rs: ``reach.floor_funding_settlement_time()``)."""
    state = evaluate([], reach=utc(2026, 1, 1, 3), now=NOW, scan_from=utc(2026, 1, 1))
    assert utc(2026, 1, 1, 0) == state.reach
    assert dl(LATEST, utc(2026, 1, 1, 0), HEAD) == state.next_download()
    assert not state.is_caught_up


@pytest.mark.parametrize(
    ("reach", "floored"),
    [
        (utc(2026, 1, 1, 0), utc(2026, 1, 1, 0)),
        (utc(2026, 1, 1, 7, 59, 59, 999999), utc(2026, 1, 1, 0)),
        (utc(2021, 6, 1, 7), utc(2021, 5, 31, 8)),  # phase A: daily at 08:00
        (utc(2021, 12, 7, 19), utc(2021, 12, 7, 8)),  # A -> B dead zone: A's last
        (utc(2025, 4, 11, 15), utc(2025, 4, 11, 4)),  # B -> C dead zone: B's last
        (utc(2021, 1, 11, 7), FIRST_SETTLEMENT_TIME),  # before the first: the first
    ],
)
def test_reach_is_floored_to_the_grid(reach: datetime, floored: datetime) -> None:
    """Flooring, never rounding up: the settlement at or before the reach is kept."""
    state = evaluate([], reach=reach, now=NOW, scan_from=reach)
    assert floored == state.reach


def test_reach_after_now_is_the_head() -> None:
    """A reach later than now can't be reached: it is the newest settlement (no empty range)."""
    state = evaluate([], reach=NOW + timedelta(days=1), now=NOW, scan_from=NOW)
    assert HEAD == state.reach
    assert dl(LATEST, HEAD, HEAD) == state.next_download()


def test_caught_up_and_complete() -> None:
    """All settlements from the reach to now stored: caught up, nothing to fetch."""
    stored = list(settlement_times(utc(2026, 1, 1), HEAD))
    state = evaluate(stored, reach=utc(2026, 1, 1), now=NOW, scan_from=utc(2026, 1, 1))
    assert state.missing == ()
    assert state.is_caught_up
    assert state.is_complete
    assert state.next_download() is None


def test_upper_bound_after_latest() -> None:
    """Newer settlements are fetched from the one after the latest stored."""
    stored = list(settlement_times(utc(2026, 1, 1), utc(2026, 1, 9, 8)))
    state = evaluate(stored, reach=utc(2026, 1, 1), now=NOW, scan_from=utc(2026, 1, 1))
    assert dl(UPPER, utc(2026, 1, 9, 16), HEAD) == state.next_download()
    assert not state.is_caught_up


def test_missing_settlements_are_grouped() -> None:
    """Missing settlements in the scan are found and consecutive ones fetched together."""
    all_times = list(settlement_times(utc(2026, 1, 1), HEAD))
    gone = {utc(2026, 1, 3, 0), utc(2026, 1, 3, 8), utc(2026, 1, 3, 16), utc(2026, 1, 7, 16)}
    state = evaluate(
        [t for t in all_times if t not in gone],
        reach=utc(2026, 1, 1),
        now=NOW,
        scan_from=utc(2026, 1, 1),
    )
    assert tuple(sorted(gone)) == state.missing
    assert (
        dl(MISSING, utc(2026, 1, 3, 0), utc(2026, 1, 3, 16)),
        dl(MISSING, utc(2026, 1, 7, 16), utc(2026, 1, 7, 16)),
    ) == state.downloads()
    assert not state.is_caught_up


def test_missing_is_only_scanned_from_scan_from() -> None:
    """Holes older than the scan start are not looked for."""
    all_times = list(settlement_times(utc(2026, 1, 1), HEAD))
    stored = [t for t in all_times if t not in (utc(2026, 1, 2, 8), utc(2026, 1, 8, 8))]
    state = evaluate(stored, reach=utc(2026, 1, 1), now=NOW, scan_from=utc(2026, 1, 5))
    assert (utc(2026, 1, 8, 8),) == state.missing


def test_lower_bound_down_to_reach() -> None:
    """Stored settlements starting after the reach fetch [reach, the one before earliest]."""
    stored = list(settlement_times(utc(2026, 1, 5), HEAD))
    state = evaluate(stored, reach=utc(2026, 1, 1, 5), now=NOW, scan_from=utc(2026, 1, 1))
    assert state.missing == ()
    assert state.is_caught_up
    assert dl(LOWER, utc(2026, 1, 1), utc(2026, 1, 4, 16)) == state.next_download()


def test_missing_older_than_the_reach_is_unreachable() -> None:
    """A hole in the scan older than the reach can never be filled (nothing below the reach
    is fetched): UnreachableMissingSettlement naming the time and the reach, as quantoxide."""
    all_times = list(settlement_times(utc(2026, 1, 1), HEAD))
    gone = {utc(2026, 1, 2, 8), utc(2026, 1, 2, 16), utc(2026, 1, 8, 0)}
    stored = [t for t in all_times if t not in gone]
    with pytest.raises(UnreachableMissingSettlement) as caught:
        evaluate(stored, reach=utc(2026, 1, 5, 3), now=NOW, scan_from=utc(2026, 1, 1))
    message = str(caught.value)
    assert "2026-01-02T08:00:00Z" in message
    assert "reach 2026-01-05T00:00:00Z" in message
    assert "2 missing before the reach" in message


def test_missing_at_the_reach_is_reachable() -> None:
    """A hole exactly at the (floored) reach is fetched, not fatal."""
    stored = [t for t in settlement_times(utc(2026, 1, 1), HEAD) if t != utc(2026, 1, 5)]
    state = evaluate(stored, reach=utc(2026, 1, 5, 7), now=NOW, scan_from=utc(2026, 1, 1))
    assert (utc(2026, 1, 5),) == state.missing
    assert dl(MISSING, utc(2026, 1, 5), utc(2026, 1, 5)) == state.next_download()


def test_hole_older_than_the_scan_is_not_looked_at() -> None:
    """Below scan_from nothing is scanned, so an old hole under the reach is not an error."""
    stored = [t for t in settlement_times(utc(2026, 1, 1), HEAD) if t != utc(2026, 1, 2, 8)]
    state = evaluate(stored, reach=utc(2026, 1, 5), now=NOW, scan_from=utc(2026, 1, 4))
    assert () == state.missing
    assert state.is_complete


def test_scan_off_looks_for_no_missing_settlement() -> None:
    """scan_from=None (funding_settlement_flag_missing_range_h: null, quantoxide's None): holes
    between the stored bounds are not missing, not fetched, and not fatal below the reach;
    the newest settlements and the ones down to the reach are still planned."""
    gone = {utc(2026, 1, 2, 8), utc(2026, 1, 7, 16), utc(2026, 1, 8, 0)}
    stored = [t for t in settlement_times(utc(2026, 1, 1), utc(2026, 1, 9)) if t not in gone]
    facts = facts_from(stored, utc(2026, 1, 1))  # stored times given: they are not read
    state = FundingSettlementsState.evaluate(facts, reach=utc(2026, 1, 5), now=NOW, scan_from=None)
    assert (None, ()) == (state.scan_from, state.missing)
    assert not state.has_missing()
    assert (dl(UPPER, utc(2026, 1, 9, 8), HEAD),) == state.downloads()
    # quantoxide's is_range_available: the bounds alone when nothing is known missing
    assert state.is_range_available(utc(2026, 1, 7), utc(2026, 1, 8, 8))
    assert state.summary()["scan_from"] is None and 0 == state.summary()["missing"]
    # the same database scanned: the holes are missing, the one below the reach is fatal
    with pytest.raises(UnreachableMissingSettlement, match="2026-01-02T08:00:00Z"):
        evaluate(stored, reach=utc(2026, 1, 5), now=NOW, scan_from=utc(2026, 1, 1))
    scanned = evaluate(stored, reach=utc(2026, 1, 5), now=NOW, scan_from=utc(2026, 1, 5))
    assert (utc(2026, 1, 7, 16), utc(2026, 1, 8, 0)) == scanned.missing
    assert dl(MISSING, utc(2026, 1, 7, 16), utc(2026, 1, 8)) in scanned.downloads()
    # scan off, stored settlements not down to the reach: the lower bound is still fetched
    later = [t for t in stored if t >= utc(2026, 1, 6)]
    lower = FundingSettlementsState.evaluate(
        facts_from(later, NOW), reach=utc(2026, 1, 5), now=NOW, scan_from=None
    )
    assert (
        dl(UPPER, utc(2026, 1, 9, 8), HEAD),
        dl(LOWER, utc(2026, 1, 5), utc(2026, 1, 5, 16)),
    ) == lower.downloads()


def test_unanswered_lower_bound() -> None:
    """A lower bound still planned after a fetch that covered it is reported back."""
    stored = list(settlement_times(utc(2026, 1, 5), HEAD))
    state = evaluate(stored, reach=utc(2026, 1, 1), now=NOW, scan_from=utc(2026, 1, 1))
    lower = dl(LOWER, utc(2026, 1, 1), utc(2026, 1, 4, 16))
    assert state.unanswered_lower_bound([]) is None
    assert state.unanswered_lower_bound([dl(MISSING, utc(2026, 1, 2), utc(2026, 1, 3))]) is None
    assert lower == state.unanswered_lower_bound([dl(LATEST, utc(2026, 1, 1), HEAD)])
    assert lower == state.unanswered_lower_bound([lower])
    complete = evaluate(stored, reach=utc(2026, 1, 5), now=NOW, scan_from=utc(2026, 1, 1))
    assert complete.unanswered_lower_bound([lower]) is None


def test_probe_below_reach() -> None:
    """The probe is at most one page of settlements ending just below the reach."""
    state = evaluate([], reach=utc(2026, 1, 5), now=NOW, scan_from=NOW)
    probe = state.probe_below_reach(3)
    assert probe == dl(LOWER, utc(2026, 1, 4, 0), utc(2026, 1, 4, 16))
    assert 3 == len(probe.times())
    later = evaluate([], reach=utc(2026, 12, 1), now=utc(2027, 1, 1), scan_from=NOW)
    page = later.probe_below_reach(1000)
    assert page is not None and len(page.times()) == 1000
    assert page.end == utc(2026, 11, 30, 16)
    # across the B -> C dead zone (12 h without a settlement) the page holds one fewer
    crossing = state.probe_below_reach(1000)
    assert crossing is not None and len(crossing.times()) == 999
    # phase A is daily: a page of 8-hour slots holds a third as many
    phase_a = evaluate([], reach=utc(2021, 6, 1, 8), now=NOW, scan_from=NOW)
    assert dl(LOWER, utc(2021, 5, 31, 8), utc(2021, 5, 31, 8)) == phase_a.probe_below_reach(1)
    three_slots = phase_a.probe_below_reach(3)
    assert three_slots is not None and 1 == len(three_slots.times())
    early = evaluate([], reach=utc(2021, 1, 12, 8), now=NOW, scan_from=NOW)
    assert dl(LOWER, FIRST_SETTLEMENT_TIME, FIRST_SETTLEMENT_TIME) == early.probe_below_reach(9)
    first = evaluate([], reach=FIRST_SETTLEMENT_TIME, now=NOW, scan_from=NOW)
    assert first.probe_below_reach(1000) is None
    with pytest.raises(ValueError, match=">= 1"):
        state.probe_below_reach(0)


def test_settlements_before_history_start_names_the_start_and_the_reach() -> None:
    """The error names the oldest stored settlement (quantoxide's history_start) and reach."""
    stored = list(settlement_times(utc(2026, 1, 5), HEAD))
    state = evaluate(stored, reach=utc(2026, 1, 1), now=NOW, scan_from=utc(2026, 1, 1))
    lower = state.unanswered_lower_bound([dl(LATEST, utc(2026, 1, 1), HEAD)])
    assert lower is not None
    error = settlements_before_history_start(state, lower, state.probe_below_reach(3))
    assert isinstance(error, SettlementsBeforeHistoryStart)
    text = str(error)
    assert "no funding settlements before 2026-01-05T00:00:00Z" in text
    assert "[2026-01-01T00:00:00Z .. 2026-01-04T16:00:00Z]" in text
    assert "[2025-12-31T00:00:00Z .. 2025-12-31T16:00:00Z]" in text
    assert "reach 2026-01-01T00:00:00Z" in text


def test_plan_order() -> None:
    """Upper bound first, then missing, then the lower bound."""
    stored = [t for t in settlement_times(utc(2026, 1, 5), utc(2026, 1, 9)) if t.day != 7]
    state = evaluate(stored, reach=utc(2026, 1, 1), now=NOW, scan_from=utc(2026, 1, 1))
    assert [d.kind for d in state.downloads()] == [UPPER, MISSING, LOWER]


def test_missing_across_the_b_to_c_transition() -> None:
    """Missing times around the 2025-04-11 change follow the schedule and group across it."""
    scan = utc(2025, 4, 10)
    all_times = list(settlement_times(scan, utc(2025, 4, 12, 8)))
    assert [
        utc(2025, 4, 10, 4),
        utc(2025, 4, 10, 12),
        utc(2025, 4, 10, 20),
        utc(2025, 4, 11, 4),
        utc(2025, 4, 11, 16),
        utc(2025, 4, 12, 0),
        utc(2025, 4, 12, 8),
    ] == all_times
    gone = {utc(2025, 4, 11, 4), utc(2025, 4, 11, 16)}
    state = evaluate(
        [t for t in all_times if t not in gone],
        reach=scan,
        now=utc(2025, 4, 12, 9),
        scan_from=scan,
    )
    assert (utc(2025, 4, 11, 4), utc(2025, 4, 11, 16)) == state.missing
    # the reach 00:00 floors to the 20:00 settlement of the day before: below the stored ones
    assert (
        dl(MISSING, utc(2025, 4, 11, 4), utc(2025, 4, 11, 16)),
        dl(LOWER, utc(2025, 4, 9, 20), utc(2025, 4, 9, 20)),
    ) == state.downloads()


def test_upper_bound_across_the_a_to_b_transition() -> None:
    """In the A->B dead zone the newest settlement is A's last; after it, B's first."""
    stored = [utc(2021, 12, 6, 8), utc(2021, 12, 7, 8)]
    state = evaluate(
        stored, reach=utc(2021, 12, 6), now=utc(2021, 12, 7, 15), scan_from=utc(2021, 12, 6)
    )
    assert state.is_caught_up
    later = evaluate(
        stored, reach=utc(2021, 12, 6), now=utc(2021, 12, 8, 5), scan_from=utc(2021, 12, 6)
    )
    assert dl(UPPER, utc(2021, 12, 7, 20), utc(2021, 12, 8, 4)) == later.next_download()


def test_reach_before_first_settlement_is_the_first() -> None:
    """A reach before settlements existed means the first settlement."""
    state = evaluate([], reach=utc(2020, 1, 1), now=NOW, scan_from=utc(2020, 1, 1))
    assert state.reach == FIRST_SETTLEMENT_TIME


def test_fetched_ranges_are_skipped() -> None:
    """A settlement the exchange does not have is not asked for twice in a pass."""
    stored = [t for t in settlement_times(utc(2026, 1, 1), HEAD) if t != utc(2026, 1, 3, 8)]
    state = evaluate(stored, reach=utc(2026, 1, 1), now=NOW, scan_from=utc(2026, 1, 1))
    first = state.next_download()
    assert first is not None
    assert state.next_download(fetched=[first]) is None


def test_download_times_and_validation() -> None:
    """A download lists its times; off-schedule bounds are rejected."""
    assert [utc(2026, 1, 1, 0), utc(2026, 1, 1, 8)] == list(
        dl(MISSING, utc(2026, 1, 1, 0), utc(2026, 1, 1, 8)).times()
    )
    with pytest.raises(ValueError, match="not a settlement time"):
        dl(MISSING, utc(2026, 1, 1, 4), utc(2026, 1, 1, 8))


def test_summary() -> None:
    """The summary is flat and JSON-ready."""
    stored = [t for t in settlement_times(utc(2026, 1, 1), HEAD) if t != utc(2026, 1, 3, 8)]
    summary = evaluate(stored, reach=utc(2026, 1, 1), now=NOW, scan_from=utc(2026, 1, 1)).summary()
    assert summary == {
        "reach": "2026-01-01T00:00:00Z",
        "now": "2026-01-10T09:30:00Z",
        "scan_from": "2026-01-01T00:00:00Z",
        "earliest": "2026-01-01T00:00:00Z",
        "latest": "2026-01-10T08:00:00Z",
        "missing": 1,
        "first_missing": ["2026-01-03T08:00:00Z"],
        "caught_up": False,
        "complete": False,
    }


def test_naive_now_is_rejected() -> None:
    """Naive datetimes are ValueErrors."""
    with pytest.raises(ValueError, match="timezone-aware"):
        FundingSettlementsState.evaluate(
            facts_from([], utc(2026, 1, 1)),
            reach=utc(2026, 1, 1),
            now=datetime(2026, 1, 2),
            scan_from=utc(2026, 1, 1),
        )


@settings(max_examples=150, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(2021, 11, 20), max_value=datetime(2025, 5, 1), timezones=st.just(UTC)
    ),
    st.integers(0, 40),
    st.data(),
)
def test_plan_converges(start: datetime, count: int, data: st.DataObject) -> None:
    """Following the plan stores every settlement the exchange has in [reach, now]."""
    truth_all = list(settlement_times(start, start + timedelta(days=count)))
    if not truth_all:
        return
    reach = truth_all[0]
    now = truth_all[-1] + timedelta(hours=1)
    downtime = data.draw(st.sets(st.sampled_from(truth_all[1:]))) if len(truth_all) > 1 else set()
    truth = set(truth_all) - downtime
    stored = set(data.draw(st.sets(st.sampled_from(sorted(truth)))))
    fetched: list[SettlementDownload] = []
    for _ in range(500):
        state = evaluate(stored, reach=reach, now=now, scan_from=reach)
        planned = state.next_download(fetched=fetched)
        if planned is None:
            break
        assert any(t not in stored for t in planned.times())
        fetched.append(planned)
        stored |= {t for t in truth if planned.start <= t <= planned.end}
    else:
        raise AssertionError("the plan did not terminate")
    assert truth == stored
    if not downtime:
        assert state.is_caught_up
        assert state.is_complete
