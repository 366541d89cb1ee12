"""Funding-settlement state and download plan (pure arithmetic over what the database holds).

The settlements table must hold every settlement time of the schedule in ``[reach, now]``,
the reach floored to the settlement grid as quantoxide does. The plan, in order: ``LATEST``
(table empty), ``UPPER_BOUND`` (newer settlements exist), ``MISSING`` (holes inside the
scanned range, consecutive ones grouped; none when the scan is off, ``scan_from=None``),
``LOWER_BOUND`` (older settlements down to the reach): the shared planner's order
(:mod:`qx_actors.domain.planner`) on the settlement grid. As for candles, the caller passes
the ranges already fetched in the current pass, so that a settlement the exchange does not
have is not asked for again and again.

quantoxide's two fatal conditions live here as pure checks: a missing settlement older than
the reach (``UnreachableMissingSettlement``, raised by :meth:`FundingSettlementsState.evaluate`)
and an exchange without settlements below the stored ones down to the reach
(``SettlementsBeforeHistoryStart``, see :meth:`FundingSettlementsState.unanswered_lower_bound`
and :func:`settlements_before_history_start`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from qx_actors.domain import planner
from qx_actors.domain.planner import DownloadKind, GridRange, StoredBounds
from qx_actors.domain.settlements import (
    SETTLEMENT_GRID,
    floor_settlement_time,
    next_settlement_time,
    previous_settlement_time,
    settlement_times,
)
from qx_actors.domain.spans import runs
from qx_actors.domain.timeutil import (
    FIRST_SETTLEMENT_TIME,
    format_optional_utc,
    format_utc,
    require_utc,
)
from qx_actors.errors import SettlementsBeforeHistoryStart, UnreachableMissingSettlement

__all__ = [
    "FundingSettlementsFacts",
    "FundingSettlementsState",
    "SettlementDownload",
    "settlements_before_history_start",
]

#: The shortest spacing of the schedule (phases B and C); phase A is daily.
_SHORTEST_PERIOD = timedelta(hours=8)


@dataclass(frozen=True, slots=True)
class FundingSettlementsFacts:
    """What the database says about stored settlements; produced by the storage layer."""

    earliest: datetime | None
    latest: datetime | None
    #: every stored settlement time at or after the scan start, ascending
    stored_times_in_scan: tuple[datetime, ...]


@dataclass(frozen=True, slots=True)
class SettlementDownload(GridRange):
    """Settlement times ``[start, end]`` to fetch, both inclusive and on the schedule."""

    GRID = SETTLEMENT_GRID
    NOUN = "settlement download"

    def times(self) -> tuple[datetime, ...]:
        """Every settlement time of the range, ascending."""
        return tuple(settlement_times(self.start, self.end))


@dataclass(frozen=True, slots=True)
class FundingSettlementsState(StoredBounds):
    """The stored settlements judged against ``[reach, now]``; build it with :meth:`evaluate`.

    ``missing``: schedule times in ``[max(scan_from, earliest), latest]`` not stored, ascending
    (never older than ``reach``: :meth:`evaluate` raises for those). Settlements older than
    ``scan_from`` are not looked at, so a hole there is not known. ``scan_from`` is ``None``
    when the scan is off (``funding_settlement_flag_missing_range_h: null``, quantoxide's
    ``None``): no hole is known, ``missing`` is empty and nothing is planned as a repair.
    """

    reach: datetime
    now: datetime
    scan_from: datetime | None
    earliest: datetime | None
    latest: datetime | None
    missing: tuple[datetime, ...]

    @classmethod
    def evaluate(
        cls,
        facts: FundingSettlementsFacts,
        *,
        reach: datetime,
        now: datetime,
        scan_from: datetime | None,
    ) -> FundingSettlementsState:
        """Judge ``facts`` at ``now``; ``reach`` is floored to a settlement time.

        Settlements missing from ``scan_from`` on are looked for; ``scan_from=None``: none is
        (the scan is off, as quantoxide's ``flag_missing_range: None``; the facts' stored
        times are not read).

        ``UnreachableMissingSettlement`` when a settlement in the scan is missing and older
        than the reach. ``ValueError`` if ``now`` is before the first settlement.
        """
        now = require_utc(now, "now")
        head = floor_settlement_time(now)
        # quantoxide floors the reach to the grid (sync/config.rs, with_funding_settlement_reach
        # and the default). A reach older than the first settlement means the first one (the
        # config's ``max``), and one in the future the head: flooring alone keeps it <= head
        # for any reach <= now, the clamp only guards a caller passing a later one.
        reach = require_utc(reach, "reach")
        reach = min(floor_settlement_time(max(reach, FIRST_SETTLEMENT_TIME)), head)
        if scan_from is not None:
            scan_from = require_utc(scan_from, "scan_from")
        planner.check_bounds(facts.earliest, facts.latest)
        missing: tuple[datetime, ...] = ()
        if scan_from is not None and facts.earliest is not None and facts.latest is not None:
            stored = set(facts.stored_times_in_scan)
            # As quantoxide, the scan is not clipped to the reach: a hole below it is reported
            # (it can never be filled, since nothing below the reach is fetched), not ignored.
            start = max(scan_from, facts.earliest)
            missing = tuple(t for t in settlement_times(start, facts.latest) if t not in stored)
            if missing and missing[0] < reach:
                older = sum(1 for t in missing if t < reach)
                raise UnreachableMissingSettlement(
                    f"funding settlement {format_utc(missing[0])} is missing and older than "
                    f"the funding settlement reach {format_utc(reach)} ({older} missing "
                    "before the reach): it can't be repaired (move the reach back before it)"
                )
        return cls(
            reach=reach,
            now=now,
            scan_from=scan_from,
            earliest=facts.earliest,
            latest=facts.latest,
            missing=missing,
        )

    # --- quantoxide's accessors ------------------------------------------------------------

    def is_range_available(self, range_from: datetime, range_to: datetime) -> bool:
        """Whether every settlement of ``[range_from, range_to]`` (both inclusive) is stored.

        False for an empty table, a range not within ``bounds``, or a missing settlement in it.
        Settlement ranges are inclusive (quantoxide asks for ``[ceil(start), floor(end)]`` of a
        backtest), so ``range_from == range_to`` is one instant and allowed; a reversed range is
        a ``ValueError``. Holes older than ``scan_from`` are not known (see :attr:`missing`),
        nor any when the scan is off.
        """
        range_from = require_utc(range_from, "range_from")
        range_to = require_utc(range_to, "range_to")
        if range_from > range_to:
            raise ValueError(
                f"range_from {format_utc(range_from)} after range_to {format_utc(range_to)}"
            )
        bounds = self.bounds
        if bounds is None or not (bounds[0] <= range_from and range_to <= bounds[1]):
            return False
        return not any(range_from <= t <= range_to for t in self.missing)

    def has_missing(self) -> bool:
        """Whether anything of ``[reach, latest]`` is missing: an empty table, a hole in the
        scan (none when it is off), or stored settlements not reaching back to the reach
        (quantoxide's meaning; settlements newer than ``latest`` are not counted, see
        :attr:`is_caught_up`)."""
        earliest = self.earliest
        return earliest is None or bool(self.missing) or self.reach < earliest

    # --- plan ------------------------------------------------------------------------------

    @property
    def head(self) -> datetime:
        """The newest settlement time at or before now."""
        return floor_settlement_time(self.now)

    @property
    def is_caught_up(self) -> bool:
        """Whether the newest settlement is stored and nothing in the scan is missing."""
        return self.latest == self.head and not self.missing

    @property
    def is_complete(self) -> bool:
        """Whether nothing is left to fetch (caught up and down to the reach)."""
        return self.next_download() is None

    def downloads(
        self, *, fetched: Iterable[SettlementDownload] = ()
    ) -> tuple[SettlementDownload, ...]:
        """Every range the plan would fetch now, in order."""
        return planner.not_fetched(self._plan(), fetched)

    def next_download(
        self, *, fetched: Iterable[SettlementDownload] = ()
    ) -> SettlementDownload | None:
        """The next range to fetch, or ``None``; ranges within ``fetched`` are skipped."""
        return planner.first_of(self.downloads(fetched=fetched))

    def unanswered_lower_bound(
        self, fetched: Iterable[SettlementDownload]
    ) -> SettlementDownload | None:
        """The planned ``LOWER_BOUND`` when a range of ``fetched`` already covered it, or ``None``.

        A range fetch pages through all of its range, so a lower bound still planned after
        such a fetch holds nothing the exchange has: its settlements between the reach and the
        stored ones are not available (quantoxide: an empty ``LowerBound`` page).
        """
        done = tuple(fetched)
        for download in self._plan():
            if download.kind is DownloadKind.LOWER_BOUND:
                return download if any(old.covers(download) for old in done) else None
        return None

    def probe_below_reach(self, settlements: int) -> SettlementDownload | None:
        """At most ``settlements`` settlement times just below the reach, or ``None`` when the
        reach is the first settlement (nothing is below it).

        quantoxide's lower-bound request has no lower end, so settlements the exchange lacks
        right at the reach (downtime) are stepped over by older ones. Ours is bounded by the
        reach; this probe asks the same question (does the exchange have anything older?)
        with one page, before the missing lower bound is called the history start.
        """
        if settlements < 1:
            raise ValueError(f"settlements must be >= 1, got {settlements}")
        if self.reach <= FIRST_SETTLEMENT_TIME:
            return None
        end = previous_settlement_time(self.reach)
        # The schedule never has two settlements closer than 8 h, so this holds at most
        # ``settlements`` times (fewer in phase A or across a dead zone).
        oldest = self.reach - settlements * _SHORTEST_PERIOD
        start = floor_settlement_time(max(oldest, FIRST_SETTLEMENT_TIME))
        if start < oldest:
            start = next_settlement_time(start)
        return SettlementDownload(DownloadKind.LOWER_BOUND, min(start, end), end)

    def _plan(self) -> list[SettlementDownload]:
        head, earliest, latest = self.head, self.earliest, self.latest
        upper_start = None
        if latest is not None and latest < head:
            upper_start = next_settlement_time(latest)
        lower_end = None
        if earliest is not None and earliest > self.reach:
            lower_end = previous_settlement_time(earliest)
            if lower_end < self.reach:
                lower_end = None
        return planner.plan(
            SettlementDownload,
            DownloadKind.MISSING,
            lower=self.reach,
            head=head,
            stored=latest is not None,
            upper_start=upper_start,
            repairs=runs(self.missing, SETTLEMENT_GRID) if self.missing else (),
            lower_end=lower_end,
        )

    def summary(self) -> dict[str, Any]:
        """A flat, JSON-ready description for the CLI and the logs."""
        iso = format_optional_utc
        return {
            "reach": iso(self.reach),
            "now": iso(self.now),
            "scan_from": iso(self.scan_from),
            "earliest": iso(self.earliest),
            "latest": iso(self.latest),
            "missing": len(self.missing),
            "first_missing": [format_utc(t) for t in self.missing[:5]],
            "caught_up": self.is_caught_up,
            "complete": self.is_complete,
        }


def settlements_before_history_start(
    state: FundingSettlementsState,
    lower: SettlementDownload,
    probe: SettlementDownload | None,
) -> SettlementsBeforeHistoryStart:
    """The error for an exchange with nothing in ``lower`` (down to the reach) nor ``probe``.

    quantoxide names the oldest stored settlement as the history start (``history_start: to``
    of the empty ``LowerBound``).
    """
    start = "?" if state.earliest is None else format_utc(state.earliest)
    below = (
        "nothing is older than the first settlement of the schedule"
        if probe is None
        else f"nor in [{format_utc(probe.start)} .. {format_utc(probe.end)}]"
    )
    return SettlementsBeforeHistoryStart(
        f"the exchange has no funding settlements before {start}: none in "
        f"[{format_utc(lower.start)} .. {format_utc(lower.end)}] ({below}), so the funding "
        f"settlement reach {format_utc(state.reach)} is before its history start (move the "
        f"reach to {start} or later)"
    )
