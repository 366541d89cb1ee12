"""The exchange: LN Markets wire formats (msgspec), REST v3 client, Stream API client."""

from qx_actors.lnmarkets.rest import (
    CandlePage,
    RateLimiter,
    RestClient,
    RestCounters,
    SettlementPage,
)
from qx_actors.lnmarkets.stream import LAST_PRICE_TOPIC, StreamClient, StreamCounters
from qx_actors.lnmarkets.wire import Ticker

__all__ = [
    "LAST_PRICE_TOPIC",
    "CandlePage",
    "RateLimiter",
    "RestClient",
    "RestCounters",
    "SettlementPage",
    "StreamClient",
    "StreamCounters",
    "Ticker",
]
