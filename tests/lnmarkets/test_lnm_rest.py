"""RestClient against scripted aiohttp servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from aiohttp import web
from lnm_scripted import T0, Market, json_response, serve_rest
from structlog.testing import capture_logs

from qx_actors.domain.timeutil import HOUR, MINUTE, format_rfc3339_ms
from qx_actors.domain.values import Candle, FundingSettlement
from qx_actors.errors import (
    ExchangeBodyError,
    ExchangeClientError,
    ExchangeDecodeError,
    ExchangeHttpError,
    ExchangeServerError,
    ExchangeTimeout,
    ExchangeTransportError,
    InvalidMarketData,
    RecoverableError,
    is_recoverable,
)
from qx_actors.lnmarkets import RestClient
from qx_actors.lnmarkets.rest import RateLimiter, _parse_retry_after

Arun = Callable[..., Any]


def client(url: str, **kw: Any) -> RestClient:
    """A client with test-sized timings (unlimited rate unless given)."""
    kw.setdefault("rate_limit_per_s", None)
    kw.setdefault("error_cooldown_s", 0.01)
    kw.setdefault("timeout_s", 2.0)
    return RestClient(url, **kw)


async def collect_candles(
    market: Market, start: datetime, end: datetime, limit: int = 1000
) -> tuple[list[list[Candle]], list[dict[str, str]]]:
    """All pages of ``candle_pages`` against ``market`` and the queries sent."""

    async def handler(request: web.Request) -> web.Response:
        return json_response(market.candle_page(dict(request.query)))

    async with serve_rest(handler) as server, client(server.url) as rest:
        pages = [page async for page in rest.candle_pages(start, end, limit=limit)]
    return pages, [seen.query for seen in server.seen]


def minutes(start: datetime, end: datetime) -> list[datetime]:
    """Whole minutes from ``end`` down to ``start``, inclusive."""
    count = int((end - start) / MINUTE)
    return [end - MINUTE * i for i in range(count + 1)]


@pytest.mark.parametrize("from_inclusive", [True, False])
@pytest.mark.parametrize("to_inclusive", [True, False])
@pytest.mark.parametrize("cursor_inclusive", [False, True])
def test_candle_pages_exact_whatever_bound_semantics(
    arun: Arun, from_inclusive: bool, to_inclusive: bool, cursor_inclusive: bool
) -> None:
    """candle_pages yields exactly [start, end] once, newest first, for any bound semantics."""
    market = Market(
        T0,
        5000,
        from_inclusive=from_inclusive,
        to_inclusive=to_inclusive,
        cursor_inclusive=cursor_inclusive,
    )
    start, end = T0 + 100 * MINUTE, T0 + 2599 * MINUTE
    pages, queries = arun(collect_candles(market, start, end))
    times = [c.time for page in pages for c in page]
    assert minutes(start, end) == times
    assert all(page for page in pages)
    assert 3 <= len(queries) <= 4


def test_candle_pages_query_format_and_cursor(arun: Arun) -> None:
    """Pages ask from=start-1m, to=end+1m, limit, range=1m, then follow nextCursor."""
    market = Market(T0, 3000)
    start, end = T0 + 10 * MINUTE, T0 + 1500 * MINUTE
    _, queries = arun(collect_candles(market, start, end))
    first = {
        "from": "2026-01-01T00:09:00.000Z",
        "to": "2026-01-02T01:01:00.000Z",
        "limit": "1000",
        "range": "1m",
    }
    assert first == queries[0]
    oldest_first_page = end + MINUTE - 999 * MINUTE
    assert {**first, "cursor": format_rfc3339_ms(oldest_first_page)} == queries[1]
    assert len(queries) == 2


def test_candle_pages_stop_on_short_page_and_start(arun: Arun) -> None:
    """A page shorter than limit ends paging even if the exchange sends a cursor."""
    market = Market(T0, 3000, cursor_on_short_page=True)
    pages, queries = arun(collect_candles(market, T0 + 50 * MINUTE, T0 + 80 * MINUTE))
    assert [len(pages[0])] == [len(p) for p in pages] == [31]
    assert len(queries) == 1


def test_candle_pages_empty_range_and_small_limit(arun: Arun) -> None:
    """A range before the data yields nothing; a small limit pages correctly."""
    market = Market(T0, 100)
    pages, _ = arun(collect_candles(market, T0 - 10 * HOUR, T0 - HOUR))
    assert pages == []
    start, end = T0 + 5 * MINUTE, T0 + 30 * MINUTE
    pages, _ = arun(collect_candles(market, start, end, limit=7))
    assert minutes(start, end) == [c.time for p in pages for c in p]
    assert all(len(p) <= 7 for p in pages)


def test_candle_pages_cursor_not_moving_is_invalid(arun: Arun) -> None:
    """An exchange that repeats the same nextCursor can't loop the client forever: the page
    that does not move back is asked for again (its trials), then InvalidMarketData
    (recoverable) naming the endpoint, the cursor and the nextCursor."""
    market = Market(T0, 100)

    async def handler(request: web.Request) -> web.Response:
        body = market.candle_page({"limit": request.query["limit"]})
        return json_response(body)

    async def main() -> tuple[InvalidMarketData, int]:
        async with serve_rest(handler) as server, client(server.url) as rest:
            with pytest.raises(InvalidMarketData) as info:
                async for _ in rest.candle_pages(T0, T0 + 99 * MINUTE, limit=10):
                    pass
            return info.value, len(server.seen)

    error, requests = arun(main())
    assert is_recoverable(error)
    assert 1 + 3 == requests  # the first page, then the second one's three trials
    assert (
        "/v3/futures/candles: nextCursor 2026-01-01T01:30:00.000Z does not move back from "
        "cursor 2026-01-01T01:30:00.000Z"
    ) == str(error)


def test_candles_page_passes_params_as_given(arun: Arun) -> None:
    """candles_page sends its bounds unpadded, formatted RFC 3339 ms Z."""

    async def handler(request: web.Request) -> web.Response:
        return json_response({"data": [], "nextCursor": None})

    async def main() -> Any:
        async with serve_rest(handler) as server, client(server.url) as rest:
            page = await rest.candles_page(
                start=T0, end=None, limit=5, cursor=T0 + timedelta(milliseconds=1500)
            )
        return page, server.seen

    page, seen = arun(main())
    assert (page.candles, page.next_cursor) == ([], None)
    assert seen[0].path == "/v3/futures/candles"
    expected = {
        "from": "2026-01-01T00:00:00.000Z",
        "limit": "5",
        "range": "1m",
        "cursor": "2026-01-01T00:00:01.500Z",
    }
    assert expected == seen[0].query


def test_candles_page_decodes_values(arun: Arun) -> None:
    """A recorded-looking page decodes to domain candles and a datetime cursor."""
    body = (
        b'{"data":[{"time":"2026-01-01T00:01:00.000Z","open":90000.5,"high":90010,'
        b'"low":89990,"close":90001,"volume":12.25},{"time":"2026-01-01T00:00:00.000Z",'
        b'"open":1,"high":2,"low":0.5,"close":1.5,"volume":0}],'
        b'"nextCursor":"2026-01-01T00:00:00.000Z"}'
    )

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def main() -> Any:
        async with serve_rest(handler) as server, client(server.url) as rest:
            return await rest.candles_page(start=None, end=None)

    page = arun(main())
    assert [
        Candle(T0 + MINUTE, 90000.5, 90010.0, 89990.0, 90001.0, 12.25),
        Candle(T0, 1.0, 2.0, 0.5, 1.5, 0.0),
    ] == page.candles
    assert page.next_cursor == T0
    assert UTC is page.candles[0].time.tzinfo


def test_decode_error_names_path_and_endpoint(arun: Arun) -> None:
    """A wrong field type is ExchangeDecodeError naming $.data[3].open, the value found there
    and the candle's time; retried like any REST error (three trials), then recoverable."""
    market = Market(T0, 10)

    async def handler(request: web.Request) -> web.Response:
        body = market.candle_page({})
        body["data"][3]["open"] = "90000"
        return json_response(body)

    async def main() -> int:
        async with serve_rest(handler) as server, client(server.url) as rest:
            with pytest.raises(ExchangeDecodeError) as info:
                await rest.candles_page(start=None, end=None)
            assert info.value.path == "$.data[3].open"
            assert is_recoverable(info.value)
            assert (
                "invalid JSON from /v3/futures/candles at $.data[3].open: Expected `float`, got "
                '`str` (value "90000", item time 2026-01-01T00:06:00.000Z)'
            ) == str(info.value)
            assert ('"90000"', "2026-01-01T00:06:00.000Z") == (
                info.value.value,
                info.value.item_time,
            )
            return len(server.seen)

    assert arun(main()) == 3


def test_naive_time_is_a_decode_error_retried_then_recoverable(arun: Arun) -> None:
    """Well-formed JSON of the wrong shape (a time without offset) is ExchangeDecodeError
    naming the path and the value: asked ``error_max_trials`` times, then recoverable."""
    body = (
        b'{"data":[{"time":"2026-01-01T00:00:00","open":1,"high":1,'
        b'"low":1,"close":1,"volume":1}],"nextCursor":null}'
    )

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def main() -> tuple[ExchangeDecodeError, int]:
        async with serve_rest(handler) as server, client(server.url) as rest:
            with pytest.raises(ExchangeDecodeError) as info:
                await rest.candles_page(start=None, end=None)
            return info.value, len(server.seen)

    error, requests = arun(main())
    assert error.path == "$.data[0].time"
    assert isinstance(error, RecoverableError) and is_recoverable(error)
    assert '(value "2026-01-01T00:00:00")' in str(error)
    assert error.item_time is None  # the value is the time itself
    assert requests == 3


@pytest.mark.parametrize(
    "body",
    [b'{"data": [}', b'{"data":[{"time":"2026-01-01T00:00:00.000Z","op', b"<html>502</html>", b""],
    ids=["garbled", "cut-json", "html", "empty"],
)
def test_body_that_is_not_json_is_retried_then_recoverable(arun: Arun, body: bytes) -> None:
    """A 200 whose body is not JSON at all is a transport fault: retried with the cooldown,
    then ExchangeBodyError (recoverable) naming the endpoint, the status and the body's start."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def main() -> tuple[ExchangeBodyError, int, Any]:
        async with serve_rest(handler) as server, client(server.url, error_max_trials=3) as rest:
            with pytest.raises(ExchangeBodyError) as info:
                await rest.candles_page(start=None, end=None)
            return info.value, len(server.seen), dataclasses.replace(rest.counters)

    error, requests, counters = arun(main())
    assert is_recoverable(error)
    assert (requests, counters.retries, counters.errors) == (3, 2, 3)
    text = str(error)
    assert "/v3/futures/candles: HTTP 200 body is not JSON" in text
    assert (body.decode() or "(empty body)") in text
    assert isinstance(error.__cause__, msgspec.DecodeError)


def test_malformed_body_then_good_page_recovers_within_the_trials(arun: Arun) -> None:
    """One garbled body, then the page: the client retries and returns the page."""
    hits = itertools.count(1)

    async def handler(request: web.Request) -> web.Response:
        if next(hits) == 1:
            return web.Response(body=b'{"data":[{"ti', content_type="application/json")
        return json_response({"data": [], "nextCursor": None})

    async def main() -> Any:
        async with serve_rest(handler) as server, client(server.url) as rest:
            with capture_logs() as logs:
                page = await rest.candles_page(start=None, end=None)
            return page, len(server.seen), logs

    page, requests, logs = arun(main())
    assert (page.candles, requests) == ([], 2)
    retries = [e for e in logs if e["event"] == "rest_request_retry"]
    assert ["ExchangeBodyError"] == [e["error_type"] for e in retries]


def _cut_off_handler(body: bytes, cut: int, cuts: int) -> Any:
    """A handler declaring ``len(body)`` but closing the connection after ``cut`` bytes, for
    its first ``cuts`` requests; the whole body afterwards."""
    hits = itertools.count(1)

    async def handler(request: web.Request) -> web.StreamResponse:
        if next(hits) > cuts:
            return web.Response(body=body, content_type="application/json")
        response = web.StreamResponse()
        response.content_type = "application/json"
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[:cut])
        assert request.transport is not None
        request.transport.close()
        return response

    return handler


def test_truncated_body_is_retried_then_recoverable(arun: Arun) -> None:
    """A body cut off in transit (Content-Length not reached, connection closed) is retried and
    then ExchangeBodyError naming the endpoint, the status and how much arrived."""
    body = json.dumps(Market(T0, 10).candle_page({})).encode()
    handler = _cut_off_handler(body, 40, cuts=10)

    async def main() -> tuple[ExchangeBodyError, int]:
        async with serve_rest(handler) as server, client(server.url, error_max_trials=2) as rest:
            with pytest.raises(ExchangeBodyError) as info:
                await rest.candles_page(start=None, end=None)
            return info.value, len(server.seen)

    error, requests = arun(main())
    assert is_recoverable(error)
    assert requests == 2
    assert "GET /v3/futures/candles: HTTP 200 body not received whole" in str(error)
    assert f"received 40 of {len(body)} bytes" in str(error)


def test_truncated_body_then_whole_body_succeeds(arun: Arun) -> None:
    """Two cut bodies within three trials: the third answer is decoded."""
    market = Market(T0, 10)
    body = json.dumps(market.candle_page({})).encode()
    handler = _cut_off_handler(body, len(body) - 1, cuts=2)

    async def main() -> Any:
        async with serve_rest(handler) as server, client(server.url, error_max_trials=3) as rest:
            page = await rest.candles_page(start=None, end=None)
            return page, len(server.seen)

    page, requests = arun(main())
    assert market.times() == [c.time for c in page.candles]
    assert requests == 3


def test_connection_reset_is_retried_then_recoverable(arun: Arun) -> None:
    """The server drops the connection before answering: ExchangeTransportError after the
    trials."""

    async def handler(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.abort()
        await asyncio.Event().wait()  # cancelled by aiohttp when the connection goes
        raise AssertionError("unreachable")

    async def main() -> tuple[ExchangeTransportError, int, int]:
        async with serve_rest(handler) as server, client(server.url, error_max_trials=3) as rest:
            with pytest.raises(ExchangeTransportError) as info:
                await rest.settlements_page(start=None, end=None)
            return info.value, rest.counters.requests, len(server.seen)

    error, trials, seen = arun(main())
    assert not isinstance(error, ExchangeTimeout | ExchangeBodyError)
    assert "ServerDisconnected" in str(error)
    assert is_recoverable(error)
    assert trials == 3
    assert seen >= 3  # aiohttp itself may repeat a GET once on a dropped connection


def test_server_error_retried_then_success(arun: Arun) -> None:
    """Two 503s then a page: retried after the cooldown, logged, counted."""

    hits = itertools.count(1)

    async def handler(request: web.Request) -> web.Response:
        if next(hits) <= 2:
            return json_response({"message": "maintenance"}, status=503)
        return json_response({"data": [], "nextCursor": None})

    async def main() -> Any:
        async with serve_rest(handler) as server, client(server.url) as rest:
            with capture_logs() as logs:
                page = await rest.candles_page(start=None, end=None)
            return page, dataclasses.replace(rest.counters), logs

    page, counters, logs = arun(main())
    assert page.candles == []
    assert (counters.requests, counters.retries, counters.errors) == (3, 2, 2)
    retries = [e for e in logs if e["event"] == "rest_request_retry"]
    assert [e["trial"] for e in retries] == [1, 2]
    assert {503} == {e["status"] for e in retries}
    assert "maintenance" in retries[0]["error"]


def test_server_error_exhausted(arun: Arun) -> None:
    """5xx on every trial: ExchangeServerError with the status and message, after 3 trials."""

    async def handler(request: web.Request) -> web.Response:
        return json_response({"message": "bad gateway", "code": "E502"}, status=502)

    async def main() -> Any:
        async with serve_rest(handler) as server, client(server.url, error_max_trials=3) as rest:
            with pytest.raises(ExchangeServerError) as info:
                await rest.settlements_page(start=None, end=None)
            return info.value, len(server.seen)

    error, requests = arun(main())
    assert (error.status, error.message, error.extra["code"]) == (502, "bad gateway", "E502")
    assert error.endpoint == "/v3/futures/funding-settlements"
    assert requests == 3


def test_rate_limited_honours_retry_after(arun: Arun) -> None:
    """A 429 with Retry-After waits that long (not the cooldown) before the next trial."""
    retry_after = 0.4

    hits = itertools.count(1)

    async def handler(request: web.Request) -> web.Response:
        if next(hits) == 1:
            return json_response({"message": "too many"}, 429, **{"Retry-After": "0.4"})
        return json_response({"data": [], "nextCursor": None})

    async def main() -> Any:
        async with (
            serve_rest(handler) as server,
            client(server.url, error_cooldown_s=5.0, rate_limit_per_s=100) as rest,
        ):
            with capture_logs() as logs:
                await rest.settlements_page(start=None, end=None)
            return server.seen, dataclasses.replace(rest.counters), logs

    seen, counters, logs = arun(main())
    assert seen[1].at - seen[0].at >= retry_after
    assert (counters.rate_limited, counters.retries) == (1, 1)
    limited = [e for e in logs if e["event"] == "rest_rate_limited"]
    assert [retry_after] == [e["retry_after_s"] for e in limited]
    # the retry waited the Retry-After, not the 5 s cooldown
    assert [retry_after] == [e["wait_s"] for e in logs if e["event"] == "rest_request_retry"]


def test_rate_limited_exhausted_is_server_error(arun: Arun) -> None:
    """429 on the last trial is ExchangeServerError (recoverable)."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="slow down", status=429)

    async def main() -> ExchangeServerError:
        async with serve_rest(handler) as server, client(server.url, error_max_trials=2) as rest:
            with pytest.raises(ExchangeServerError) as info:
                await rest.settlements_page(start=None, end=None)
            return info.value

    error = arun(main())
    assert (error.status, error.message) == (429, "slow down")


def test_client_error_retried_then_recoverable(arun: Arun) -> None:
    """A stray 400 (or 404) is retried with the cooldown like any REST error, then
    ExchangeClientError (recoverable) keeping the JSON message; plain text kept too."""
    answers = {
        "/v3/futures/candles": lambda: json_response(
            {"message": "limit must be <= 1000", "details": {"limit": 5}}, 400
        ),
        "/v3/futures/funding-settlements": lambda: web.Response(text="not found here", status=404),
    }

    async def handler(request: web.Request) -> web.Response:
        return answers[request.path]()

    async def main() -> Any:
        async with serve_rest(handler) as server, client(server.url, error_max_trials=3) as rest:
            with capture_logs() as logs:
                with pytest.raises(ExchangeClientError) as bad:
                    await rest.candles_page(start=None, end=None)
                with pytest.raises(ExchangeClientError) as missing:
                    await rest.settlements_page(start=None, end=None)
            return bad.value, missing.value, len(server.seen), rest.counters.retries, logs

    bad, missing, requests, retries, logs = arun(main())
    assert (bad.status, bad.message) == (400, "limit must be <= 1000")
    assert bad.extra["details"] == {"limit": 5}
    assert "HTTP 400 /v3/futures/candles: limit must be <= 1000" == str(bad)
    assert (missing.status, missing.message, missing.body) == (
        404,
        "not found here",
        "not found here",
    )
    assert is_recoverable(bad) and is_recoverable(missing)
    assert (requests, retries) == (6, 4)
    waits = {e["wait_s"] for e in logs if e["event"] == "rest_request_retry"}
    assert {0.01} == waits  # the cooldown


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (408, ExchangeServerError),
        (418, ExchangeClientError),
        (500, ExchangeServerError),
        (504, ExchangeServerError),
    ],
)
def test_error_statuses_are_retried_then_recoverable(
    arun: Arun, status: int, error_type: type[ExchangeHttpError]
) -> None:
    """408 and 5xx are server errors, other 4xx client errors: all retried, all recoverable."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=f"status {status}", status=status)

    async def main() -> tuple[ExchangeHttpError, int]:
        async with serve_rest(handler) as server, client(server.url, error_max_trials=2) as rest:
            with pytest.raises(ExchangeHttpError) as info:
                await rest.settlements_page(start=None, end=None)
            return info.value, len(server.seen)

    error, requests = arun(main())
    assert type(error) is error_type
    assert (error.status, str(error)) == (
        status,
        f"HTTP {status} /v3/futures/funding-settlements: status {status}",
    )
    assert is_recoverable(error)
    assert requests == 2


def test_error_text_quotes_a_short_excerpt_of_the_body(arun: Arun) -> None:
    """A long non-JSON error page is quoted by its first 200 characters on one line; the
    whole body stays on the error; an empty body gives the reason phrase."""
    page = "<html>\n  <body>" + "x" * 5000 + "</body>\n</html>"

    async def handler(request: web.Request) -> web.Response:
        if request.path.endswith("funding-settlements"):
            return web.Response(text=page, status=502, content_type="text/html")
        return web.Response(status=503)

    async def main() -> tuple[ExchangeHttpError, ExchangeHttpError]:
        async with serve_rest(handler) as server, client(server.url, error_max_trials=1) as rest:
            with pytest.raises(ExchangeHttpError) as long:
                await rest.settlements_page(start=None, end=None)
            with pytest.raises(ExchangeHttpError) as empty:
                await rest.candles_page(start=None, end=None)
            return long.value, empty.value

    long, empty = arun(main())
    assert len(long.message) == 200
    assert long.message.startswith("<html> <body>xxx") and long.message.endswith("…")
    assert long.body == page
    assert str(long) == f"HTTP 502 /v3/futures/funding-settlements: {long.message}"
    assert str(empty) == "HTTP 503 /v3/futures/candles: Service Unavailable"


def test_timeout(arun: Arun) -> None:
    """A server that never answers gives ExchangeTimeout after timeout_s on each trial."""

    async def handler(request: web.Request) -> web.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def main() -> Any:
        async with (
            serve_rest(handler) as server,
            client(server.url, timeout_s=0.2, error_max_trials=2) as rest,
        ):
            started = time.monotonic()
            with pytest.raises(ExchangeTimeout, match=r"0\.2 s"):
                await rest.settlements_page(start=None, end=None)
            return time.monotonic() - started, dataclasses.replace(rest.counters)

    elapsed, counters = arun(main())
    assert elapsed >= 0.4
    assert (counters.requests, counters.timeouts) == (2, 2)


def test_connection_refused(arun: Arun, unused_port: int) -> None:
    """Nothing listening: ExchangeTransportError after the trials."""

    async def main() -> int:
        async with client(f"http://127.0.0.1:{unused_port}", error_max_trials=2) as rest:
            with pytest.raises(ExchangeTransportError) as info:
                await rest.settlements_page(start=None, end=None)
            assert not isinstance(info.value, ExchangeTimeout)
            return rest.counters.requests

    assert arun(main()) == 2


def test_cancel_hung_request_is_prompt(arun: Arun) -> None:
    """Cancelling a request the server never answers returns at once and closes cleanly."""

    async def handler(request: web.Request) -> web.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def main() -> tuple[bool, int]:
        async with serve_rest(handler) as server:
            rest = client(server.url, timeout_s=30)
            task = asyncio.create_task(rest.settlements_page(start=None, end=None))
            await asyncio.wait_for(server.arrived.wait(), 5)
            task.cancel()
            # generous waits, far below the 30 s request timeout: the cancel did it
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
            await asyncio.wait_for(rest.close(), 10)
            return task.cancelled(), rest.counters.timeouts

    assert (True, 0) == arun(main())


def test_rate_limiter_spacing(arun: Arun) -> None:
    """N requests at R/s take at least (N - 1) / R, each start 1/R after the previous."""
    rate, count = 20.0, 10

    async def handler(request: web.Request) -> web.Response:
        return json_response({"data": [], "nextCursor": None})

    async def main() -> Any:
        async with serve_rest(handler) as server, client(server.url, rate_limit_per_s=rate) as rest:
            started = time.monotonic()
            await asyncio.gather(
                *(rest.candles_page(start=None, end=None) for _ in range(count // 2))
            )
            for _ in range(count - count // 2):
                await rest.candles_page(start=None, end=None)
            return time.monotonic() - started, [s.at for s in server.seen]

    elapsed, arrivals = arun(main())
    assert elapsed >= (count - 1) / rate
    assert arrivals[-1] - arrivals[0] >= (count - 1) / rate - 0.05


def hog_event_loop(seconds: float) -> None:
    """Keep the running event loop busy for ``seconds`` (a handler that does CPU work)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_rate_limiter_late_wake_up_does_not_shorten_the_next_gap(arun: Arun) -> None:
    """A start delayed by a busy loop pushes the later ones back: no two starts closer than 1/R."""
    limiter = RateLimiter(20.0)  # 50 ms apart
    starts: list[float] = []

    async def request() -> None:
        await limiter.acquire()
        starts.append(time.monotonic())

    async def busy_loop() -> None:
        # Busy from 40 ms to at least 85 ms: the second start (slot 50 ms) comes >= 35 ms late;
        # the third slot (100 ms) must then wait until a full interval after it.
        await asyncio.sleep(0.04)
        hog_event_loop(0.045)

    async def main() -> None:
        await asyncio.gather(busy_loop(), *(request() for _ in range(4)))

    arun(main())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # 1 ms allowance: the time between the limiter's clock read and this test's
    assert all(gap >= limiter.interval - 0.001 for gap in gaps), gaps
    assert starts[1] - starts[0] >= 0.08  # the busy loop delayed the second start


def test_unlimited_rate_does_not_wait(arun: Arun) -> None:
    """rate_limit_per_s=None never waits on the limiter."""

    async def handler(request: web.Request) -> web.Response:
        return json_response({"data": [], "nextCursor": None})

    async def main() -> float:
        async with serve_rest(handler) as server, client(server.url) as rest:
            for _ in range(5):
                await rest.candles_page(start=None, end=None)
            return rest.counters.limiter_wait_s

    assert arun(main()) == 0.0


def test_settlement_pages_exact(arun: Arun) -> None:
    """settlement_pages yields the settlements in [start, end], `to` inclusive."""
    market = Market(T0, 30, step=8 * HOUR, from_inclusive=False)
    start, end = T0 + 16 * HOUR, T0 + 80 * HOUR

    async def handler(request: web.Request) -> web.Response:
        return json_response(market.settlement_page(dict(request.query)))

    async def main() -> Any:
        async with serve_rest(handler) as server, client(server.url) as rest:
            pages = [p async for p in rest.settlement_pages(start, end, limit=3)]
        return pages, server.seen

    pages, seen = arun(main())
    items: list[FundingSettlement] = [s for p in pages for s in p]
    assert [end - 8 * HOUR * i for i in range(9)] == [s.time for s in items]
    assert seen[0].path == "/v3/futures/funding-settlements"
    assert "range" not in seen[0].query
    assert (items[0].fixing_price, items[0].funding_rate) == (90000.0, 0.0001)


def test_parse_retry_after() -> None:
    """Retry-After as seconds or HTTP date, capped; garbage ignored."""
    future = (datetime.now(UTC) + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert _parse_retry_after("2", 300) == 2.0
    assert _parse_retry_after("9999", 300) == 300.0
    assert 25 < (_parse_retry_after(future, 300) or 0) <= 30
    assert None is _parse_retry_after("soon", 300)
    assert None is _parse_retry_after(None, 300)


def test_invalid_arguments() -> None:
    """Bad construction arguments are ValueErrors."""
    with pytest.raises(ValueError, match="base URL"):
        RestClient("ftp://example")
    with pytest.raises(ValueError, match="error_max_trials"):
        RestClient("http://127.0.0.1:1", error_max_trials=0)
