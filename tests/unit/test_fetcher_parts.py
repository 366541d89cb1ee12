"""How the REST fetcher splits a long range and joins what was missing at the seams."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from qx_actors.actors._rest_fetcher import PARALLEL_MIN_PAGES, _split
from qx_actors.domain.spans import join_touching_descending

T0 = datetime(2026, 1, 1, tzinfo=UTC)
M = timedelta(minutes=1)


def test_short_range_is_one_part() -> None:
    """A range under PARALLEL_MIN_PAGES pages is fetched whole."""
    end = T0 + (PARALLEL_MIN_PAGES * 10 - 2) * M
    assert [(T0, end)] == _split(T0, end, 10)


@given(st.integers(min_value=PARALLEL_MIN_PAGES * 10, max_value=100_000))
def test_parts_cover_the_range_exactly_newest_first(minutes: int) -> None:
    """The parts are adjacent, newest first, and cover [start, end] exactly once."""
    end = T0 + (minutes - 1) * M
    parts = _split(T0, end, 10)
    assert len(parts) >= 2
    ascending = parts[::-1]
    assert T0 == ascending[0][0] and end == ascending[-1][1]
    for (_, last), (first, _) in itertools.pairwise(ascending):
        assert last + M == first
    assert minutes == sum(int((e - s) / M) + 1 for s, e in parts)


def test_missing_ranges_that_touch_at_a_seam_are_joined() -> None:
    """Descending missing ranges of two parts that touch become one; others stay apart."""
    newer_tail = (T0 + 10 * M, T0 + 19 * M)
    older_head = (T0 + 5 * M, T0 + 9 * M)
    elsewhere = (T0, T0 + 2 * M)
    assert [(T0 + 5 * M, T0 + 19 * M), elsewhere] == join_touching_descending(
        [newer_tail, older_head, elsewhere]
    )
