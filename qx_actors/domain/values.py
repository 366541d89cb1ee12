"""Domain values: what the engine stores and publishes (frozen, no I/O).

All times are timezone-aware UTC ``datetime`` objects.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

#: The most items the exchange returns per REST page (candles and settlements alike): the
#: default and the ceiling of ``sync.price_history_batch_size``.
EXCHANGE_PAGE_LIMIT = 1000


class Candle(msgspec.Struct, frozen=True, gc=False):
    """One 1-minute OHLC candle; ``time`` is the start of its minute."""

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
