"""Price-history state and download plan (pure arithmetic over what the database holds).

The candle table must cover ``[reach, now]`` minute by minute. :class:`PriceHistoryState`
evaluates what the storage layer reports (:class:`PriceHistoryFacts`) against that goal, and
plans the next range to fetch:

1. ``LATEST``: the table is empty, fetch ``[reach, now]``;
2. ``UPPER_BOUND``: newer candles exist, or stored candles are still young: fetch from the
   newest stored candle, or from the oldest unstable candle of the last
   :data:`REVISION_WINDOW` (66 minutes) if older, up to now. Young candles are so fetched
   again on every pass until they are an hour old and stored ``stable`` (as quantoxide, whose
   upper-bound fetch always takes at least the last 66 minutes);
3. ``REVISION``: a run of unstable candles older than that window (left by a stop, or the
   neighbours of a hole): fetched once more, now final;
4. ``GAP``: a hole, widened by 5 minutes on each side (storage flags those neighbours
   unstable), clamped to ``[reach, now]``; oldest first for backfill, newest first for live;
5. ``LOWER_BOUND``: ``[reach, earliest - 1m]``.

Only the reach is the engine's business: a hole wholly older than the reach is neither an
error nor fetched (``holes_before_reach`` lists it); one that straddles the reach is repaired
from the reach on. Unstable candles older than the reach are left as they are.

The order and the range type are the shared planner's (:mod:`qx_actors.domain.planner`).
A plan is followed in *passes*: the caller fetches the planned range, stores it, evaluates the
state again and asks for the next range, passing the ranges it already fetched in this pass.
A range inside an already fetched one is never planned again in the same pass: the exchange
would answer the same (e.g. a head minute it has not produced yet, or a young hole), so this
is what makes every pass terminate.

Unstable candles are known by their runs (``facts.unstable``: every stored candle not yet
``stable``, as inclusive minute ranges). A live lookback limits what is *backfilled*, never
what is revised: unstable candles anywhere in the reach are fetched again. A candle is stable
when :func:`is_stable_candle_time` (at least an hour old); storage must write re-fetched
candles with that flag, or their re-fetch never settles them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from qx_actors.domain import planner
from qx_actors.domain.planner import DownloadKind as DownloadKind  # named here by its callers
from qx_actors.domain.planner import (
    GridRange,
    StoredBounds,
    check_span,
    require_point,
)
from qx_actors.domain.spans import MINUTES, Span, clip, merge, subtract
from qx_actors.domain.timeutil import (
    MINUTE,
    UNSTABLE_AGE,
    ceil_minute,
    floor_minute,
    format_optional_utc,
    format_utc,
    require_utc,
)
from qx_actors.domain.values import EXCHANGE_PAGE_LIMIT
from qx_actors.errors import LookbackBeyondReachError, ReachBeforeHistoryError

__all__ = [
    "GAP_NEIGHBOURS",
    "REVISION_WINDOW",
    "DownloadKind",
    "DownloadRange",
    "PriceHistoryFacts",
    "PriceHistoryState",
    "TimeRange",
    "check_reach_covered",
    "is_stable_candle_time",
    "last_stable_minute",
]

#: How many candles either side of a gap are re-fetched with it.
GAP_NEIGHBOURS = 5
_WIDEN = GAP_NEIGHBOURS * MINUTE
#: How far back each pass fetches the head again while stored candles there are unstable: the
#: hour in which the exchange still revises a candle, plus 10 % (quantoxide's minimum page of
#: an upper-bound fetch), so a candle is fetched at least once after it became final.
REVISION_WINDOW = UNSTABLE_AGE * 11 / 10


@dataclass(frozen=True, slots=True)
class PriceHistoryFacts:
    """What the database says about stored candles; produced by the storage layer.

    Ranges are inclusive minute ranges ``(first_missing, last_missing)``; ``unstable`` lists
    the runs of stored candles not marked ``stable`` (``earliest_unstable`` is its first
    minute; a producer that gives only ``earliest_unstable`` gets it as a one-minute run).
    """

    earliest: datetime | None
    latest: datetime | None
    holes: tuple[tuple[datetime, datetime], ...]
    verified_empty: tuple[tuple[datetime, datetime], ...]
    earliest_unstable: datetime | None
    unstable: tuple[tuple[datetime, datetime], ...] = ()


def is_stable_candle_time(time: datetime, now: datetime) -> bool:
    """Whether the candle of minute ``time`` is old enough (>= 1 h) to be final."""
    return now - time >= UNSTABLE_AGE


def last_stable_minute(now: datetime) -> datetime:
    """The newest minute whose candle is stable at ``now``."""
    return floor_minute(now - UNSTABLE_AGE)


def _check_minute(value: datetime, what: str) -> datetime:
    return require_point(MINUTES, value, what)


def _minutes(start: datetime, end: datetime) -> int:
    return (end - start) // MINUTE + 1


@dataclass(frozen=True, slots=True)
class TimeRange:
    """An inclusive range of whole minutes ``[start, end]``."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        check_span(self, MINUTES, "range", "range")

    @property
    def minutes(self) -> int:
        """How many minutes (candles) the range holds."""
        return _minutes(self.start, self.end)

    def __contains__(self, time: object) -> bool:
        return isinstance(time, datetime) and self.start <= time <= self.end

    def __str__(self) -> str:
        return f"[{format_utc(self.start)} .. {format_utc(self.end)}]"


@dataclass(frozen=True, slots=True)
class DownloadRange(GridRange):
    """An inclusive minute range to fetch; the fetcher pages backwards from ``end``."""

    GRID = MINUTES
    NOUN = "download range"

    @property
    def minutes(self) -> int:
        """How many candles the range can hold."""
        return _minutes(self.start, self.end)

    def requests(self, batch_size: int = EXCHANGE_PAGE_LIMIT) -> int:
        """How many REST pages of ``batch_size`` candles the range takes at least."""
        return -(-self.minutes // batch_size)


def _normalise(spans: Iterable[Span], what: str) -> list[Span]:
    """Validated spans, ascending, with overlapping or adjacent ones merged."""
    checked = [
        (_check_minute(start, f"{what} start"), _check_minute(end, f"{what} end"))
        for start, end in spans
    ]
    for start, end in checked:
        if end < start:
            raise ValueError(
                f"{what} ends before it starts: {format_utc(start)} .. {format_utc(end)}"
            )
    return merge(checked)


# --- the state ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PriceHistoryState(StoredBounds):
    """The stored price history judged against ``[reach, now]``; build it with :meth:`evaluate`.

    ``gaps`` are the holes still to repair: every minute of the reach between the stored
    bounds that is neither stored nor verified empty, anywhere (storage reports every hole,
    not only recent ones); holes wholly older than the reach are in ``holes_before_reach``
    instead (not repaired), and one straddling the reach is a gap from the reach on. With
    ``recheck_verified_empty`` the verified-empty holes that end at or after ``recheck_from``
    (all of them when it is None) are gaps again, to be asked about once more. ``unstable``:
    the runs of unstable candles within ``[reach, now]``. All ranges are inclusive minutes.
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
    unstable: tuple[TimeRange, ...] = ()
    holes_before_reach: tuple[TimeRange, ...] = ()

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
        """Judge ``facts`` at ``now`` against ``[reach, now]``.

        ``reach`` is rounded up to a whole minute (and down to the current minute if later).
        ``recheck_from``: with ``recheck_verified_empty``, only verified-empty ranges ending at
        or after it are re-checked (the engine passes the start of
        ``price_history_flag_gap_range``: the recent range the exchange may still revise).
        """
        now = require_utc(now, "now")
        head = floor_minute(now)
        reach = min(ceil_minute(require_utc(reach, "reach")), head)
        earliest = None if facts.earliest is None else _check_minute(facts.earliest, "earliest")
        latest = None if facts.latest is None else _check_minute(facts.latest, "latest")
        planner.check_bounds(earliest, latest)
        unstable = (
            None
            if facts.earliest_unstable is None
            else _check_minute(facts.earliest_unstable, "earliest_unstable")
        )
        all_holes = _normalise(facts.holes, "hole")
        verified = _normalise(facts.verified_empty, "verified-empty range")
        # Only the reach is ours to keep: older holes are listed, not repaired (quantoxide
        # never looks below its reach either); a hole straddling the reach starts at it.
        holes = clip(all_holes, reach, head)
        old_holes = subtract([h for h in all_holes if h[0] < reach], [(reach, head)])
        gaps = subtract(holes, verified)
        if recheck_verified_empty:
            recheck_from = None if recheck_from is None else require_utc(recheck_from)
            rechecked = [
                span for span in verified if recheck_from is None or span[1] >= recheck_from
            ]
            kept = subtract(verified, _normalise(rechecked, "re-checked range"))
            gaps = subtract(holes, kept)
        unstable_runs = list(facts.unstable)
        if not unstable_runs and unstable is not None:
            unstable_runs = [(unstable, unstable)]
        unstable_spans = clip(_normalise(unstable_runs, "unstable run"), reach, head)
        return cls(
            reach=reach,
            now=now,
            earliest=earliest,
            latest=latest,
            gaps=tuple(TimeRange(s, e) for s, e in gaps),
            verified_empty=tuple(TimeRange(s, e) for s, e in verified),
            earliest_unstable=unstable_spans[0][0] if unstable_spans else None,
            recheck_verified_empty=recheck_verified_empty,
            recheck_from=recheck_from if recheck_verified_empty else None,
            unstable=tuple(TimeRange(s, e) for s, e in unstable_spans),
            holes_before_reach=tuple(TimeRange(s, e) for s, e in subtract(old_holes, verified)),
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
        """Whether ``[reach, now]`` is fully covered and every candle old enough to be final
        is stored final (young candles still being revised don't count against it)."""
        plan = self._plan(self.reach, newest_gap_first=False, revise_young=False)
        return planner.first_of(plan) is None

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
        missing += sum(_minutes(s, e) for s, e in clip(self._gap_spans(), reach, head))
        return min(missing, total)

    @property
    def coverage_ratio(self) -> float:
        """Share of ``[reach, now]`` that is stored (or verified empty), in ``[0, 1]``."""
        total = _minutes(self.reach, self.head)
        return (total - self.missing_minutes) / total

    # --- quantoxide's helpers ---------------------------------------------------------------
    # Same names and meaning as quantoxide's ``PriceHistoryState``: bounds (``StoredBounds``)
    # are the oldest and newest stored candle times; a gap is reported here as its missing
    # minutes (inclusive), where quantoxide names the stored candles either side of it.
    # Verified-empty downtime is no gap: the exchange has nothing there, so a range across it
    # is available.

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
            range_from < gap.end + MINUTE and gap.start - MINUTE < range_to
            for gap in self._all_holes()
        )

    def tail_continuous_duration(self) -> timedelta | None:
        """How long the newest stretch without a gap is (up to the newest candle), or ``None``
        when nothing is stored."""
        if self.earliest is None or self.latest is None:
            return None
        holes = self._all_holes()
        if holes:
            return self.latest - (holes[-1].end + MINUTE)
        return self.latest - self.earliest

    def _all_holes(self) -> tuple[TimeRange, ...]:
        """The gaps and the holes older than the reach (not repaired, but holes all the same),
        oldest first."""
        return self.holes_before_reach + self.gaps

    def has_gaps(self) -> bool:
        """Whether anything of the reach is missing: nothing stored, a gap, or the history
        not reaching back to the reach (verified-empty downtime counts as present)."""
        covered = self._covered_from()
        return covered is None or bool(self.gaps) or self.reach < covered

    def summary(self) -> dict[str, Any]:
        """A flat, JSON-ready description for the CLI and the logs."""
        iso = format_optional_utc
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
            "unstable_minutes": sum(span.minutes for span in self.unstable),
            "holes_before_reach": len(self.holes_before_reach),
            "missing_minutes": self.missing_minutes,
            "coverage_ratio": round(self.coverage_ratio, 6),
            "complete": self.is_complete,
        }

    # --- the plan ---------------------------------------------------------------------------

    def _gap_spans(self) -> list[Span]:
        return [(gap.start, gap.end) for gap in self.gaps]

    def downloads(
        self, *, newest_gap_first: bool, fetched: Iterable[DownloadRange] = ()
    ) -> tuple[DownloadRange, ...]:
        """Every range the plan would fetch now, in order (see the module docstring)."""
        return planner.not_fetched(self._plan(self.reach, newest_gap_first), fetched)

    def next_download(
        self, *, newest_gap_first: bool, fetched: Iterable[DownloadRange] = ()
    ) -> DownloadRange | None:
        """The next range to fetch to cover ``[reach, now]``, or ``None`` when nothing is left.

        ``fetched``: the ranges already fetched in this pass; ranges within them are skipped.
        """
        return planner.first_of(self.downloads(newest_gap_first=newest_gap_first, fetched=fetched))

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
        return planner.first_of(planner.not_fetched(self._plan(lower, newest_gap_first), fetched))

    def _plan(
        self, lower: datetime, newest_gap_first: bool, *, revise_young: bool = True
    ) -> list[DownloadRange]:
        """The plan for ``[lower, head]`` (``lower``: the reach, or a live lookback's start).

        The lookback bounds the backfill only: unstable candles anywhere in the reach are
        revised. ``revise_young=False`` leaves out the re-fetch of candles still too young to
        be final (what :attr:`is_complete` judges).
        """
        head = self.head
        gaps = clip(self._gap_spans(), lower, head)
        widened = [(max(lower, s - _WIDEN), min(head, e + _WIDEN)) for s, e in gaps]
        covered = self._covered_from()
        unstable = [(span.start, span.end) for span in self.unstable]
        if revise_young:
            young_from = max(floor_minute(self.now - REVISION_WINDOW), self.reach)
        else:
            young_from = last_stable_minute(self.now) + MINUTE
        young = [max(s, young_from) for s, e in unstable if e >= young_from]
        upper_start = self._upper_start(lower, young[0] if revise_young and young else None)
        # Older unstable runs, except the neighbours a gap fetch or the upper bound takes anyway.
        below_upper = young_from if upper_start is None else min(young_from, upper_start)
        settle = subtract(clip(unstable, self.reach, below_upper - MINUTE), widened)
        return planner.plan(
            DownloadRange,
            DownloadKind.GAP,
            lower=lower,
            head=head,
            stored=self.latest is not None,
            upper_start=upper_start,
            revisions=reversed(settle) if newest_gap_first else settle,
            repairs=reversed(widened) if newest_gap_first else widened,
            lower_end=None if covered is None or covered <= lower else min(covered - MINUTE, head),
        )

    def _upper_start(self, lower: datetime, young_unstable: datetime | None) -> datetime | None:
        """Where the ``UPPER_BOUND`` fetch starts: the newest stored candle (not below
        ``lower``), or the oldest young unstable candle if older; ``None`` when there is
        nothing to fetch at the head."""
        latest = self.latest
        if latest is None:
            return None
        starts = []
        if latest < self.head:
            starts.append(max(latest, lower))
        if young_unstable is not None:
            starts.append(young_unstable)
        return min(starts) if starts else None


# --- after a fetch --------------------------------------------------------------------------


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
