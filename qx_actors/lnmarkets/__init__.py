"""The exchange: LN Markets wire formats (msgspec), REST v3 client, Stream API client."""

from qx_actors.lnmarkets.rest import (
    CandlePage,
    RateLimiter,
    RestClient,
    RestCounters,
    SettlementPage,
)
from qx_actors.lnmarkets.stream import LAST_PRICE_TOPIC, StreamClient, StreamConnection
from qx_actors.lnmarkets.transport import HttpRequest, HttpResponse, MockTransport, Transport

__all__ = [
    "LAST_PRICE_TOPIC",
    "CandlePage",
    "HttpRequest",
    "HttpResponse",
    "MockTransport",
    "RateLimiter",
    "RestClient",
    "RestCounters",
    "SettlementPage",
    "StreamClient",
    "StreamConnection",
    "Transport",
]
