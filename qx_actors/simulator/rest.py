"""The simulator's REST v3 app (aiohttp): candles, funding settlements, ticker.

Faithful to the exchange's REST v3 as observed: newest first, RFC 3339 times with
milliseconds and ``Z``, ``limit`` 1..1000, backwards paging with an exclusive ``cursor``, JSON
errors ``{"message", "code"}``, 429 with ``Retry-After`` from a token-bucket rate limiter.
Candle JSON is pre-encoded per day (see :mod:`.market`), so a page of 1000 stable candles is a
``b",".join``.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Any

import msgspec
from aiohttp import web

from qx_actors.domain.timeutil import (
    FIRST_SETTLEMENT_TIME,
    format_rfc3339_ms,
    from_epoch_ms,
    parse_rfc3339,
    to_epoch_ms,
)
from qx_actors.domain.values import Candle

from .faults import Faults
from .market import (
    FIRST_MS,
    HOUR_MS,
    MINUTE_MS,
    MINUTES_PER_DAY,
    Market,
    encode_candle,
    index_time,
    minute_index,
)
from .recorded import RecordedMarket

__all__ = [
    "MAX_LIMIT",
    "RateLimiter",
    "RequestRecord",
    "RestApp",
]

MAX_LIMIT = 1000
_KNOWN_RANGES = {"1m", "3m", "5m", "10m", "15m", "30m", "45m", "1h", "2h", "3h", "4h", "1d", "1w"}
_ENDPOINT_BY_PATH = {
    "/v3/futures/candles": "candles",
    "/v3/futures/funding-settlements": "funding-settlements",
    "/v3/futures/ticker": "ticker",
}
_DEFAULT_WRONG_FIELD = {
    "candles": "open",
    "funding-settlements": "fundingRate",
    "ticker": "lastPrice",
}


def _reason(status: int) -> str:
    """The HTTP reason phrase of ``status`` (``"Error"`` for a code without one)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _error_code(status: int) -> str:
    """An LN Markets-like error code for ``status``, e.g. ``SERVICE_UNAVAILABLE``."""
    return "".join(c if c.isalnum() else "_" for c in _reason(status).upper())


@dataclass(frozen=True)
class RequestRecord:
    """One REST request the simulator answered."""

    endpoint: str | None
    path: str
    query: dict[str, str] = field(default_factory=dict)
    status: int = 0


class _BadRequest(Exception):
    pass


class RateLimiter:
    """Token bucket: ``per_s`` requests per second, ``burst`` at once; ``None``/0 = off.

    A request up to 10 % early is tolerated so that a client pacing itself exactly at the
    limit is not rejected for network jitter.
    """

    def __init__(self, per_s: float | None, burst: int = 1) -> None:
        self._lock = threading.Lock()
        self.configure(per_s, burst)

    def configure(self, per_s: float | None, burst: int = 1) -> None:
        """Change the rate (thread-safe); the bucket starts full."""
        with self._lock:
            self._per_s = per_s if per_s and per_s > 0 else None
            self._burst = max(1, burst)
            self._tokens = float(self._burst)
            self._stamp = time.monotonic()

    @property
    def per_s(self) -> float | None:
        """Requests per second, ``None`` when off."""
        return self._per_s

    def acquire(self) -> float | None:
        """Take a token: ``None`` when allowed, else the seconds to wait."""
        with self._lock:
            if self._per_s is None:
                return None
            now = time.monotonic()
            self._tokens = min(float(self._burst), self._tokens + (now - self._stamp) * self._per_s)
            self._stamp = now
            if self._tokens >= 0.9:
                self._tokens -= 1.0
                return None
            return (1.0 - self._tokens) / self._per_s


def _error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> Any:
    body = msgspec.json.encode({"message": message, "code": code})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def _json(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


def _parse_time(name: str, text: str) -> datetime:
    try:
        if text.isdigit():
            return from_epoch_ms(int(text))
        return parse_rfc3339(text)
    except (ValueError, OverflowError) as exc:
        raise _BadRequest(f"invalid '{name}': {text!r} is not an RFC 3339 time") from exc


def _parse_limit(text: str | None) -> int:
    if text is None:
        return MAX_LIMIT
    try:
        limit = int(text)
    except ValueError as exc:
        raise _BadRequest(f"invalid 'limit': {text!r} is not an integer") from exc
    if not 1 <= limit <= MAX_LIMIT:
        raise _BadRequest(f"invalid 'limit': {limit} is not in 1..{MAX_LIMIT}")
    return limit


async def _cut_off(request: web.Request, response: web.Response) -> web.StreamResponse:
    """Send ``response`` with its full ``Content-Length`` but only the first half of its body,
    then close the connection (a body cut off in transit)."""
    body = response.body
    assert isinstance(body, bytes)
    stream = web.StreamResponse(status=response.status)
    stream.content_type = "application/json"
    stream.content_length = len(body)
    await stream.prepare(request)
    await stream.write(body[: len(body) // 2])
    transport = request.transport
    if transport is not None:
        transport.close()
    return stream


def _format_header_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _merge_intervals(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _present_segments_desc(lo: int, hi: int, holes: list[tuple[int, int]]) -> list[list[int]]:
    """``[lo, hi]`` minus ``holes`` as inclusive ``[a, b]`` segments, newest first."""
    segments: list[list[int]] = []
    cursor = lo
    for a, b in _merge_intervals(holes):
        if b < cursor:
            continue
        if a > hi:
            break
        if a > cursor:
            segments.append([cursor, min(a - 1, hi)])
        cursor = b + 1
        if cursor > hi:
            break
    if cursor <= hi:
        segments.append([cursor, hi])
    segments.reverse()
    return segments


class RestApp:
    """Builds the aiohttp application serving one :class:`Market` with :class:`Faults`."""

    def __init__(
        self,
        market: Market,
        faults: Faults,
        rate_limiter: RateLimiter,
        from_inclusive: bool = True,
        to_inclusive: bool = True,
        source: RecordedMarket | None = None,
    ) -> None:
        self.market = market
        #: Answers from a database instead of the synthetic market (``qx-actors serve``).
        self.source = source
        self.faults = faults
        self.rate_limiter = rate_limiter
        self.from_inclusive = from_inclusive
        self.to_inclusive = to_inclusive
        self._log_lock = threading.Lock()
        self._log: list[RequestRecord] = []
        self._in_flight = 0
        self._in_flight_changed = threading.Condition(self._log_lock)

    # -- request log -----------------------------------------------------------------------

    def requests(self) -> list[RequestRecord]:
        """Every request answered so far, in order."""
        with self._log_lock:
            return list(self._log)

    def wait_in_flight(self, n: int = 1, timeout: float = 5.0) -> bool:
        """Block until at least ``n`` requests are in flight; ``False`` on timeout."""
        with self._log_lock:
            return self._in_flight_changed.wait_for(lambda: self._in_flight >= n, timeout)

    # -- app -------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """A fresh aiohttp application."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/v3/futures/candles", self._candles)
        app.router.add_get("/v3/futures/funding-settlements", self._settlements)
        app.router.add_get("/v3/futures/ticker", self._ticker)
        return app

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]
    ) -> Any:
        endpoint = _ENDPOINT_BY_PATH.get(request.path)
        with self._log_lock:
            self._in_flight += 1
            self._in_flight_changed.notify_all()
        status = 0
        try:
            response = await self._answer(request, handler, endpoint)
            status = response.status if isinstance(response, web.StreamResponse) else 0
            return response
        finally:
            with self._log_lock:
                self._in_flight -= 1
                self._log.append(RequestRecord(endpoint, request.path, dict(request.query), status))

    async def _answer(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[Any]],
        endpoint: str | None,
    ) -> Any:
        if endpoint is None:
            return _error(404, f"not found: {request.path}", "NOT_FOUND")
        wait = self.rate_limiter.acquire()
        if wait is not None:
            return _error(
                429,
                "Too Many Requests",
                "RATE_LIMITED",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        faults = self.faults
        delay = faults.delay()
        extra = faults.take("delay", endpoint)
        if extra is not None:
            delay += float(extra)
        if delay > 0:
            await asyncio.sleep(delay)
        if faults.take("hang", endpoint) is not None:
            await faults.wait_released()
        failed = faults.take("fail", endpoint)
        if failed is not None:
            status, plain = failed
            if plain:
                return web.Response(status=status, text=f"{status} {_reason(status)}")
            return _error(status, _reason(status), _error_code(status))
        limited = faults.take("429", endpoint)
        if limited is not None:
            (retry_after,) = limited
            headers = (
                {} if retry_after is None else {"Retry-After": _format_header_seconds(retry_after)}
            )
            return _error(429, "Too Many Requests", "RATE_LIMITED", headers)
        random_status = faults.take_fraction_error(endpoint)
        if random_status is not None:
            return _error(random_status, _reason(random_status), _error_code(random_status))
        try:
            response = await handler(request)
        except _BadRequest as exc:
            return _error(400, str(exc), "BAD_REQUEST")
        if response.status == 200 and faults.take("malformed", endpoint) is not None:
            body = response.body
            assert isinstance(body, bytes)
            return _json(body[: max(1, len(body) // 2)])
        if response.status == 200 and faults.take("truncate", endpoint) is not None:
            return await _cut_off(request, response)
        return response

    # -- candles ---------------------------------------------------------------------------

    def _recorded(self, answer: Callable[[], bytes]) -> web.Response:
        try:
            return _json(answer())
        except ValueError as exc:
            raise _BadRequest(str(exc)) from None

    async def _candles(self, request: web.Request) -> web.Response:
        q = request.query
        source = self.source
        if source is not None:
            return self._recorded(lambda: source.candles_body(q))
        range_ = q.get("range", "1m")
        if range_ != "1m":
            if range_ in _KNOWN_RANGES:
                raise _BadRequest(f"range {range_!r} is not supported by the simulator (1m only)")
            raise _BadRequest(f"invalid 'range': {range_!r}")
        limit = _parse_limit(q.get("limit"))
        market = self.market
        now_ms = market.now_ms()
        lo = 0
        hi = (now_ms - FIRST_MS) // MINUTE_MS
        start = _parse_time("from", q["from"]) if "from" in q else None
        end = _parse_time("to", q["to"]) if "to" in q else None
        if start is not None and end is not None and start > end:
            raise _BadRequest("'from' must not be after 'to'")
        if start is not None:
            off = to_epoch_ms(start) - FIRST_MS
            lo = max(lo, -(-off // MINUTE_MS) if self.from_inclusive else off // MINUTE_MS + 1)
        if end is not None:
            off = to_epoch_ms(end) - FIRST_MS
            hi = min(hi, off // MINUTE_MS if self.to_inclusive else -(-off // MINUTE_MS) - 1)
        if "cursor" in q:
            off = to_epoch_ms(_parse_time("cursor", q["cursor"])) - FIRST_MS
            hi = min(hi, -(-off // MINUTE_MS) - 1)
        indexes, more = self._select(lo, hi, limit, now_ms)
        fragments = self._encode(indexes, now_ms)
        corrupted: list[str] = []
        if fragments:
            position = {index: n for n, index in enumerate(indexes)}
            for when, name, value in self.faults.bad_candles_in(
                index_time(indexes[0]), index_time(indexes[-1])
            ):
                n = position.get(minute_index(when))
                if n is None:
                    continue
                if value is None:
                    value = self._spoiled(indexes[n], now_ms, name)
                fragments[n] = self._encode_one(indexes[n], now_ms, override=(name, value))
                corrupted.append("bad_candle")
        if len(fragments) >= 2:
            if self.faults.take("unordered", "candles") is not None:
                mid = len(fragments) // 2
                fragments[mid - 1], fragments[mid] = fragments[mid], fragments[mid - 1]
                corrupted.append("unordered")
            shift = self.faults.take("unrounded", "candles")
            if shift is not None:
                mid = len(fragments) // 2
                fragments[mid] = self._encode_one(indexes[mid], now_ms, shift_s=int(shift))
                corrupted.append("unrounded")
        if fragments:
            wrong = self.faults.take("wrong_types", "candles")
            if wrong is not None:
                name, value = wrong
                fragments[0] = self._encode_one(
                    indexes[0], now_ms, override=(name or _DEFAULT_WRONG_FIELD["candles"], value)
                )
                corrupted.append("wrong_types")
        for kind in corrupted:
            self.faults.note_corrupted(
                kind, "candles", index_time(indexes[0]), index_time(indexes[-1])
            )
        cursor = b"null"
        if more and indexes:
            cursor = b'"' + format_rfc3339_ms(index_time(indexes[-1])).encode() + b'"'
        return _json(b'{"data":[' + b",".join(fragments) + b'],"nextCursor":' + cursor + b"}")

    def _select(self, lo: int, hi: int, limit: int, now_ms: int) -> tuple[list[int], bool]:
        """Up to ``limit`` present minute indexes in ``[lo, hi]``, newest first, and whether
        older ones remain."""
        if hi < lo:
            return [], False
        holes = self.market.downtime() + self.faults.hidden_candle_indexes(from_epoch_ms(now_ms))
        indexes: list[int] = []
        segments = _present_segments_desc(lo, hi, holes)
        for n, (a, b) in enumerate(segments):
            take = min(limit - len(indexes), b - a + 1)
            indexes.extend(range(b, b - take, -1))
            if len(indexes) == limit:
                return indexes, b - take >= a or n + 1 < len(segments)
        return indexes, False

    def _encode(self, indexes: list[int], now_ms: int) -> list[bytes]:
        stable_max = (now_ms - HOUR_MS - FIRST_MS) // MINUTE_MS
        out: list[bytes] = []
        i = 0
        n = len(indexes)
        while i < n:
            top = indexes[i]
            if top > stable_max:
                out.append(self._encode_one(top, now_ms))
                i += 1
                continue
            # A run of consecutive descending stable minutes within one day.
            day, pos = divmod(top, MINUTES_PER_DAY)
            j = i
            while (
                j + 1 < n
                and indexes[j + 1] == indexes[j] - 1
                and indexes[j + 1] >= day * MINUTES_PER_DAY
            ):
                j += 1
            encoded = self.market.day_data(day).encoded()
            bottom = pos - (j - i)
            out.extend(reversed(encoded[bottom : pos + 1]))
            i = j + 1
        return out

    def _served(self, index: int, now_ms: int) -> Candle:
        """The candle of minute ``index`` as served now."""
        candle = self.market.served_candle(index, now_ms)
        return candle if candle is not None else self.market.candle_at(index)

    def _spoiled(self, index: int, now_ms: int, name: str) -> float:
        """A value of field ``name`` of minute ``index`` that breaks the OHLC consistency."""
        candle = self._served(index, now_ms)
        if name == "low":
            return max(candle.open, candle.close) + 1.0
        if name == "high":
            return min(candle.open, candle.close) - 1.0
        if name in ("open", "close"):
            return candle.high + 1.0
        return -1.0  # volume

    def _encode_one(
        self,
        index: int,
        now_ms: int,
        shift_s: int = 0,
        override: tuple[str, Any] | None = None,
    ) -> bytes:
        candle = self._served(index, now_ms)
        time_text = format_rfc3339_ms(candle.time + timedelta(seconds=shift_s))
        if override is None:
            return encode_candle(
                time_text.encode(),
                candle.open,
                candle.high,
                candle.low,
                candle.close,
                candle.volume,
            )
        obj: dict[str, Any] = {
            "time": time_text,
            "open": candle.open,
            "high": candle.high,
            "low": candle.low,
            "close": candle.close,
            "volume": candle.volume,
        }
        obj[override[0]] = override[1]
        return msgspec.json.encode(obj)

    # -- funding settlements ---------------------------------------------------------------

    async def _settlements(self, request: web.Request) -> web.Response:
        q = request.query
        source = self.source
        if source is not None:
            return self._recorded(lambda: source.settlements_body(q))
        limit = _parse_limit(q.get("limit"))
        market = self.market
        now = market.now()
        start = _parse_time("from", q["from"]) if "from" in q else FIRST_SETTLEMENT_TIME
        end = _parse_time("to", q["to"]) if "to" in q else now
        if start > end:
            raise _BadRequest("'from' must not be after 'to'")
        end = min(end, now)
        cursor = _parse_time("cursor", q["cursor"]) if "cursor" in q else None
        selected: list[datetime] = []
        more = False
        for t in self._settlement_times_desc(start, end, now):
            if cursor is not None and t >= cursor:
                continue
            if len(selected) == limit:
                more = True
                break
            selected.append(t)
        items = []
        corrupted: list[str] = []
        if len(selected) >= 2 and self.faults.take("unordered", "funding-settlements") is not None:
            mid = len(selected) // 2
            selected[mid - 1], selected[mid] = selected[mid], selected[mid - 1]
            corrupted.append("unordered")
        wrong = self.faults.take("wrong_types", "funding-settlements") if selected else None
        if wrong is not None:
            corrupted.append("wrong_types")
        if set(selected) & set(self.faults.off_grid_settlements()):
            corrupted.append("off_grid")
        for kind in corrupted:
            self.faults.note_corrupted(kind, "funding-settlements", max(selected), min(selected))
        for n, t in enumerate(selected):
            s = market.settlement_at(t)
            item: dict[str, Any] = {
                "id": s.id,
                "time": format_rfc3339_ms(s.time),
                "fixingPrice": s.fixing_price,
                "fundingRate": s.funding_rate,
            }
            if n == 0 and wrong is not None:
                item[wrong[0] or _DEFAULT_WRONG_FIELD["funding-settlements"]] = wrong[1]
            items.append(item)
        next_cursor = format_rfc3339_ms(min(selected)) if more and selected else None
        return _json(msgspec.json.encode({"data": items, "nextCursor": next_cursor}))

    def _settlement_times_desc(
        self, start: datetime, end: datetime, now: datetime
    ) -> Iterator[datetime]:
        extra = sorted(
            (t for t in self.faults.off_grid_settlements() if start <= t <= end), reverse=True
        )
        merged = heapq.merge(
            self.market.settlement_times_desc(start, end), extra, key=to_epoch_ms, reverse=True
        )
        for t in merged:
            if not self.faults.is_settlement_hidden(t, now):
                yield t

    # -- ticker ----------------------------------------------------------------------------

    async def _ticker(self, request: web.Request) -> web.Response:
        if self.source is not None:
            return _json(self.source.ticker_body())
        market = self.market
        now = market.now()
        last = market.price_at(now)
        index = round(last * 2 - 0.5) / 2 if int(now.timestamp()) % 2 else last
        next_time = market.next_settlement_time(now)
        body: dict[str, Any] = {
            "index": index,
            "lastPrice": last,
            "prices": [
                {"minSize": 1, "maxSize": 250_000, "bidPrice": last - 0.5, "askPrice": last + 0.5},
                {
                    "minSize": 250_000,
                    "maxSize": 1_000_000,
                    "bidPrice": last - 1.5,
                    "askPrice": last + 1.5,
                },
            ],
            "fundingRate": market.settlement_at(next_time).funding_rate,
            "fundingTime": format_rfc3339_ms(next_time),
        }
        wrong = self.faults.take("wrong_types", "ticker")
        if wrong is not None:
            body[wrong[0] or _DEFAULT_WRONG_FIELD["ticker"]] = wrong[1]
        return _json(msgspec.json.encode(body))
