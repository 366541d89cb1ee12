"""The download planner shared by candles and funding settlements, parameterised by the grid.

A table must hold every point of its grid (:mod:`qx_actors.domain.spans`) in a window
``[lower, head]``, ``head`` being the newest point there can be. The plan lists the ranges to
fetch, in this order:

1. ``LATEST``: nothing is stored, fetch the whole window;
2. ``UPPER_BOUND``: points newer than the stored ones may exist, fetch from the newest stored
   one (or from where a re-fetch must start) up to ``head``;
3. ``REVISION``: stored points that are not final yet and old enough to be (candles);
4. repairs: holes between the stored bounds (candle gaps, missing settlements);
5. ``LOWER_BOUND``: stored points don't reach down to ``lower``, fetch what is below them.

Where the upper bound starts, which holes are repaired and how, and where the lower bound
ends are the grid's own rules (:mod:`qx_actors.domain.history` for candles,
:mod:`qx_actors.domain.funding` for settlements); this module holds the rest: the range to
fetch, the order, and a plan followed in *passes*. The caller fetches the first range, stores
it, evaluates its state again and plans again, passing the ranges already fetched in this
pass: a range within one of them is never planned again in the same pass (the exchange would
answer the same), which is what makes a pass terminate.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Protocol, TypeVar

from qx_actors.domain.spans import Grid, Span
from qx_actors.domain.timeutil import format_utc, require_utc

__all__ = [
    "DownloadKind",
    "GridRange",
    "R",
    "StoredBounds",
    "check_bounds",
    "check_span",
    "first_of",
    "not_fetched",
    "plan",
    "require_point",
]

R = TypeVar("R", bound="GridRange")


class DownloadKind(enum.Enum):
    """Why a range is fetched (a repair is a ``GAP`` for candles, ``MISSING`` for settlements)."""

    LATEST = "latest"
    UPPER_BOUND = "upper_bound"
    REVISION = "revision"
    GAP = "gap"
    MISSING = "missing"
    LOWER_BOUND = "lower_bound"


def require_point(grid: Grid, value: datetime, what: str) -> datetime:
    """``value`` in UTC; ``ValueError`` naming ``what`` if it is naive or not on ``grid``."""
    value = require_utc(value, what)
    if not grid.contains(value):
        raise ValueError(f"{what} {format_utc(value)} is not a {grid.point}")
    return value


class _FrozenSpan(Protocol):
    @property
    def start(self) -> datetime: ...

    @property
    def end(self) -> datetime: ...


def check_span(span: _FrozenSpan, grid: Grid, what: str, noun: str) -> None:
    """Validate a frozen dataclass's ``start``/``end`` (in its ``__post_init__``): both on
    ``grid`` and in UTC (stored so), ``start <= end``. ``ValueError`` names ``what`` (which
    end is wrong) or ``noun`` (an empty ``span``)."""
    object.__setattr__(span, "start", require_point(grid, span.start, f"{what} start"))
    object.__setattr__(span, "end", require_point(grid, span.end, f"{what} end"))
    if span.end < span.start:
        raise ValueError(f"empty {noun} {span}")


@dataclass(frozen=True, slots=True)
class GridRange:
    """Points ``[start, end]`` of the subclass's grid to fetch, both inclusive, and why."""

    kind: DownloadKind
    start: datetime
    end: datetime

    GRID: ClassVar[Grid]
    #: what the range is called in the error for an empty one
    NOUN: ClassVar[str]

    def __post_init__(self) -> None:
        check_span(self, self.GRID, "download", self.NOUN)

    def covers(self, other: GridRange) -> bool:
        """Whether ``other``'s points all lie within this range."""
        return self.start <= other.start and other.end <= self.end

    def __str__(self) -> str:
        return f"{self.kind.value} [{format_utc(self.start)} .. {format_utc(self.end)}]"


class StoredBounds:
    """quantoxide's accessors of the oldest and newest stored points (a state's mixin)."""

    __slots__ = ()
    earliest: datetime | None
    latest: datetime | None

    @property
    def bounds(self) -> tuple[datetime, datetime] | None:
        """``(earliest, latest)`` stored times, or ``None`` when nothing is stored."""
        if self.earliest is None or self.latest is None:
            return None
        return self.earliest, self.latest

    @property
    def bound_start(self) -> datetime | None:
        """The oldest stored time, or ``None``."""
        return self.earliest

    @property
    def bound_end(self) -> datetime | None:
        """The newest stored time, or ``None``."""
        return self.latest


def plan(
    range_type: type[R],
    repair: DownloadKind,
    *,
    lower: datetime,
    head: datetime,
    stored: bool,
    upper_start: datetime | None,
    repairs: Iterable[Span],
    lower_end: datetime | None,
    revisions: Iterable[Span] = (),
) -> list[R]:
    """Every range to fetch, in the plan's order (see the module docstring).

    ``stored``: whether anything is stored (if not, the plan is ``LATEST [lower, head]``);
    ``upper_start``: where the upper bound starts, ``None`` for none; ``repairs``: the holes
    to fetch (as ``repair`` ranges), in the order to fetch them; ``revisions``: stored points
    to fetch again (as ``REVISION`` ranges), in order; ``lower_end``: the last point of the
    lower bound, ``None`` for none.
    """
    if not stored:
        return [range_type(DownloadKind.LATEST, lower, head)]
    ranges = []
    if upper_start is not None:
        ranges.append(range_type(DownloadKind.UPPER_BOUND, upper_start, head))
    ranges.extend(range_type(DownloadKind.REVISION, first, last) for first, last in revisions)
    ranges.extend(range_type(repair, first, last) for first, last in repairs)
    if lower_end is not None:
        ranges.append(range_type(DownloadKind.LOWER_BOUND, lower, lower_end))
    return ranges


def not_fetched(ranges: Iterable[R], fetched: Iterable[R]) -> tuple[R, ...]:
    """The ``ranges`` not within a range of ``fetched``, in order."""
    done = tuple(fetched)
    return tuple(rng for rng in ranges if not any(old.covers(rng) for old in done))


def first_of(ranges: Sequence[R]) -> R | None:
    """The first range to fetch, ``None`` when the plan is done."""
    return ranges[0] if ranges else None


def check_bounds(earliest: datetime | None, latest: datetime | None) -> None:
    """``ValueError`` unless the stored bounds are both set (in order) or both ``None``."""
    if (earliest is None) != (latest is None):
        raise ValueError("earliest and latest must both be set or both be None")
    if earliest is not None and latest is not None and latest < earliest:
        raise ValueError(f"latest {format_utc(latest)} before earliest {format_utc(earliest)}")
