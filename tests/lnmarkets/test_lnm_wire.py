"""Wire Structs and converters of the LN Markets APIs."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import msgspec
import pytest

from qx_actors.domain.values import Candle, FundingSettlement, PriceTick
from qx_actors.errors import ExchangeBodyError, ExchangeDecodeError, is_recoverable
from qx_actors.lnmarkets import wire

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_candle_page_offsets_converted_to_utc() -> None:
    """A time with a non-zero offset becomes the same instant in UTC."""
    body = (
        b'{"data":[{"time":"2026-01-01T01:00:00.000+01:00","open":1,"high":1,"low":1,'
        b'"close":1,"volume":0}],"nextCursor":null}'
    )
    candles = wire.to_candles(wire.decode(wire.candle_page_decoder, body, "candles"))
    assert [Candle(T0, 1.0, 1.0, 1.0, 1.0, 0.0)] == candles
    assert UTC is candles[0].time.tzinfo


def test_settlement_page() -> None:
    """A settlement page decodes camelCase fields into domain settlements."""
    body = json.dumps(
        {
            "data": [
                {
                    "id": "6a1c8e0e-3f1b-4c38-9a53-3a3f2f9c1e11",
                    "time": "2026-01-01T00:00:00.000Z",
                    "fixingPrice": 87654.5,
                    "fundingRate": -0.00005,
                }
            ],
            "nextCursor": "2026-01-01T00:00:00.000Z",
        }
    ).encode()
    page = wire.decode(wire.settlement_page_decoder, body, "settlements")
    expected = FundingSettlement("6a1c8e0e-3f1b-4c38-9a53-3a3f2f9c1e11", T0, 87654.5, -0.00005)
    assert [expected] == wire.to_settlements(page)
    assert page.next_cursor == T0


def test_decode_error_splits_path() -> None:
    """The msgspec path goes to ExchangeDecodeError.path; the message keeps the reason."""
    with pytest.raises(ExchangeDecodeError) as info:
        wire.decode(wire.candle_page_decoder, b'{"data":[{"time":3}]}', "/v3/futures/candles")
    assert info.value.path == "$.data[0].time"
    assert info.value.endpoint == "/v3/futures/candles"
    assert str(info.value).startswith("invalid JSON from /v3/futures/candles at $.data[0].time")


@pytest.mark.parametrize("body", [b'{"data":[{"time":"2026-01-01T00:00', b"{]", b"", b"pong"])
def test_body_that_is_not_json_is_a_body_error(body: bytes) -> None:
    """Bytes that are not JSON at all are ExchangeBodyError (recoverable), not a decode error;
    the text names the endpoint and status and quotes the body."""
    with pytest.raises(ExchangeBodyError) as info:
        wire.decode(wire.candle_page_decoder, body, "/v3/futures/candles", status=200)
    assert is_recoverable(info.value)
    assert not isinstance(info.value, ExchangeDecodeError)
    assert str(info.value).startswith("/v3/futures/candles: HTTP 200 body is not JSON (")
    assert str(info.value).endswith(body.decode() or "(empty body)")


def test_excerpt_is_one_short_line() -> None:
    """An excerpt collapses whitespace and keeps at most 200 characters, marking the cut."""
    assert "a b c" == wire.excerpt(b"a\n  b\tc")
    assert "(empty body)" == wire.excerpt(b"  \n")
    long = wire.excerpt(b"y" * 10_000)
    assert 200 == len(long) and long.endswith("\u2026")
    assert "x" * 200 == wire.excerpt(b"x" * 200)
    assert 20 == len(wire.excerpt(b"z" * 50, limit=20))


def test_missing_field_names_it() -> None:
    """A missing required field is named with its path."""
    with pytest.raises(ExchangeDecodeError) as info:
        wire.decode(wire.settlement_page_decoder, b'{"data":[{"id":"x"}]}', "s")
    assert info.value.path == "$.data[0]"
    assert "time" in str(info.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1767225600000, T0),
        (1767225600123.0, T0.replace(microsecond=123000)),
        ("2026-01-01T00:00:00.123Z", T0.replace(microsecond=123000)),
    ],
)
def test_last_price_time_forms(raw: object, expected: datetime) -> None:
    """Stream times decode from epoch ms numbers and RFC 3339 strings."""
    body = msgspec.json.encode({"time": raw, "lastPrice": 90000})
    tick = wire.to_tick(wire.last_price_decoder.decode(body))
    assert PriceTick(expected, 90000.0) == tick


def test_rpc_frame_dispatch_fields() -> None:
    """An RPC frame keeps params/result raw; absent members are empty."""
    frame = wire.rpc_frame_decoder.decode(b'{"jsonrpc":"2.0","id":"ab","result":"pong"}')
    assert (
        frame.id,
        frame.method,
        bytes(frame.params),
        bytes(frame.result),
    ) == ("ab", None, b"", b'"pong"')


def test_encode_requests() -> None:
    """Requests encode as JSON-RPC 2.0; params only when given."""
    ping = json.loads(wire.encode_request(wire.RpcRequest("ping", "01")))
    assert ping == {"jsonrpc": "2.0", "method": "ping", "id": "01"}
    sub = json.loads(
        wire.encode_request(wire.RpcRequest("subscribe", "02", wire.SubscribeParams(["t"])))
    )
    assert sub["params"] == {"topics": ["t"]}
