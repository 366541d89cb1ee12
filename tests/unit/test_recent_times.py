"""RecentTimes.fresh (the feed's batch dedup) keeps what add() of each tick would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from qx_actors.actors._ws_feed import RecentTimes
from qx_actors.domain.values import PriceTick

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@given(
    st.integers(min_value=1, max_value=6),
    st.lists(st.lists(st.integers(min_value=0, max_value=12), max_size=8), max_size=6),
)
def test_fresh_is_add_of_each(capacity: int, batches: list[list[int]]) -> None:
    one_by_one, batched = RecentTimes(capacity), RecentTimes(capacity)
    for batch in batches:
        ticks = [PriceTick(T0 + timedelta(seconds=s), float(s)) for s in batch]
        expected = [tick for tick in ticks if one_by_one.add(tick.time)]
        assert batched.fresh(ticks) == expected
    probe = [T0 + timedelta(seconds=s) for s in range(13)]
    assert [one_by_one.add(t) for t in probe] == [batched.add(t) for t in probe]
