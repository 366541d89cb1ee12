"""RestClient over a MockTransport: paging, retries and error mapping without a socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from lnm_scripted import T0, Market
from structlog.testing import capture_logs

from qx_actors.domain.timeutil import HOUR, MINUTE
from qx_actors.errors import (
    ExchangeBodyError,
    ExchangeClientError,
    ExchangeDecodeError,
    ExchangeServerError,
    ExchangeTimeout,
    ExchangeTransportError,
    InvalidMarketData,
    is_recoverable,
)
from qx_actors.lnmarkets import HttpRequest, HttpResponse, MockTransport, RestClient
from qx_actors.lnmarkets.transport import IncompleteBody

Arun = Callable[..., Any]
EMPTY_PAGE = {"data": [], "nextCursor": None}


def answer(body: Any, status: int = 200, **headers: str) -> HttpResponse:
    """A JSON answer."""
    return HttpResponse(status, json.dumps(body).encode(), headers=headers)


def fake_client(transport: MockTransport, **kw: Any) -> RestClient:
    """A client over ``transport`` with test-sized timings (no rate limit, 10 ms cooldown)."""
    kw.setdefault("rate_limit_per_s", None)
    kw.setdefault("error_cooldown_s", 0.01)
    return RestClient("http://exchange.invalid", transport=transport, **kw)


def test_candle_pages_follow_the_cursor(arun: Arun) -> None:
    """candle_pages pages backwards with nextCursor and yields [start, end] exactly once."""
    market = Market(T0, 250)
    transport = MockTransport(lambda request: answer(market.candle_page(dict(request.params))))
    start, end = T0 + 10 * MINUTE, T0 + 209 * MINUTE

    async def main() -> list[list[Any]]:
        async with fake_client(transport) as rest:
            return [page async for page in rest.candle_pages(start, end, limit=50)]

    pages = arun(main())
    times = [candle.time for page in pages for candle in page]
    assert [end - MINUTE * i for i in range(200)] == times
    assert {"/v3/futures/candles"} == {request.path for request in transport.requests}
    assert "cursor" not in transport.requests[0].params
    assert all("cursor" in request.params for request in transport.requests[1:])
    assert {"1m"} == {request.params["range"] for request in transport.requests}


def test_settlement_pages_over_a_fake(arun: Arun) -> None:
    """settlement_pages asks the settlements endpoint, without a range."""
    market = Market(T0, 20, step=8 * HOUR)
    transport = MockTransport(lambda request: answer(market.settlement_page(dict(request.params))))

    async def main() -> list[Any]:
        async with fake_client(transport) as rest:
            pages = rest.settlement_pages(T0, T0 + 40 * HOUR, limit=2)
            return [item async for page in pages for item in page]

    items = arun(main())
    assert [T0 + 40 * HOUR - 8 * HOUR * i for i in range(6)] == [s.time for s in items]
    assert all(r.path == "/v3/futures/funding-settlements" for r in transport.requests)
    assert all("range" not in r.params for r in transport.requests)


def test_5xx_retried_then_answered(arun: Arun) -> None:
    """Two 503s then a page: three attempts, two retries logged with the status."""
    answers = iter([answer({"message": "maintenance"}, 503)] * 2 + [answer(EMPTY_PAGE)])
    transport = MockTransport(lambda request: next(answers))

    async def main() -> Any:
        async with fake_client(transport) as rest:
            with capture_logs() as logs:
                page = await rest.candles_page(start=None, end=None)
            return page, rest.counters, logs

    page, counters, logs = arun(main())
    assert [] == page.candles
    assert (3, 2, 2, 1) == (
        counters.requests,
        counters.retries,
        counters.errors,
        counters.responses_ok,
    )
    retries = [e for e in logs if e["event"] == "rest_request_retry"]
    assert [(1, 503), (2, 503)] == [(e["trial"], e["status"]) for e in retries]


def test_5xx_exhausted_is_a_recoverable_server_error(arun: Arun) -> None:
    """A 502 on every trial is ExchangeServerError keeping the exchange's message and code."""
    transport = MockTransport(lambda request: answer({"message": "bad gateway", "code": 7}, 502))

    async def main() -> ExchangeServerError:
        async with fake_client(transport, error_max_trials=2) as rest:
            with pytest.raises(ExchangeServerError) as info:
                await rest.settlements_page(start=None, end=None)
            return info.value

    error = arun(main())
    assert (502, "bad gateway", 7) == (error.status, error.message, error.extra["code"])
    assert "/v3/futures/funding-settlements" == error.endpoint
    assert is_recoverable(error)
    assert 2 == len(transport.requests)


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(400, ExchangeClientError), (404, ExchangeClientError), (408, ExchangeServerError),
     (429, ExchangeServerError), (500, ExchangeServerError)],
)  # fmt: skip
def test_status_classification(arun: Arun, status: int, error_type: type[Exception]) -> None:
    """408, 429 and 5xx are server errors, other 4xx client errors; all recoverable."""
    transport = MockTransport(lambda request: HttpResponse(status, b"", reason="Nope"))

    async def main() -> Exception:
        async with fake_client(transport, error_max_trials=1) as rest:
            with pytest.raises(Exception) as info:
                await rest.candles_page(start=None, end=None)
            return info.value

    error = arun(main())
    assert error_type is type(error)
    assert f"HTTP {status} /v3/futures/candles: Nope" == str(error)
    assert is_recoverable(error)


def test_429_waits_retry_after(arun: Arun) -> None:
    """A 429's Retry-After replaces the cooldown before the next trial."""
    answers = iter([answer({"message": "slow"}, 429, **{"Retry-After": "0.05"}), answer({})])
    transport = MockTransport(lambda request: next(answers))

    async def main() -> Any:
        async with fake_client(transport, error_cooldown_s=30.0, error_max_trials=2) as rest:
            with capture_logs() as logs, pytest.raises(ExchangeDecodeError):
                await rest.candles_page(start=None, end=None)
            return rest.counters, logs

    counters, logs = arun(main())
    assert 1 == counters.rate_limited
    assert [0.05] == [e["wait_s"] for e in logs if e["event"] == "rest_request_retry"]


def test_wrong_shape_is_retried_then_recoverable(arun: Arun) -> None:
    """Well-formed JSON of the wrong shape is ExchangeDecodeError naming the path and the value,
    retried ``error_max_trials`` times with the cooldown (as quantoxide's SDK deserialisation
    errors), then recoverable."""
    transport = MockTransport(lambda request: answer({"data": [{"time": 5}]}))

    async def main() -> tuple[ExchangeDecodeError, Any, list[dict[str, Any]]]:
        async with fake_client(transport, error_max_trials=3) as rest:
            with capture_logs() as logs, pytest.raises(ExchangeDecodeError) as info:
                await rest.candles_page(start=None, end=None)
            return info.value, rest.counters, logs

    error, counters, logs = arun(main())
    assert (
        "invalid JSON from /v3/futures/candles at $.data[0].time: "
        "Expected `datetime`, got `int` (value 5)"
    ) == str(error)
    assert is_recoverable(error)
    assert 3 == len(transport.requests)
    assert (3, 2, 3) == (counters.requests, counters.retries, counters.errors)
    retries = [e for e in logs if e["event"] == "rest_request_retry"]
    assert [("ExchangeDecodeError", 0.01)] * 2 == [(e["error_type"], e["wait_s"]) for e in retries]


def test_wrong_shape_once_is_retried_and_answered(arun: Arun) -> None:
    """One undecodable page, then the right one: the caller gets the right page, no error."""
    market = Market(T0, 20)
    bad = iter([answer({"data": [{"time": "2026-01-01T00:00:00.000Z", "open": "x"}]})])

    def handle(request: HttpRequest) -> HttpResponse:
        return next(bad, None) or answer(market.candle_page(dict(request.params)))

    transport = MockTransport(handle)

    async def main() -> list[Any]:
        async with fake_client(transport) as rest:
            return [c.time async for page in rest.candle_pages(T0, T0 + 19 * MINUTE) for c in page]

    assert market.times() == arun(main())
    assert 2 == len(transport.requests)


def test_missing_field_names_the_item_it_is_missing_from(arun: Arun) -> None:
    """A missing field: the path is the item, the value quoted is the item (cut short)."""
    item = {"id": "x" * 100, "time": "2026-01-01T08:00:00.000Z", "fixingPrice": 1}
    transport = MockTransport(lambda request: answer({"data": [item]}))

    async def main() -> ExchangeDecodeError:
        async with fake_client(transport, error_max_trials=1) as rest:
            with pytest.raises(ExchangeDecodeError) as info:
                await rest.settlements_page(start=None, end=None)
            return info.value

    error = arun(main())
    assert "$.data[0]" == error.path
    assert "fundingRate" in error.detail
    assert error.value is not None and error.value.startswith('{"id":"xxx')
    assert 80 == len(error.value) and error.value.endswith("\u2026")
    assert "2026-01-01T08:00:00.000Z" == error.item_time


def candle_item(minute: int, **fields: float) -> dict[str, Any]:
    """A valid candle at ``T0 + minute`` (open 100, high 110, low 90, close 105), ``fields``
    replaced."""
    time = (T0 + minute * MINUTE).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {"time": time, "open": 100.0, "high": 110.0, "low": 90.0, "close": 105.0,
            "volume": 1.0, **fields}  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"low": 106.0}, "candle 2026-01-01T00:01:00Z: low 106.0 is above open 100.0"),
        ({"high": 101.0}, "candle 2026-01-01T00:01:00Z: high 101.0 is below close 105.0"),
        ({"close": -1.0}, "candle 2026-01-01T00:01:00Z: close -1.0 is not a finite price > 0"),
        ({"volume": -2.0}, "candle 2026-01-01T00:01:00Z: volume -2.0 is not a finite number >= 0"),
    ],
)  # fmt: skip
def test_invalid_candle_page_is_retried_then_recoverable(
    arun: Arun, fields: dict[str, float], message: str
) -> None:
    """A page against the exchange's rules is InvalidMarketData naming the endpoint, the
    candle's time, the field and its value; asked ``error_max_trials`` times, then
    recoverable."""
    body = {"data": [candle_item(2), candle_item(1, **fields), candle_item(0)], "nextCursor": None}
    transport = MockTransport(lambda request: answer(body))

    async def main() -> tuple[InvalidMarketData, Any]:
        async with fake_client(transport, error_max_trials=2) as rest:
            with pytest.raises(InvalidMarketData) as info:
                async for _ in rest.candle_pages(T0, T0 + 2 * MINUTE):
                    raise AssertionError("a page of a bad answer was yielded")
            return info.value, rest.counters

    error, counters = arun(main())
    assert f"/v3/futures/candles: {message}" == str(error)
    assert "/v3/futures/candles" == error.endpoint
    assert is_recoverable(error)
    assert (2, 1, 2) == (counters.requests, counters.retries, counters.errors)


def test_invalid_page_once_is_retried_and_answered(arun: Arun) -> None:
    """Unordered candles once, then the right page: answered, no error."""
    good = {"data": [candle_item(1), candle_item(0)], "nextCursor": None}
    answers = iter([answer({"data": good["data"][::-1], "nextCursor": None}), answer(good)])
    transport = MockTransport(lambda request: next(answers))

    async def main() -> Any:
        async with fake_client(transport) as rest:
            return await rest.candles_page(start=None, end=None)

    page = arun(main())
    assert [T0 + MINUTE, T0] == [c.time for c in page.candles]
    assert 2 == len(transport.requests)


def test_unordered_settlements_are_retried_then_recoverable(arun: Arun) -> None:
    """Settlements out of order: InvalidMarketData naming both times, retried, recoverable."""
    market = Market(T0, 4, step=8 * HOUR)
    body = market.settlement_page({})
    body["data"][1], body["data"][2] = body["data"][2], body["data"][1]
    transport = MockTransport(lambda request: answer(body))

    async def main() -> InvalidMarketData:
        async with fake_client(transport, error_max_trials=3) as rest:
            with pytest.raises(InvalidMarketData) as info:
                await rest.settlements_page(start=None, end=None)
            return info.value

    error = arun(main())
    assert (
        "/v3/futures/funding-settlements: funding settlements not strictly descending at "
        "2026-01-01T16:00:00Z (it follows 2026-01-01T08:00:00Z)"
    ) == str(error)
    assert is_recoverable(error)
    assert 3 == len(transport.requests)


def test_no_answer_errors(arun: Arun) -> None:
    """Not JSON, a cut body, a reset connection and a hung request map to their errors."""

    def failing(exc: BaseException) -> Callable[[HttpRequest], HttpResponse]:
        def handler(request: HttpRequest) -> HttpResponse:
            raise exc

        return handler

    async def hang(request: HttpRequest) -> HttpResponse:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    cases: list[tuple[Any, type[Exception], str]] = [
        (lambda request: HttpResponse(200, b"<html>"), ExchangeBodyError, "not JSON"),
        (failing(IncompleteBody(200, "received 3 of 9 bytes")), ExchangeBodyError,
         "HTTP 200 body not received whole: received 3 of 9 bytes"),
        (failing(ConnectionResetError("reset by peer")), ExchangeTransportError,
         "ConnectionResetError: reset by peer"),
        (hang, ExchangeTimeout, "no complete answer within 0.05 s"),
    ]  # fmt: skip

    async def main() -> list[tuple[Exception, int]]:
        results = []
        for handler, _, _ in cases:
            transport = MockTransport(handler)
            async with fake_client(transport, timeout_s=0.05, error_max_trials=2) as rest:
                with pytest.raises(Exception) as info:
                    await rest.candles_page(start=None, end=None)
            results.append((info.value, len(transport.requests)))
        return results

    for (error, attempts), (_, error_type, text) in zip(arun(main()), cases, strict=True):
        assert error_type is type(error), error
        assert text in str(error)
        assert is_recoverable(error)
        assert 2 == attempts
