"""Async client of the LN Markets REST v3 public market-data endpoints.

Paced by a rate limiter, every request bounded by a timeout; errors of the HTTP layer
(:mod:`qx_actors.lnmarkets.transport`: aiohttp by default, a fake one in unit tests) and of
msgspec are mapped into :mod:`qx_actors.errors` here. The client is asyncio-only and belongs
to the loop it is first used in (the REST fetcher actor's loop).

As quantoxide treats REST errors, every transport failure is retried ``error_max_trials``
times in all, ``error_cooldown_s`` apart, and then raised as a recoverable error:

* no answer: connection refused or reset (:class:`ExchangeTransportError`), timeout
  (:class:`ExchangeTimeout`);
* a body cut off in transit or not JSON at all (:class:`ExchangeBodyError`);
* HTTP 408, 429 and 5xx (:class:`ExchangeServerError`; a 429 waits its ``Retry-After``
  instead of the cooldown) and every other non-2xx status (:class:`ExchangeClientError`).
  The error names the status and the exchange's message, or the start of the body.

Well-formed JSON of the wrong shape is :class:`ExchangeDecodeError` naming the field path:
fatal, not retried (asking again would get the same answer).
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp
import msgspec
import yarl

from qx_actors.domain.timeutil import MINUTE, format_rfc3339_ms, require_utc
from qx_actors.domain.values import EXCHANGE_PAGE_LIMIT, Candle, FundingSettlement
from qx_actors.errors import (
    ExchangeBodyError,
    ExchangeClientError,
    ExchangeError,
    ExchangeHttpError,
    ExchangeServerError,
    ExchangeTimeout,
    ExchangeTransportError,
    InvalidMarketData,
)
from qx_actors.lnmarkets import wire
from qx_actors.lnmarkets.transport import (
    AiohttpTransport,
    HttpRequest,
    IncompleteBody,
    Transport,
)
from qx_actors.logs import get_logger

_log = get_logger()

CANDLES_PATH = "/v3/futures/candles"
SETTLEMENTS_PATH = "/v3/futures/funding-settlements"

_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclasses.dataclass
class RestCounters:
    """Running totals of one client, for metrics (read them any time; ints only)."""

    requests: int = 0  # HTTP attempts sent
    responses_ok: int = 0  # 2xx answers
    retries: int = 0  # attempts repeated after a recoverable failure
    rate_limited: int = 0  # 429 answers
    errors: int = 0  # failed attempts (any reason, retried or not)
    timeouts: int = 0  # attempts that hit timeout_s
    limiter_wait_s: float = 0.0  # total time spent waiting for the rate limiter


class CandlePage(msgspec.Struct, frozen=True):
    """One candle page: ``candles`` newest first as sent, ``next_cursor`` for the next page."""

    candles: list[Candle]
    next_cursor: datetime | None


class SettlementPage(msgspec.Struct, frozen=True):
    """One funding-settlement page, newest first as sent."""

    settlements: list[FundingSettlement]
    next_cursor: datetime | None


class RateLimiter:
    """Spaces request starts at least ``1 / rate`` seconds apart (no burst).

    Slots are reserved on a schedule (``next = slot + interval``), synchronously before
    sleeping, which keeps concurrent callers ordered without a lock; N back-to-back requests
    take ``(N - 1) / rate`` when every wake-up is on time. A wake-up that comes late (a busy
    loop, a busy machine) pushes the following starts back instead of letting them catch up:
    an exchange that enforces the same rate sees no two starts closer than ``1 / rate``.
    """

    def __init__(self, rate_per_s: float | None) -> None:
        self.interval = 1.0 / rate_per_s if rate_per_s else 0.0
        self._next = 0.0
        self._last_start = -self.interval

    def reserve(self) -> float:
        """Reserve the next slot; returns how long to wait for it (0 when free now)."""
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self.interval
        return slot - now

    async def acquire(self) -> float:
        """Wait for the next slot and a full interval since the last start; returns the
        time waited."""
        if not self.interval:
            return 0.0
        began = time.monotonic()
        wait = self.reserve()
        while wait > 0:
            await asyncio.sleep(wait)
            # Another caller may have started late, just before this one woke up.
            wait = self._last_start + self.interval - time.monotonic()
        start = time.monotonic()
        self._last_start = start
        self._next = max(self._next, start + self.interval)
        return start - began

    def defer(self, seconds: float) -> None:
        """Start no request before ``seconds`` from now (``Retry-After``)."""
        self._next = max(self._next, time.monotonic() + seconds)


class _Recoverable(Exception):
    """One failed trial that may be retried; ``error`` is raised after the last trial."""

    def __init__(self, error: ExchangeError, retry_after_s: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after_s = retry_after_s


class RestClient:
    """LN Markets REST v3 client (public market data)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 20.0,
        rate_limit_per_s: float | None = 1.0,
        error_cooldown_s: float = 10.0,
        error_max_trials: int = 3,
        max_retry_after_s: float = 300.0,
        transport: Transport | None = None,
    ) -> None:
        """``transport``: the HTTP layer (real sockets through aiohttp when not given; a
        :class:`~qx_actors.lnmarkets.transport.MockTransport` in unit tests)."""
        url = yarl.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"REST base URL must be http(s)://host[:port], got {base_url!r}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if rate_limit_per_s is not None and rate_limit_per_s < 0:
            raise ValueError(f"rate_limit_per_s must be >= 0, got {rate_limit_per_s}")
        if error_max_trials < 1:
            raise ValueError(f"error_max_trials must be >= 1, got {error_max_trials}")
        if error_cooldown_s < 0:
            raise ValueError(f"error_cooldown_s must be >= 0, got {error_cooldown_s}")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.error_cooldown_s = error_cooldown_s
        self.error_max_trials = error_max_trials
        self.max_retry_after_s = max_retry_after_s
        self.limiter = RateLimiter(rate_limit_per_s)
        self.counters = RestCounters()
        #: called after every attempt with (endpoint, seconds, HTTP status or "error"): the
        #: health probe's latency histogram
        self.on_request: Callable[[str, float, int | str], None] | None = None
        self._transport: Transport = transport if transport is not None else AiohttpTransport()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP connections (idempotent); a later request opens new ones."""
        await self._transport.close()

    # --- endpoints ------------------------------------------------------------------------

    async def candles_page(
        self,
        *,
        start: datetime | None,
        end: datetime | None,
        limit: int = EXCHANGE_PAGE_LIMIT,
        cursor: datetime | None = None,
    ) -> CandlePage:
        """One page of 1-minute candles (``from``/``to``/``cursor`` passed as given)."""
        params = _page_params(start, end, limit, cursor)
        params["range"] = "1m"
        msg = await self._get(CANDLES_PATH, params, wire.candle_page_decoder)
        return CandlePage(wire.to_candles(msg), msg.next_cursor)

    async def settlements_page(
        self,
        *,
        start: datetime | None,
        end: datetime | None,
        limit: int = EXCHANGE_PAGE_LIMIT,
        cursor: datetime | None = None,
    ) -> SettlementPage:
        """One page of funding settlements (``from``/``to``/``cursor`` passed as given)."""
        params = _page_params(start, end, limit, cursor)
        msg = await self._get(SETTLEMENTS_PATH, params, wire.settlement_page_decoder)
        return SettlementPage(wire.to_settlements(msg), msg.next_cursor)

    async def candle_pages(
        self, start: datetime, end: datetime, *, limit: int = EXCHANGE_PAGE_LIMIT
    ) -> AsyncIterator[list[Candle]]:
        """Every candle with ``start <= time <= end``, page by page, newest page first.

        Each yielded list is non-empty and in the order the exchange sent it; the caller
        validates it. See :meth:`_pages` for how the bounds are made exact.
        """

        async def fetch(cursor: datetime | None) -> tuple[list[Candle], datetime | None]:
            page = await self.candles_page(
                start=start - MINUTE, end=end + MINUTE, limit=limit, cursor=cursor
            )
            return page.candles, page.next_cursor

        async for items in _pages(fetch, start, end, limit, lambda c: c.time, CANDLES_PATH):
            yield items

    async def settlement_pages(
        self, start: datetime, end: datetime, *, limit: int = EXCHANGE_PAGE_LIMIT
    ) -> AsyncIterator[list[FundingSettlement]]:
        """Every settlement with ``start <= time <= end``, page by page, newest page first."""

        async def fetch(
            cursor: datetime | None,
        ) -> tuple[list[FundingSettlement], datetime | None]:
            page = await self.settlements_page(
                start=start - MINUTE, end=end + MINUTE, limit=limit, cursor=cursor
            )
            return page.settlements, page.next_cursor

        async for items in _pages(fetch, start, end, limit, lambda s: s.time, SETTLEMENTS_PATH):
            yield items

    # --- transport ------------------------------------------------------------------------

    async def _get(
        self, path: str, params: Mapping[str, str], decoder: msgspec.json.Decoder[_T]
    ) -> _T:
        """GET ``path`` with retries; the decoded 2xx body or the mapped error."""
        url = self.base_url + path
        for trial in range(1, self.error_max_trials + 1):
            waited = await self.limiter.acquire()
            self.counters.limiter_wait_s += waited
            started = time.monotonic()
            try:
                body = await self._attempt(url, path, params, decoder)
            except _Recoverable as failure:
                self._observe(path, started, failure.error)
                self.counters.errors += 1
                if trial >= self.error_max_trials:
                    if failure.retry_after_s is not None:
                        self.limiter.defer(failure.retry_after_s)  # for the next caller
                    raise failure.error from failure.error.__cause__
                wait_s = self.error_cooldown_s
                if failure.retry_after_s is not None:
                    wait_s = failure.retry_after_s
                self.counters.retries += 1
                _log.warning(
                    "rest_request_retry",
                    endpoint=path,
                    trial=trial,
                    max_trials=self.error_max_trials,
                    wait_s=wait_s,
                    error=str(failure.error),
                    error_type=type(failure.error).__name__,
                    status=getattr(failure.error, "status", None),
                )
                # The limiter also honours the wait, for any concurrent request.
                self.limiter.defer(wait_s)
            except ExchangeError as exc:
                self._observe(path, started, exc)
                self.counters.errors += 1
                raise
            else:
                self._observe(path, started, None)
                return body
        raise AssertionError("unreachable")  # pragma: no cover

    def _observe(self, path: str, started: float, error: ExchangeError | None) -> None:
        """Report one attempt's latency to ``on_request`` (endpoint, seconds, status)."""
        if self.on_request is None:
            return
        code: int | str = 200 if error is None else getattr(error, "status", None) or "error"
        self.on_request(path.rsplit("/", 1)[-1], time.monotonic() - started, code)

    async def _attempt(
        self,
        url: str,
        path: str,
        params: Mapping[str, str],
        decoder: msgspec.json.Decoder[_T],
    ) -> _T:
        """One HTTP attempt; recoverable failures come out as :class:`_Recoverable`."""
        self.counters.requests += 1
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self._transport.get(HttpRequest(url, params))
        except TimeoutError as exc:
            self.counters.timeouts += 1
            error: ExchangeError = ExchangeTimeout(
                f"GET {path}: no complete answer within {self.timeout_s:g} s"
            )
            error.__cause__ = exc
            raise _Recoverable(error) from exc
        except IncompleteBody as exc:
            # The headers came, the body did not arrive whole (connection closed mid-body).
            error = ExchangeBodyError(
                f"GET {path}: HTTP {exc.status} body not received whole: {exc.detail}"
            )
            error.__cause__ = exc.__cause__ or exc
            raise _Recoverable(error) from error.__cause__
        except (aiohttp.ClientError, OSError) as exc:
            error = ExchangeTransportError(f"GET {path}: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            raise _Recoverable(error) from exc

        status = response.status
        if 200 <= status < 300:
            self.counters.responses_ok += 1
            try:
                return wire.decode(decoder, response.body, path, status=status)
            except ExchangeBodyError as exc:  # not JSON at all: a transport fault, retried
                raise _Recoverable(exc) from exc.__cause__
        http_error = _http_error(status, response.reason, response.body, path)
        if status == 429:
            self.counters.rate_limited += 1
            retry_after = response.headers.get("Retry-After")
            retry_after_s = _parse_retry_after(retry_after, self.max_retry_after_s)
            _log.warning(
                "rest_rate_limited",
                endpoint=path,
                status=status,
                retry_after_s=retry_after_s,
                message=http_error.message,
            )
            raise _Recoverable(http_error, retry_after_s)
        # 408, 5xx and every other 4xx (a stray 400) alike: retried, then recoverable.
        raise _Recoverable(http_error)


async def _pages(
    fetch: Callable[[datetime | None], Awaitable[tuple[list[_R], datetime | None]]],
    start: datetime,
    end: datetime,
    limit: int,
    time_of: Callable[[_R], datetime],
    endpoint: str,
) -> AsyncIterator[list[_R]]:
    """Page backwards through ``[start, end]`` following ``nextCursor``.

    Which of ``from``/``to`` the exchange treats as inclusive is not documented, so the
    callers ask for ``from = start - 1 min`` and ``to = end + 1 min``: whichever way the
    exchange reads the bounds, ``start`` and ``end`` themselves are inside the answer, and
    the extra items just outside are filtered out here. The cursor is documented as
    exclusive; should the exchange repeat the cursor item anyway, items not older than what
    was already yielded are dropped, so nothing is yielded twice. Paging stops at an empty
    page, a null ``nextCursor``, a page reaching ``start``, or a page shorter than ``limit``
    (the exchange had no more items in the range).
    """
    start = require_utc(start, "start")
    end = require_utc(end, "end")
    if not 1 <= limit <= EXCHANGE_PAGE_LIMIT:
        raise ValueError(f"limit must be in 1..{EXCHANGE_PAGE_LIMIT}, got {limit}")
    if start > end:
        return
    cursor: datetime | None = None
    upper = end  # inclusive bound for the next yielded item
    while True:
        items, next_cursor = await fetch(cursor)
        if not items:
            return
        kept = [item for item in items if start <= time_of(item) <= upper]
        if kept:
            yield kept
            upper = min(time_of(item) for item in kept) - _EPSILON
        oldest = min(time_of(item) for item in items)
        if next_cursor is None or oldest <= start or len(items) < limit:
            return
        if cursor is not None and next_cursor >= cursor:
            raise InvalidMarketData(
                f"{endpoint}: nextCursor {format_rfc3339_ms(next_cursor)} does not move back "
                f"from cursor {format_rfc3339_ms(cursor)}"
            )
        cursor = next_cursor


_EPSILON = datetime.resolution


def _page_params(
    start: datetime | None, end: datetime | None, limit: int, cursor: datetime | None
) -> dict[str, str]:
    if not 1 <= limit <= EXCHANGE_PAGE_LIMIT:
        raise ValueError(f"limit must be in 1..{EXCHANGE_PAGE_LIMIT}, got {limit}")
    params: dict[str, str] = {}
    if start is not None:
        params["from"] = format_rfc3339_ms(require_utc(start, "start"))
    if end is not None:
        params["to"] = format_rfc3339_ms(require_utc(end, "end"))
    params["limit"] = str(limit)
    if cursor is not None:
        params["cursor"] = format_rfc3339_ms(require_utc(cursor, "cursor"))
    return params


def _http_error(status: int, reason: str, body: bytes, endpoint: str) -> ExchangeHttpError:
    """The mapped error of a non-2xx answer, keeping the raw body.

    Its message is the exchange's ``message`` from a JSON error body, otherwise the start of
    the body (at most :data:`wire.EXCERPT_CHARS` characters), or the reason phrase when the
    body is empty. 408, 429 and 5xx are :class:`ExchangeServerError`, any other status
    :class:`ExchangeClientError`.
    """
    text = body.decode("utf-8", errors="replace")
    extra: dict[str, Any] = {}
    try:
        parsed = wire.error_body_decoder.decode(body)
    except msgspec.DecodeError:
        message = wire.excerpt(body) if body.strip() else (reason or "(empty body)")
    else:
        message = wire.excerpt(parsed.message.encode()) if parsed.message.strip() else reason
        extra = {"code": parsed.code, "details": parsed.details}
    server_side = status >= 500 or status in (408, 429)
    cls = ExchangeServerError if server_side else ExchangeClientError
    return cls(status, message, text, endpoint=endpoint, **extra)


def _parse_retry_after(value: str | None, cap_s: float) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or HTTP date), capped; None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), cap_s)
