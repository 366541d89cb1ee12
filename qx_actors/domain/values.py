"""Domain values: what the engine stores and publishes (frozen, no I/O).

All times are timezone-aware UTC ``datetime`` objects.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

__all__ = [
    "EXCHANGE_PAGE_LIMIT",
    "RESOLUTIONS",
    "Candle",
    "FundingSettlement",
    "PriceTick",
]

#: The most items the exchange returns per REST page (candles and settlements alike): the
#: default and the ceiling of ``sync.price_history_batch_size``.
EXCHANGE_PAGE_LIMIT = 1000


#: Candle resolutions by their wire names, finest first: what a live lookback is counted in
#: and what the reader consolidates 1-minute candles into (the storage layer derives its
#: bucket seconds and its rollup tables from this).
RESOLUTIONS: dict[str, timedelta] = {
    **{f"{minutes}m": timedelta(minutes=minutes) for minutes in (1, 3, 5, 10, 15, 30, 45)},
    **{f"{hours}h": timedelta(hours=hours) for hours in (1, 2, 3, 4)},
    "1d": timedelta(days=1),
}


class Candle(msgspec.Struct, frozen=True, gc=False):
    """One 1-minute OHLC candle; ``time`` is the start of its minute.

    Read back from storage (``qx_actors.CandleRow``) it may stand for a bucket of minutes.
    """

    time: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float


class PriceTick(msgspec.Struct, frozen=True, gc=False):
    """One last-price tick from the Stream API."""

    time: datetime
    last_price: float


class FundingSettlement(msgspec.Struct, frozen=True, gc=False):
    """One funding settlement; ``id`` is the exchange's UUID."""

    id: str
    time: datetime
    fixing_price: float
    funding_rate: float
