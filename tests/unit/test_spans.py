"""Span arithmetic against a model of spans as sets of grid points, on both grids."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qx_actors.domain.settlements import SETTLEMENT_GRID, settlement_times
from qx_actors.domain.spans import (
    MINUTES,
    Grid,
    Span,
    clip,
    join_touching_descending,
    merge,
    runs,
    subtract,
    subtract_points,
)

SIZE = 40
MINUTE_AXIS = [datetime(2026, 1, 1, tzinfo=UTC) + n * timedelta(minutes=1) for n in range(SIZE)]
# Across the dead zone between the daily and the 8-hourly schedule (2021-12-07 08:00 .. 20:00).
SETTLEMENT_AXIS = list(
    settlement_times(datetime(2021, 11, 25, tzinfo=UTC), datetime(2021, 12, 31, tzinfo=UTC))
)[:SIZE]
GRIDS = [
    pytest.param(MINUTES, MINUTE_AXIS, id="minutes"),
    pytest.param(SETTLEMENT_GRID, SETTLEMENT_AXIS, id="settlements"),
]

index_pairs = st.tuples(st.integers(0, SIZE - 1), st.integers(0, SIZE - 1)).map(sorted).map(tuple)
span_lists = st.lists(index_pairs, max_size=8)


def as_spans(axis: list[datetime], pairs: Iterable[tuple[int, ...]]) -> list[Span]:
    """Index pairs as spans of the axis's points."""
    return [(axis[first], axis[last]) for first, last in pairs]


def points(axis: list[datetime], spans: Iterable[Span]) -> set[int]:
    """The indices of every axis point the spans hold."""
    where = {time: index for index, time in enumerate(axis)}
    return {n for first, last in spans for n in range(where[first], where[last] + 1)}


def assert_normalised(grid: Grid, spans: list[Span]) -> None:
    """Ascending, each span non-empty, neither overlapping nor touching the next one."""
    assert all(first <= last for first, last in spans)
    assert all(grid.next(before[1]) < after[0] for before, after in itertools.pairwise(spans))


def normalised(axis: list[datetime], grid: Grid, pairs: list[tuple[int, ...]]) -> list[Span]:
    return merge(as_spans(axis, pairs), grid)


def test_minute_grid_steps() -> None:
    """The minute grid steps a minute either way and knows whole minutes."""
    first, second = MINUTE_AXIS[:2]
    assert (second, first) == (MINUTES.next(first), MINUTES.previous(second))
    assert MINUTES.contains(first) and not MINUTES.contains(first + timedelta(seconds=1))


def test_settlement_grid_steps_over_the_dead_zone() -> None:
    """Consecutive settlements across a schedule change touch: nothing lies between them."""
    daily_last = datetime(2021, 12, 7, 8, tzinfo=UTC)
    first_of_three = datetime(2021, 12, 7, 20, tzinfo=UTC)
    assert [(daily_last, first_of_three)] == merge(
        [(daily_last, daily_last), (first_of_three, first_of_three)], SETTLEMENT_GRID
    )
    assert [(daily_last, first_of_three)] == runs([daily_last, first_of_three], SETTLEMENT_GRID)


@pytest.mark.parametrize(("grid", "axis"), GRIDS)
@given(pairs=span_lists)
def test_merge_is_the_union(grid: Grid, axis: list[datetime], pairs: list[tuple[int, ...]]) -> None:
    """merge keeps exactly the points of its spans, normalised."""
    merged = merge(as_spans(axis, pairs), grid)
    assert points(axis, as_spans(axis, pairs)) == points(axis, merged)
    assert_normalised(grid, merged)


@pytest.mark.parametrize(("grid", "axis"), GRIDS)
@given(pairs=span_lists, cut_pairs=span_lists)
def test_subtract_is_the_difference(
    grid: Grid, axis: list[datetime], pairs: list[tuple[int, ...]], cut_pairs: list[tuple[int, ...]]
) -> None:
    """subtract keeps the points of the spans outside every cut (cuts may overlap)."""
    spans = normalised(axis, grid, pairs)
    cuts = sorted(as_spans(axis, cut_pairs))
    result = subtract(spans, cuts, grid)
    assert points(axis, spans) - points(axis, cuts) == points(axis, result)
    assert all(first <= last for first, last in result)
    assert result == sorted(result)


@pytest.mark.parametrize(("grid", "axis"), GRIDS)
@given(span=index_pairs, removed=st.lists(st.integers(0, SIZE - 1)))
def test_subtract_points(
    grid: Grid, axis: list[datetime], span: tuple[int, ...], removed: list[int]
) -> None:
    """A span minus sorted points (repeats and points outside it allowed)."""
    whole = as_spans(axis, [span])[0]
    result = subtract_points(whole, [axis[n] for n in sorted(removed)], grid)
    assert points(axis, [whole]) - set(removed) == points(axis, result)
    assert_normalised(grid, result)


@pytest.mark.parametrize(("grid", "axis"), GRIDS)
@given(pairs=span_lists, bounds=index_pairs)
def test_clip_keeps_the_points_within(
    grid: Grid, axis: list[datetime], pairs: list[tuple[int, ...]], bounds: tuple[int, ...]
) -> None:
    """clip keeps the points within [low, high], in the spans' order."""
    spans = normalised(axis, grid, pairs)
    low, high = axis[bounds[0]], axis[bounds[1]]
    clipped = clip(spans, low, high)
    assert points(axis, spans) & set(range(bounds[0], bounds[1] + 1)) == points(axis, clipped)
    assert_normalised(grid, clipped)


@pytest.mark.parametrize(("grid", "axis"), GRIDS)
@given(chosen=st.lists(st.integers(0, SIZE - 1), min_size=1))
def test_runs_are_the_maximal_runs(grid: Grid, axis: list[datetime], chosen: list[int]) -> None:
    """runs of sorted points (with repeats) hold exactly those points, maximal."""
    found = runs([axis[n] for n in sorted(chosen)], grid)
    assert set(chosen) == points(axis, found)
    assert_normalised(grid, found)


def reference_merge_descending(ranges: list[Span]) -> list[Span]:
    """The REST fetcher's former ``_merge_descending``, kept here as the specification."""
    merged: list[Span] = []
    for first, last in ranges:
        if merged and merged[-1][0] - timedelta(minutes=1) == last:
            merged[-1] = (first, merged[-1][1])
        else:
            merged.append((first, last))
    return merged


@given(pairs=span_lists)
def test_join_touching_descending_is_the_fetchers_merge(pairs: list[tuple[int, ...]]) -> None:
    """Exactly what the fetcher did, for any input order."""
    spans = as_spans(MINUTE_AXIS, pairs)
    assert reference_merge_descending(spans) == join_touching_descending(spans)


@pytest.mark.parametrize(("grid", "axis"), GRIDS)
@given(chosen=st.sets(st.integers(0, SIZE - 1)), seams=st.sets(st.integers(0, SIZE - 1)))
def test_join_touching_descending_joins_the_parts(
    grid: Grid, axis: list[datetime], chosen: set[int], seams: set[int]
) -> None:
    """Runs cut into parts at seams and listed newest first come back as the runs, newest
    first."""
    parts = runs([axis[n] for n in sorted(chosen)], grid) if chosen else []
    where = {time: index for index, time in enumerate(axis)}
    cut: list[Span] = []
    for first, last in parts:
        start = where[first]
        for seam in sorted(s for s in seams if where[first] < s <= where[last]):
            cut.append((axis[start], axis[seam - 1]))
            start = seam
        cut.append((axis[start], last))
    assert list(reversed(parts)) == join_touching_descending(list(reversed(cut)), grid)
