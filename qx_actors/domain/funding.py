"""Funding-settlement state and download plan (pure arithmetic over what the database holds).

The settlements table must hold every settlement time of the schedule in ``[reach, now]``.
The plan, in order: ``LATEST`` (table empty), ``UPPER_BOUND`` (newer settlements exist),
``MISSING`` (holes inside the scanned range, consecutive ones grouped), ``LOWER_BOUND``
(older settlements down to the reach). As for candles, the caller passes the ranges already
fetched in the current pass, so that a settlement the exchange does not have is not asked for
again and again.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from qx_actors.domain.settlements import (
    ceil_settlement_time,
    floor_settlement_time,
    is_valid_settlement_time,
    next_settlement_time,
    previous_settlement_time,
    settlement_times,
)
from qx_actors.domain.timeutil import require_utc
from qx_actors.domain.validation import format_utc


@dataclass(frozen=True, slots=True)
class FundingSettlementsFacts:
    """What the database says about stored settlements; produced by the storage layer."""

    earliest: datetime | None
    latest: datetime | None
    #: every stored settlement time at or after the scan start, ascending
    stored_times_in_scan: tuple[datetime, ...]


class SettlementDownloadKind(enum.Enum):
    """Why a settlement range is fetched."""

    LATEST = "latest"
    UPPER_BOUND = "upper_bound"
    MISSING = "missing"
    LOWER_BOUND = "lower_bound"


def _check_settlement_time(value: datetime, what: str) -> datetime:
    value = require_utc(value, what)
    if not is_valid_settlement_time(value):
        raise ValueError(f"{what} {format_utc(value)} is not a settlement time")
    return value


@dataclass(frozen=True, slots=True)
class SettlementDownload:
    """Settlement times ``[start, end]`` to fetch, both inclusive and on the schedule."""

    kind: SettlementDownloadKind
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _check_settlement_time(self.start, "download start"))
        object.__setattr__(self, "end", _check_settlement_time(self.end, "download end"))
        if self.end < self.start:
            raise ValueError(f"empty settlement download {self}")

    def times(self) -> tuple[datetime, ...]:
        """Every settlement time of the range, ascending."""
        return tuple(settlement_times(self.start, self.end))

    def covers(self, other: SettlementDownload) -> bool:
        """Whether ``other``'s times all lie within this range."""
        return self.start <= other.start and other.end <= self.end

    def __str__(self) -> str:
        return f"{self.kind.value} [{format_utc(self.start)} .. {format_utc(self.end)}]"


@dataclass(frozen=True, slots=True)
class FundingSettlementsState:
    """The stored settlements judged against ``[reach, now]``; build it with :meth:`evaluate`.

    ``missing``: schedule times in ``[max(scan_from, reach, earliest), latest]`` not stored.
    """

    reach: datetime
    now: datetime
    scan_from: datetime
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
        scan_from: datetime,
    ) -> FundingSettlementsState:
        """Judge ``facts`` at ``now``; ``reach`` is rounded up to a settlement time.

        ``ValueError`` if ``now`` is before the first settlement.
        """
        now = require_utc(now, "now")
        head = floor_settlement_time(now)
        reach = min(ceil_settlement_time(require_utc(reach, "reach")), head)
        scan_from = require_utc(scan_from, "scan_from")
        if (facts.earliest is None) != (facts.latest is None):
            raise ValueError("earliest and latest must both be set or both be None")
        missing: tuple[datetime, ...] = ()
        if facts.earliest is not None and facts.latest is not None:
            stored = set(facts.stored_times_in_scan)
            start = max(scan_from, reach, facts.earliest)
            missing = tuple(t for t in settlement_times(start, facts.latest) if t not in stored)
        return cls(
            reach=reach,
            now=now,
            scan_from=scan_from,
            earliest=facts.earliest,
            latest=facts.latest,
            missing=missing,
        )

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
        done = tuple(fetched)
        return tuple(r for r in self._plan() if not any(old.covers(r) for old in done))

    def next_download(
        self, *, fetched: Iterable[SettlementDownload] = ()
    ) -> SettlementDownload | None:
        """The next range to fetch, or ``None``; ranges within ``fetched`` are skipped."""
        plan = self.downloads(fetched=fetched)
        return plan[0] if plan else None

    def _plan(self) -> list[SettlementDownload]:
        kind = SettlementDownloadKind
        head = self.head
        earliest, latest = self.earliest, self.latest
        if earliest is None or latest is None:
            return [SettlementDownload(kind.LATEST, self.reach, head)]
        plan: list[SettlementDownload] = []
        if latest < head:
            plan.append(SettlementDownload(kind.UPPER_BOUND, next_settlement_time(latest), head))
        plan.extend(
            SettlementDownload(kind.MISSING, first, last)
            for first, last in _consecutive_runs(self.missing)
        )
        if earliest > self.reach:
            lower_end = previous_settlement_time(earliest)
            if lower_end >= self.reach:
                plan.append(SettlementDownload(kind.LOWER_BOUND, self.reach, lower_end))
        return plan

    def summary(self) -> dict[str, Any]:
        """A flat, JSON-ready description for the CLI and the logs."""

        def iso(value: datetime | None) -> str | None:
            return None if value is None else format_utc(value)

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


def _consecutive_runs(times: tuple[datetime, ...]) -> list[tuple[datetime, datetime]]:
    """Group ascending settlement times into runs of schedule-consecutive times."""
    runs: list[tuple[datetime, datetime]] = []
    for time in times:
        if runs and next_settlement_time(runs[-1][1]) == time:
            runs[-1] = (runs[-1][0], time)
        else:
            runs.append((time, time))
    return runs
