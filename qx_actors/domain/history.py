"""Price-history state and download plan (pure arithmetic over what the database holds).

The candle table must cover ``[reach, now]`` minute by minute. :class:`PriceHistoryState`
evaluates what the storage layer reports (:class:`PriceHistoryFacts`) against that goal, and
plans the next range to fetch:

1. ``LATEST``: the table is empty, fetch ``[reach, now]``;
2. ``UPPER_BOUND``: newer candles exist, or unstable candles are old enough to settle: fetch
   from the newest stored candle (or the oldest unstable one, if older) up to now;
3. ``GAP``: a hole, widened by 5 minutes on each side (storage flags those neighbours
   unstable), clamped to ``[reach, now]``; oldest first for backfill, newest first for live;
4. ``LOWER_BOUND``: ``[reach, earliest - 1m]``.

A plan is followed in *passes*: the caller fetches the planned range, stores it, evaluates the
state again and asks for the next range, passing the ranges it already fetched in this pass.
A range inside an already fetched one is never planned again in the same pass: the exchange
would answer the same (e.g. a head minute it has not produced yet, or a young hole), so this
is what makes every pass terminate.

Unstable candles are known only by the oldest one (``facts.earliest_unstable``); one older
than the lower limit (reach, or lookback start) is ignored, and hides newer ones, so storage
should report the oldest unstable candle at or after the reach. A candle is stable when
:func:`is_stable_candle_time` (at least an hour old); storage must write re-fetched candles
with that flag, or their re-fetch never settles them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from qx_actors.domain.timeutil import (
    MINUTE,
    UNSTABLE_AGE,
    ceil_minute,
    floor_minute,
    is_whole_minute,
    require_utc,
)
from qx_actors.domain.validation import format_utc
from qx_actors.errors import LookbackBeyondReachError, ReachBeforeHistoryError, UnreachableGapError

#: How many candles either side of a gap are re-fetched with it.
GAP_NEIGHBOURS = 5
_WIDEN = GAP_NEIGHBOURS * MINUTE

_Span = tuple[datetime, datetime]


@dataclass(frozen=True, slots=True)
class PriceHistoryFacts:
    """What the database says about stored candles; produced by the storage layer.

    Ranges are inclusive minute ranges ``(first_missing, last_missing)``.
    """

    earliest: datetime | None
    latest: datetime | None
    holes: tuple[tuple[datetime, datetime], ...]
    verified_empty: tuple[tuple[datetime, datetime], ...]
    earliest_unstable: datetime | None


def is_stable_candle_time(time: datetime, now: datetime) -> bool:
    """Whether the candle of minute ``time`` is old enough (>= 1 h) to be final."""
    return now - time >= UNSTABLE_AGE


def last_stable_minute(now: datetime) -> datetime:
    """The newest minute whose candle is stable at ``now``."""
    return floor_minute(now - UNSTABLE_AGE)


def _check_minute(value: datetime, what: str) -> datetime:
    value = require_utc(value, what)
    if not is_whole_minute(value):
        raise ValueError(f"{what} {format_utc(value)} is not a whole minute")
    return value


def _minutes(start: datetime, end: datetime) -> int:
    return (end - start) // MINUTE + 1


@dataclass(frozen=True, slots=True)
class TimeRange:
    """An inclusive range of whole minutes ``[start, end]``."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _check_minute(self.start, "range start"))
        object.__setattr__(self, "end", _check_minute(self.end, "range end"))
        if self.end < self.start:
            raise ValueError(f"empty range {self}")

    @property
    def minutes(self) -> int:
        """How many minutes (candles) the range holds."""
        return _minutes(self.start, self.end)

    def __contains__(self, time: object) -> bool:
        return isinstance(time, datetime) and self.start <= time <= self.end

    def __str__(self) -> str:
        return f"[{format_utc(self.start)} .. {format_utc(self.end)}]"


class DownloadKind(enum.Enum):
    """Why a range is fetched."""

    LATEST = "latest"
    UPPER_BOUND = "upper_bound"
    GAP = "gap"
    LOWER_BOUND = "lower_bound"


@dataclass(frozen=True, slots=True)
class DownloadRange:
    """An inclusive minute range to fetch; the fetcher pages backwards from ``end``."""

    kind: DownloadKind
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _check_minute(self.start, "download start"))
        object.__setattr__(self, "end", _check_minute(self.end, "download end"))
        if self.end < self.start:
            raise ValueError(f"empty download range {self}")

    @property
    def minutes(self) -> int:
        """How many candles the range can hold."""
        return _minutes(self.start, self.end)

    @property
    def range(self) -> TimeRange:
        """The fetched minutes as a :class:`TimeRange`."""
        return TimeRange(self.start, self.end)

    def requests(self, batch_size: int = 1000) -> int:
        """How many REST pages of ``batch_size`` candles the range takes at least."""
        return -(-self.minutes // batch_size)

    def covers(self, other: DownloadRange) -> bool:
        """Whether ``other``'s minutes all lie within this range."""
        return self.start <= other.start and other.end <= self.end

    def __str__(self) -> str:
        return f"{self.kind.value} [{format_utc(self.start)} .. {format_utc(self.end)}]"


# --- inclusive minute-span arithmetic ---------------------------------------------------------


def _normalise(spans: Iterable[tuple[datetime, datetime]], what: str) -> list[_Span]:
    """Sorted, validated spans with overlapping or adjacent ones merged."""
    checked = sorted(
        (_check_minute(start, f"{what} start"), _check_minute(end, f"{what} end"))
        for start, end in spans
    )
    merged: list[_Span] = []
    for start, end in checked:
        if end < start:
            raise ValueError(
                f"{what} ends before it starts: {format_utc(start)} .. {format_utc(end)}"
            )
        if merged and start <= merged[-1][1] + MINUTE:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _subtract(spans: list[_Span], cuts: list[_Span]) -> list[_Span]:
    """``spans`` minus ``cuts``; both normalised."""
    result: list[_Span] = []
    index = 0
    for start, end in spans:
        while index < len(cuts) and cuts[index][1] < start:
            index += 1
        cursor = start
        probe = index
        while probe < len(cuts) and cuts[probe][0] <= end:
            cut_start, cut_end = cuts[probe]
            if cut_start > cursor:
                result.append((cursor, cut_start - MINUTE))
            cursor = max(cursor, cut_end + MINUTE)
            probe += 1
        if cursor <= end:
            result.append((cursor, end))
    return result


def _clip(spans: Iterable[_Span], low: datetime, high: datetime) -> list[_Span]:
    return [(max(s, low), min(e, high)) for s, e in spans if e >= low and s <= high]


# --- the state ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PriceHistoryState:
    """The stored price history judged against ``[reach, now]``; build it with :meth:`evaluate`.

    ``gaps`` are the holes still to repair: every minute between the stored bounds that is
    neither stored nor verified empty, anywhere (storage reports every hole, not only recent
    ones). With ``recheck_verified_empty`` the verified-empty holes that end at or after
    ``recheck_from`` (all of them when it is None) are gaps again, to be asked about once
    more. All ranges are inclusive minutes.
    """

    reach: datetime
    now: datetime
    earliest: datetime | None
    latest: datetime | None
    gaps: tuple[TimeRange, ...]
    verified_empty: tuple[TimeRange, ...]
    earliest_unstable: datetime | None
    recheck_verified_empty: bool = False
    recheck_from: datetime | None = None

    @classmethod
    def evaluate(
        cls,
        facts: PriceHistoryFacts,
        *,
        reach: datetime,
        now: datetime,
        recheck_verified_empty: bool = False,
        recheck_from: datetime | None = None,
    ) -> PriceHistoryState:
        """Judge ``facts`` at ``now``; ``UnreachableGapError`` for a gap starting before reach.

        ``reach`` is rounded up to a whole minute (and down to the current minute if later).
        ``recheck_from``: with ``recheck_verified_empty``, only verified-empty ranges ending at
        or after it are re-checked (the engine passes the start of
        ``price_history_flag_gap_range``: the recent range the exchange may still revise).
        """
        now = require_utc(now, "now")
        head = floor_minute(now)
        reach = min(ceil_minute(require_utc(reach, "reach")), head)
        if (facts.earliest is None) != (facts.latest is None):
            raise ValueError("earliest and latest must both be set or both be None")
        earliest = None if facts.earliest is None else _check_minute(facts.earliest, "earliest")
        latest = None if facts.latest is None else _check_minute(facts.latest, "latest")
        if earliest is not None and latest is not None and latest < earliest:
            raise ValueError(f"latest {format_utc(latest)} before earliest {format_utc(earliest)}")
        unstable = (
            None
            if facts.earliest_unstable is None
            else _check_minute(facts.earliest_unstable, "earliest_unstable")
        )
        holes = _normalise(facts.holes, "hole")
        verified = _normalise(facts.verified_empty, "verified-empty range")
        gaps = _subtract(holes, verified)
        for start, end in gaps:
            if start < reach:
                raise UnreachableGapError(
                    f"gap [{format_utc(start)} .. {format_utc(end)}] "
                    f"({_minutes(start, end)} minutes) starts before the price history reach "
                    f"{format_utc(reach)}: it can't be repaired (move the reach back before it)"
                )
        if recheck_verified_empty:
            recheck_from = None if recheck_from is None else require_utc(recheck_from)
            rechecked = [
                span for span in verified if recheck_from is None or span[1] >= recheck_from
            ]
            kept = _subtract(verified, _normalise(rechecked, "re-checked range"))
            gaps = [(max(start, reach), end) for start, end in _subtract(holes, kept)]
            gaps = [(start, end) for start, end in gaps if end >= start]
        return cls(
            reach=reach,
            now=now,
            earliest=earliest,
            latest=latest,
            gaps=tuple(TimeRange(s, e) for s, e in gaps),
            verified_empty=tuple(TimeRange(s, e) for s, e in verified),
            earliest_unstable=unstable,
            recheck_verified_empty=recheck_verified_empty,
            recheck_from=recheck_from if recheck_verified_empty else None,
        )

    # --- derived ----------------------------------------------------------------------------

    @property
    def head(self) -> datetime:
        """The current (still forming) minute: the newest candle there can be."""
        return floor_minute(self.now)

    @property
    def is_empty(self) -> bool:
        """Whether no candle is stored."""
        return self.earliest is None

    @property
    def is_complete(self) -> bool:
        """Whether ``[reach, now]`` is fully covered and nothing needs a (re-)fetch."""
        return self.next_download(newest_gap_first=False) is None

    def _covered_from(self) -> datetime | None:
        """The earliest stored candle, extended down through adjacent verified-empty ranges."""
        covered = self.earliest
        if covered is None:
            return covered
        for span in reversed(self.verified_empty):
            if self._rechecked(span):
                continue
            if span.start < covered <= span.end + MINUTE:
                covered = span.start
        return covered

    def _rechecked(self, span: TimeRange) -> bool:
        """Whether the verified-empty ``span`` is asked about again (not counted as covered)."""
        if not self.recheck_verified_empty:
            return False
        return self.recheck_from is None or span.end >= self.recheck_from

    @property
    def missing_minutes(self) -> int:
        """Minutes of ``[reach, now]`` neither stored nor verified empty (from bounds and gaps)."""
        reach, head = self.reach, self.head
        total = _minutes(reach, head)
        covered = self._covered_from()
        if covered is None or self.latest is None:
            return total
        missing = 0
        if covered > reach:
            missing += _minutes(reach, min(covered - MINUTE, head))
        if self.latest < head:
            missing += _minutes(max(self.latest + MINUTE, reach), head)
        missing += sum(_minutes(s, e) for s, e in _clip(self._gap_spans(), reach, head))
        return min(missing, total)

    @property
    def coverage_ratio(self) -> float:
        """Share of ``[reach, now]`` that is stored (or verified empty), in ``[0, 1]``."""
        total = _minutes(self.reach, self.head)
        return (total - self.missing_minutes) / total

    # --- quantoxide's helpers ---------------------------------------------------------------
    # Same names and meaning as quantoxide's ``PriceHistoryState``: bounds are the oldest and
    # newest stored candle times; a gap is reported here as its missing minutes (inclusive),
    # where quantoxide names the stored candles either side of it. Verified-empty downtime is
    # no gap: the exchange has nothing there, so a range across it is available.

    @property
    def bounds(self) -> tuple[datetime, datetime] | None:
        """``(oldest, newest)`` stored candle times, or ``None`` when nothing is stored."""
        if self.earliest is None or self.latest is None:
            return None
        return self.earliest, self.latest

    @property
    def bound_start(self) -> datetime | None:
        """The oldest stored candle time."""
        return self.earliest

    @property
    def bound_end(self) -> datetime | None:
        """The newest stored candle time."""
        return self.latest

    def is_range_available(self, range_from: datetime, range_to: datetime) -> bool:
        """Whether ``[range_from, range_to]`` lies within the bounds and crosses no gap.

        As quantoxide: a gap conflicts when ``range_from < gap_to`` and ``gap_from <
        range_to``, ``gap_from``/``gap_to`` being the stored minutes either side of it.
        Verified-empty downtime below the oldest candle extends the bounds down.
        ``ValueError`` when ``range_from >= range_to``.
        """
        range_from = require_utc(range_from, "range_from")
        range_to = require_utc(range_to, "range_to")
        if range_from >= range_to:
            raise ValueError(
                f"invalid range: from {format_utc(range_from)} is not before {format_utc(range_to)}"
            )
        lower, upper = self._covered_from(), self.latest
        if lower is None or upper is None or not (lower <= range_from and range_to <= upper):
            return False
        return not any(
            range_from < gap.end + MINUTE and gap.start - MINUTE < range_to for gap in self.gaps
        )

    def tail_continuous_duration(self) -> timedelta | None:
        """How long the newest stretch without a gap is (up to the newest candle), or ``None``
        when nothing is stored."""
        if self.earliest is None or self.latest is None:
            return None
        if self.gaps:
            return self.latest - (self.gaps[-1].end + MINUTE)
        return self.latest - self.earliest

    def has_gaps(self) -> bool:
        """Whether anything of the reach is missing: nothing stored, a gap, or the history
        not reaching back to the reach (verified-empty downtime counts as present)."""
        covered = self._covered_from()
        return covered is None or bool(self.gaps) or self.reach < covered

    def summary(self) -> dict[str, Any]:
        """A flat, JSON-ready description for the CLI and the logs."""

        def iso(value: datetime | None) -> str | None:
            return None if value is None else format_utc(value)

        return {
            "reach": iso(self.reach),
            "now": iso(self.now),
            "earliest": iso(self.earliest),
            "latest": iso(self.latest),
            "gaps": len(self.gaps),
            "gap_minutes": sum(gap.minutes for gap in self.gaps),
            "verified_empty": len(self.verified_empty),
            "verified_empty_minutes": sum(span.minutes for span in self.verified_empty),
            "earliest_unstable": iso(self.earliest_unstable),
            "missing_minutes": self.missing_minutes,
            "coverage_ratio": round(self.coverage_ratio, 6),
            "complete": self.is_complete,
        }

    # --- the plan ---------------------------------------------------------------------------

    def _gap_spans(self) -> list[_Span]:
        return [(gap.start, gap.end) for gap in self.gaps]

    def downloads(
        self, *, newest_gap_first: bool, fetched: Iterable[DownloadRange] = ()
    ) -> tuple[DownloadRange, ...]:
        """Every range the plan would fetch now, in order (see the module docstring)."""
        return _skip_fetched(self._plan(self.reach, newest_gap_first), fetched)

    def next_download(
        self, *, newest_gap_first: bool, fetched: Iterable[DownloadRange] = ()
    ) -> DownloadRange | None:
        """The next range to fetch to cover ``[reach, now]``, or ``None`` when nothing is left.

        ``fetched``: the ranges already fetched in this pass; ranges within them are skipped.
        """
        plan = self.downloads(newest_gap_first=newest_gap_first, fetched=fetched)
        return plan[0] if plan else None

    def next_download_within(
        self,
        lookback_start: datetime,
        *,
        newest_gap_first: bool = True,
        fetched: Iterable[DownloadRange] = (),
    ) -> DownloadRange | None:
        """Like :meth:`next_download`, but only for ``[lookback_start, now]`` (live lookback).

        ``LookbackBeyondReachError`` if ``lookback_start`` is before the reach.
        """
        lower = min(ceil_minute(require_utc(lookback_start, "lookback start")), self.head)
        if lower < self.reach:
            raise LookbackBeyondReachError(
                f"lookback start {format_utc(lower)} is before the price history reach "
                f"{format_utc(self.reach)}"
            )
        plan = _skip_fetched(self._plan(lower, newest_gap_first), fetched)
        return plan[0] if plan else None

    def _plan(self, lower: datetime, newest_gap_first: bool) -> list[DownloadRange]:
        head = self.head
        earliest, latest = self.earliest, self.latest
        if earliest is None or latest is None:
            return [DownloadRange(DownloadKind.LATEST, lower, head)]
        plan: list[DownloadRange] = []
        gaps = _clip(self._gap_spans(), lower, head)
        widened = [(max(lower, s - _WIDEN), min(head, e + _WIDEN)) for s, e in gaps]

        needs_upper = latest < head
        upper_start = latest
        unstable = self.earliest_unstable
        if unstable is not None and lower <= unstable <= head:
            if any(s <= unstable <= e for s, e in widened):
                # a gap neighbour, re-fetched with its gap; younger candles are all unstable
                if needs_upper:
                    young = last_stable_minute(self.now) + MINUTE
                    upper_start = min(upper_start, max(unstable, young))
            elif needs_upper or is_stable_candle_time(unstable, self.now):
                needs_upper = True
                upper_start = min(upper_start, unstable)
        if needs_upper:
            if lower > self.reach:
                # live lookback: don't reach below the window
                upper_start = max(upper_start, lower)
            plan.append(DownloadRange(DownloadKind.UPPER_BOUND, upper_start, head))

        order = reversed(widened) if newest_gap_first else iter(widened)
        plan.extend(DownloadRange(DownloadKind.GAP, s, e) for s, e in order)

        covered = self._covered_from()
        assert covered is not None
        if covered > lower:
            plan.append(DownloadRange(DownloadKind.LOWER_BOUND, lower, min(covered - MINUTE, head)))
        return plan


def _skip_fetched(
    plan: list[DownloadRange], fetched: Iterable[DownloadRange]
) -> tuple[DownloadRange, ...]:
    done = tuple(fetched)
    return tuple(rng for rng in plan if not any(old.covers(rng) for old in done))


# --- after a fetch --------------------------------------------------------------------------


def confirmed_empty_ranges(
    requested: DownloadRange, received_times: Sequence[datetime], *, now: datetime
) -> list[TimeRange]:
    """Minutes of ``requested`` the exchange returned no candle for, in the stable region only.

    A hole among candles younger than an hour may still fill, so it is not confirmed. The
    result (ascending) is what the DB writer records as verified-empty.
    """
    end = min(requested.end, last_stable_minute(require_utc(now, "now")))
    start = requested.start
    if end < start:
        return []
    present = sorted({t for t in received_times if start <= t <= end})
    empty: list[TimeRange] = []
    cursor = start
    for time in present:
        if time > cursor:
            empty.append(TimeRange(cursor, floor_minute(time - MINUTE)))
        cursor = max(cursor, floor_minute(time) + MINUTE)
    if cursor <= end:
        empty.append(TimeRange(cursor, end))
    return empty


def check_reach_covered(
    requested: DownloadRange,
    received_oldest: datetime | None,
    reach: datetime,
    *,
    tolerance: timedelta = timedelta(0),
) -> None:
    """After a ``LATEST``/``LOWER_BOUND`` fetch down to ``reach``: ``ReachBeforeHistoryError``
    when the exchange returned nothing at or before ``reach + tolerance``.

    ``received_oldest`` is the oldest candle time the fetch returned (``None``: nothing).
    Other kinds, and fetches that did not ask for ``reach``, are not checked.
    """
    if requested.kind not in (DownloadKind.LATEST, DownloadKind.LOWER_BOUND):
        return
    reach = ceil_minute(require_utc(reach, "reach"))
    if requested.start > reach:
        return
    if received_oldest is None:
        raise ReachBeforeHistoryError(
            f"price history reach {format_utc(reach)} is before the exchange's history: "
            f"fetching [{format_utc(requested.start)} .. {format_utc(requested.end)}] "
            "returned no candle at all"
        )
    if received_oldest > reach + tolerance:
        raise ReachBeforeHistoryError(
            f"price history reach {format_utc(reach)} is before the exchange's history: "
            f"its first available candle in [{format_utc(requested.start)} .. "
            f"{format_utc(requested.end)}] is {format_utc(received_oldest)}"
        )
