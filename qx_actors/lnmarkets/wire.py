"""Wire formats of LN Markets: REST v3 pages and Stream API (JSON-RPC 2.0) frames.

The Structs mirror the exchange's JSON exactly (camelCase on the wire) and are decoded with
msgspec, times straight into timezone-aware ``datetime``. Converters to the domain values
(:mod:`qx_actors.domain.values`) sit at the bottom; nothing else in the package sees these
Structs. A body that is not JSON at all (cut short, garbled) is
:class:`~qx_actors.errors.ExchangeBodyError` (a transport failure: retried, recoverable);
well-formed JSON of the wrong shape is :class:`~qx_actors.errors.ExchangeDecodeError` naming
the field path (msgspec's ``$.data[3].open``) and the endpoint (the REST client adds the value
found there; retried, then recoverable, like any REST error).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

import msgspec

from qx_actors.domain.timeutil import from_epoch_ms
from qx_actors.domain.values import Candle, FundingSettlement, PriceTick
from qx_actors.errors import ExchangeBodyError, ExchangeDecodeError

__all__ = [
    "EXCERPT_CHARS",
    "LAST_PRICE_TOPIC",
    "CandlePageMsg",
    "ErrorBody",
    "LastPriceData",
    "NotificationParams",
    "RpcErrorObj",
    "RpcFrame",
    "RpcRequest",
    "SettlementPageMsg",
    "SubscribeParams",
    "SubscribeResult",
    "UtcTime",
    "WireCandle",
    "WireSettlement",
    "candle_page_decoder",
    "decode",
    "decode_error",
    "encode_request",
    "error_body_decoder",
    "excerpt",
    "last_price_decoder",
    "notification_params_decoder",
    "rpc_frame_decoder",
    "settlement_page_decoder",
    "subscribe_result_decoder",
    "tick_time",
    "to_candles",
    "to_settlements",
    "to_tick",
]

#: A time that must carry an offset (``Z`` on the wire); naive times are decode errors.
UtcTime = Annotated[datetime, msgspec.Meta(tz=True)]

#: The Stream API topic of the BTC/USD inverse-futures last price.
LAST_PRICE_TOPIC = "futures/inverse/btc_usd/lastPrice"

# --- REST v3 ------------------------------------------------------------------------------

_I = TypeVar("_I")


class _PageMsg(msgspec.Struct, Generic[_I], frozen=True, rename="camel"):
    """A REST v3 page: ``{"data": [item...], "nextCursor": time | null}``, newest first."""

    data: list[_I]
    next_cursor: UtcTime | None = None


class WireCandle(msgspec.Struct, frozen=True, gc=False):
    """One candle of ``GET /v3/futures/candles``."""

    time: UtcTime
    open: float
    high: float
    low: float
    close: float
    volume: float


class CandlePageMsg(_PageMsg[WireCandle], frozen=True, rename="camel"):
    """``{"data": [candle...], "nextCursor": time | null}``, newest first."""


class WireSettlement(msgspec.Struct, frozen=True, gc=False, rename="camel"):
    """One settlement of ``GET /v3/futures/funding-settlements``."""

    id: str
    time: UtcTime
    fixing_price: float
    funding_rate: float


class SettlementPageMsg(_PageMsg[WireSettlement], frozen=True, rename="camel"):
    """``{"data": [settlement...], "nextCursor": time | null}``, newest first."""


class ErrorBody(msgspec.Struct, frozen=True):
    """The JSON body of a non-2xx answer: ``{"message", "code"?, "details"?}``."""

    message: str
    code: str | int | None = None
    details: Any = None


# --- Stream API (JSON-RPC 2.0) ------------------------------------------------------------


class RpcErrorObj(msgspec.Struct, frozen=True):
    """The ``error`` member of a JSON-RPC answer."""

    code: int
    message: str
    data: Any = None


class RpcFrame(msgspec.Struct, frozen=True):
    """Any incoming JSON-RPC frame: a response (``id`` + ``result``/``error``) or a
    notification (``method`` + ``params``). ``params``/``result`` stay raw until dispatched;
    an absent member is an empty :class:`msgspec.Raw`."""

    jsonrpc: str = "2.0"
    id: str | int | None = None
    method: str | None = None
    params: msgspec.Raw = msgspec.Raw()
    result: msgspec.Raw = msgspec.Raw()
    error: RpcErrorObj | None = None


class SubscribeParams(msgspec.Struct, frozen=True):
    """``params`` of a ``subscribe`` request."""

    topics: list[str]


class RpcRequest(msgspec.Struct, frozen=True):
    """An outgoing JSON-RPC request (``subscribe``, ``ping``, ...); no params when unset."""

    method: str
    id: str
    params: SubscribeParams | msgspec.UnsetType = msgspec.UNSET
    jsonrpc: str = "2.0"


class SubscribeResult(msgspec.Struct, frozen=True):
    """``result`` of a ``subscribe`` response."""

    subscribed: list[str]


class NotificationParams(msgspec.Struct, frozen=True):
    """``params`` of a ``subscription`` notification; ``data`` decoded by topic."""

    topic: str
    data: msgspec.Raw


class LastPriceData(msgspec.Struct, frozen=True, gc=False, rename="camel"):
    """``data`` of a last-price notification: time as epoch ms or RFC 3339."""

    time: UtcTime | float
    last_price: float


# --- decoding -----------------------------------------------------------------------------

_T = TypeVar("_T")
_PATH_RE = re.compile(r"^(?P<msg>.*?) - at `(?P<path>\$[^`]*)`$", re.DOTALL)

candle_page_decoder = msgspec.json.Decoder(CandlePageMsg)
settlement_page_decoder = msgspec.json.Decoder(SettlementPageMsg)
error_body_decoder = msgspec.json.Decoder(ErrorBody)
rpc_frame_decoder = msgspec.json.Decoder(RpcFrame)
subscribe_result_decoder = msgspec.json.Decoder(SubscribeResult)
notification_params_decoder = msgspec.json.Decoder(NotificationParams)
last_price_decoder = msgspec.json.Decoder(LastPriceData)
_encoder = msgspec.json.Encoder()


def decode_error(exc: msgspec.DecodeError, endpoint: str) -> ExchangeDecodeError:
    """Map a msgspec error to :class:`ExchangeDecodeError`, splitting out the field path."""
    text = str(exc)
    match = _PATH_RE.match(text)
    if match is None:
        return ExchangeDecodeError(text, endpoint=endpoint)
    return ExchangeDecodeError(match["msg"], path=match["path"], endpoint=endpoint)


#: How many characters of a body an error message quotes.
EXCERPT_CHARS = 200


def excerpt(body: bytes, limit: int = EXCERPT_CHARS) -> str:
    """The start of ``body`` as one line of text (whitespace runs collapsed), at most ``limit``
    characters, ``…`` marking a cut; ``(empty body)`` when there is nothing to show."""
    text = " ".join(body[: limit * 4].decode("utf-8", errors="replace").split())
    if not text:
        return "(empty body)"
    return text if len(text) <= limit and len(body) <= limit * 4 else text[: limit - 1] + "…"


def decode(
    decoder: msgspec.json.Decoder[_T], body: bytes, endpoint: str, *, status: int | None = None
) -> _T:
    """Decode ``body`` (of an answer with HTTP ``status``, if given) with ``decoder``.

    Not JSON at all (truncated, garbled): :class:`ExchangeBodyError` naming the endpoint, the
    status and quoting the body's start. Well-formed JSON of the wrong shape (a wrong type, a
    missing field): :class:`ExchangeDecodeError` naming the field path.
    """
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise decode_error(exc, endpoint) from exc
    except msgspec.DecodeError as exc:
        answer = f"HTTP {status} body" if status is not None else "body"
        raise ExchangeBodyError(
            f"{endpoint}: {answer} is not JSON ({exc}; {len(body)} bytes): {excerpt(body)}"
        ) from exc


def encode_request(request: RpcRequest) -> str:
    """A JSON-RPC request as a text frame."""
    return _encoder.encode(request).decode()


# --- converters to domain values ----------------------------------------------------------


def _utc(value: datetime) -> datetime:
    # msgspec returns datetime.timezone.utc for "Z"; only other offsets need converting.
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def to_candles(page: CandlePageMsg) -> list[Candle]:
    """Domain candles of a page, in the order sent (newest first)."""
    return [Candle(_utc(c.time), c.open, c.high, c.low, c.close, c.volume) for c in page.data]


def to_settlements(page: SettlementPageMsg) -> list[FundingSettlement]:
    """Domain settlements of a page, in the order sent (newest first)."""
    return [
        FundingSettlement(s.id, _utc(s.time), s.fixing_price, s.funding_rate) for s in page.data
    ]


def tick_time(value: datetime | float) -> datetime:
    """A Stream API time (epoch ms number or RFC 3339) as UTC datetime."""
    if isinstance(value, datetime):
        return _utc(value)
    return from_epoch_ms(value)


def to_tick(data: LastPriceData) -> PriceTick:
    """A domain tick from a last-price notification."""
    return PriceTick(tick_time(data.time), data.last_price)
