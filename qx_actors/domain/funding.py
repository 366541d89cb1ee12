"""Funding-settlement state and download plan (pure arithmetic over what the database holds)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class FundingSettlementsFacts:
    """What the database says about stored settlements; produced by the storage layer."""

    earliest: datetime | None
    latest: datetime | None
    #: every stored settlement time at or after the scan start, ascending
    stored_times_in_scan: tuple[datetime, ...]
