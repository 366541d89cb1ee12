"""Spans: inclusive ranges of points on a grid, and their arithmetic.

A *grid* is the set of instants a table holds one row for: every whole minute for candles
(:data:`MINUTES`), the funding settlement schedule for settlements (``SETTLEMENT_GRID`` in
:mod:`qx_actors.domain.settlements`). A *span* ``(first, last)`` is every grid point from
``first`` to ``last``, both included, so ``(t, t)`` is one point. Two spans *touch* when the
grid has no point between them: ``(a, b)`` and ``(next(b), c)`` together are ``(a, c)``.

This module is the one place that merges, subtracts and clips spans: the planners (what is
missing), the writer's ``ohlc_coverage`` and ``ohlc_verified_empty`` bookkeeping, and the
fetcher joining its parts' missing minutes all use it. Pure arithmetic: no validation (callers
check their inputs where they enter) and no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from qx_actors.domain.timeutil import MINUTE, is_whole_minute

__all__ = [
    "MINUTES",
    "Grid",
    "Span",
    "clip",
    "join_touching_descending",
    "merge",
    "runs",
    "subtract",
    "subtract_points",
]

#: An inclusive range of grid points ``(first, last)``.
Span = tuple[datetime, datetime]


@dataclass(frozen=True, slots=True)
class Grid:
    """The instants of a schedule, and how to step between them."""

    #: what one point is called in error messages ("whole minute", "settlement time")
    point: str
    #: whether an instant is a point of the grid
    contains: Callable[[datetime], bool]
    #: the point after a point
    next: Callable[[datetime], datetime]
    #: the point before a point
    previous: Callable[[datetime], datetime]


def _next_minute(minute: datetime) -> datetime:
    return minute + MINUTE


def _previous_minute(minute: datetime) -> datetime:
    return minute - MINUTE


#: Every whole minute: the candle grid.
MINUTES = Grid("whole minute", is_whole_minute, _next_minute, _previous_minute)


def merge(spans: Iterable[Span], grid: Grid = MINUTES) -> list[Span]:
    """The union of ``spans`` (any order), ascending; overlapping or touching spans joined."""
    merged: list[Span] = []
    for first, last in sorted(spans):
        if merged and first <= grid.next(merged[-1][1]):
            if last > merged[-1][1]:
                merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return merged


def subtract(spans: Sequence[Span], cuts: Sequence[Span], grid: Grid = MINUTES) -> list[Span]:
    """The points of ``spans`` outside every cut, as spans, ascending.

    ``spans``: ascending and disjoint (as :func:`merge` returns them); ``cuts``: ascending by
    their first point, possibly overlapping (e.g. single points with repeats).
    """
    result: list[Span] = []
    index = 0
    for first, last in spans:
        while index < len(cuts) and cuts[index][1] < first:
            index += 1
        cursor = first
        probe = index
        while probe < len(cuts) and cuts[probe][0] <= last:
            cut_first, cut_last = cuts[probe]
            if cut_first > cursor:
                result.append((cursor, grid.previous(cut_first)))
            cursor = max(cursor, grid.next(cut_last))
            probe += 1
        if cursor <= last:
            result.append((cursor, last))
    return result


def subtract_points(span: Span, points: Sequence[datetime], grid: Grid = MINUTES) -> list[Span]:
    """The points of ``span`` not in the ascending ``points`` (repeats and points outside
    the span allowed), as spans, ascending."""
    return subtract([span], [(point, point) for point in points], grid)


def clip(spans: Iterable[Span], low: datetime, high: datetime) -> list[Span]:
    """The parts of ``spans`` within ``[low, high]`` (spans outside it dropped), in order."""
    return [
        (max(first, low), min(last, high)) for first, last in spans if last >= low and first <= high
    ]


def runs(points: Sequence[datetime], grid: Grid = MINUTES) -> list[Span]:
    """The runs of grid-consecutive points of the ascending, non-empty ``points`` (repeats
    allowed), ascending."""
    found: list[Span] = []
    first = last = points[0]
    for point in points:
        if point > grid.next(last):
            found.append((first, last))
            first = point
        last = point
    found.append((first, last))
    return found


def join_touching_descending(spans: Iterable[Span], grid: Grid = MINUTES) -> list[Span]:
    """Descending, disjoint ``spans`` with each one that touches the one before it joined to it.

    Only exact touches are joined (the seams between adjacent parts of one range fetched in
    parallel, each part reporting its own missing spans, newest first); the order is kept.
    """
    joined: list[Span] = []
    for first, last in spans:
        if joined and grid.previous(joined[-1][0]) == last:
            joined[-1] = (first, joined[-1][1])
        else:
            joined.append((first, last))
    return joined
