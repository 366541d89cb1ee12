"""Price-history state and download plan (pure arithmetic over what the database holds)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


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
