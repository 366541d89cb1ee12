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
  The error names the status and the exchange's message, or the start of the body;
* well-formed JSON of the wrong shape (:class:`ExchangeDecodeError` naming the field path, the
  value found there and the time of the item it belongs to);
* a page that breaks the exchange's rules (:class:`InvalidMarketData`: checked by
  :mod:`qx_actors.domain.validation` as each page arrives, plus a ``nextCursor`` that does not
  move back; the message names the endpoint, the item's time, the field and its value).

The last two are what quantoxide's SDK reports as deserialisation errors, and it treats them as
every REST error: asked again, then recoverable. A page is returned (or yielded) only once it
decoded and passed the checks, so nothing of a bad page ever reaches the database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import aiohttp
import msgspec
import yarl

from qx_actors.domain.timeutil import MINUTE, format_rfc3339_ms, require_utc
from qx_actors.domain.validation import validate_candle_page, validate_settlement_page
from qx_actors.domain.values import EXCHANGE_PAGE_LIMIT, Candle, FundingSettlement
from qx_actors.errors import (
    ExchangeBodyError,
    ExchangeClientError,
    ExchangeDecodeError,
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

__all__ = [
    "CANDLES_PATH",
    "SETTLEMENTS_PATH",
    "VALUE_CHARS",
    "CandlePage",
    "RateLimiter",
    "RestClient",
    "RestCounters",
    "SettlementPage",
]

_log = get_logger()

CANDLES_PATH = "/v3/futures/candles"
SETTLEMENTS_PATH = "/v3/futures/funding-settlements"

_T = TypeVar("_T")
_R = TypeVar("_R")
_P = TypeVar("_P")

#: Checks one page against the paging so far (items as sent, nextCursor); raises
#: :class:`InvalidMarketData`.
_PageCheck = Callable[[list[_R], datetime | None], None]


class _PageMsg(Protocol):
    """A decoded page of the exchange: its items and ``nextCursor``."""

    @property
    def next_cursor(self) -> datetime | None: ...


_M = TypeVar("_M", bound=_PageMsg)

#: Gets one page of an endpoint: ``(from, to, limit, cursor, check)`` -> the page.
_PageGet = Callable[
    [datetime | None, datetime | None, int, datetime | None, _PageCheck[_R] | None], Awaitable[_M]
]


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
        """One page of 1-minute candles (``from``/``to``/``cursor`` passed as given), decoded
        and checked (:func:`~qx_actors.domain.validation.validate_candle_page`)."""
        return await self._candles_page(start, end, limit, cursor, None)

    async def settlements_page(
        self,
        *,
        start: datetime | None,
        end: datetime | None,
        limit: int = EXCHANGE_PAGE_LIMIT,
        cursor: datetime | None = None,
    ) -> SettlementPage:
        """One page of funding settlements (``from``/``to``/``cursor`` passed as given),
        decoded and checked (:func:`~qx_actors.domain.validation.validate_settlement_page`)."""
        return await self._settlements_page(start, end, limit, cursor, None)

    async def _candles_page(
        self,
        start: datetime | None,
        end: datetime | None,
        limit: int,
        cursor: datetime | None,
        check: _PageCheck[Candle] | None,
    ) -> CandlePage:
        params = {**_page_params(start, end, limit, cursor), "range": "1m"}
        return await self._page(
            CANDLES_PATH,
            params,
            wire.candle_page_decoder,
            wire.to_candles,
            validate_candle_page,
            CandlePage,
            check,
        )

    async def _settlements_page(
        self,
        start: datetime | None,
        end: datetime | None,
        limit: int,
        cursor: datetime | None,
        check: _PageCheck[FundingSettlement] | None,
    ) -> SettlementPage:
        return await self._page(
            SETTLEMENTS_PATH,
            _page_params(start, end, limit, cursor),
            wire.settlement_page_decoder,
            wire.to_settlements,
            validate_settlement_page,
            SettlementPage,
            check,
        )

    async def _page(
        self,
        path: str,
        params: Mapping[str, str],
        decoder: msgspec.json.Decoder[_M],
        to_items: Callable[[_M], list[_R]],
        validate: Callable[[list[_R]], None],
        make_page: Callable[[list[_R], datetime | None], _P],
        check: _PageCheck[_R] | None,
    ) -> _P:
        """One page of ``path``: decoded, converted to domain items, checked on its own
        (``validate``) and against the paging so far (``check``), all inside the retries."""

        def convert(msg: _M) -> _P:
            items = to_items(msg)
            validate(items)
            if check is not None:
                check(items, msg.next_cursor)
            return make_page(items, msg.next_cursor)

        return await self._get(path, params, decoder, convert)

    async def candle_pages(
        self, start: datetime, end: datetime, *, limit: int = EXCHANGE_PAGE_LIMIT
    ) -> AsyncIterator[list[Candle]]:
        """Every candle with ``start <= time <= end``, page by page, newest page first.

        Each yielded list is non-empty, in the order the exchange sent it, and checked: a page
        that does not decode or breaks the exchange's rules is asked for again like any failed
        request, then raised. See :meth:`_pages` for how the bounds are made exact.
        """
        pages = _pages(self._candles_page, lambda p: p.candles, start, end, limit, lambda c: c.time)
        async for items in pages:
            yield items

    async def settlement_pages(
        self, start: datetime, end: datetime, *, limit: int = EXCHANGE_PAGE_LIMIT
    ) -> AsyncIterator[list[FundingSettlement]]:
        """Every settlement with ``start <= time <= end``, page by page, newest page first
        (checked as :meth:`candle_pages` checks candles)."""
        pages = _pages(
            self._settlements_page, lambda p: p.settlements, start, end, limit, lambda s: s.time
        )
        async for items in pages:
            yield items

    # --- transport ------------------------------------------------------------------------

    async def _get(
        self,
        path: str,
        params: Mapping[str, str],
        decoder: msgspec.json.Decoder[_T],
        convert: Callable[[_T], _P],
    ) -> _P:
        """GET ``path`` with retries; the 2xx body decoded, converted and checked by
        ``convert`` (which raises :class:`InvalidMarketData`), or the mapped error."""
        url = self.base_url + path
        for trial in range(1, self.error_max_trials + 1):
            waited = await self.limiter.acquire()
            self.counters.limiter_wait_s += waited
            started = time.monotonic()
            try:
                body = await self._attempt(url, path, params, decoder, convert)
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
        convert: Callable[[_T], _P],
    ) -> _P:
        """One HTTP attempt; recoverable failures (every one) come out as
        :class:`_Recoverable`."""
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
                return convert(wire.decode(decoder, response.body, path, status=status))
            except ExchangeBodyError as exc:  # not JSON at all: a transport fault, retried
                raise _Recoverable(exc) from exc.__cause__
            except ExchangeDecodeError as exc:  # JSON of the wrong shape: retried
                error = _with_offending_value(exc, response.body)
                raise _Recoverable(error) from exc.__cause__
            except InvalidMarketData as exc:  # against the exchange's rules: retried
                if not exc.endpoint:
                    exc = InvalidMarketData(exc.detail, endpoint=path)
                raise _Recoverable(exc) from None
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
    get_page: _PageGet[_R, _M],
    items_of: Callable[[_M], list[_R]],
    start: datetime,
    end: datetime,
    limit: int,
    time_of: Callable[[_R], datetime],
) -> AsyncIterator[list[_R]]:
    """Page backwards through ``[start, end]`` following ``nextCursor``.

    ``get_page`` asks for one page (``from``, ``to``, ``limit``, ``cursor``, the check), and
    ``items_of`` takes its items. Which of ``from``/``to`` the exchange treats as inclusive is
    not documented, so it asks for ``from = start - 1 min`` and ``to = end + 1 min``: whichever
    way the exchange reads the bounds, ``start`` and ``end`` themselves are inside the answer,
    and the extra items just outside are filtered out here. The cursor is documented as
    exclusive; should the exchange repeat the cursor item anyway, items not older than what
    was already yielded are dropped, so nothing is yielded twice. Paging stops at an empty
    page, a null ``nextCursor``, a page reaching ``start``, or a page shorter than ``limit``
    (the exchange had no more items in the range). ``get_page`` gets the check of a page that
    continues the paging (its ``nextCursor`` must move back from the cursor), to run it inside
    the request's trials.
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
        check = _cursor_check(cursor, start, limit, time_of)
        page = await get_page(start - MINUTE, end + MINUTE, limit, cursor, check)
        items, next_cursor = items_of(page), page.next_cursor
        if not items:
            return
        kept = [item for item in items if start <= time_of(item) <= upper]
        if kept:
            yield kept
            upper = min(time_of(item) for item in kept) - _EPSILON
        if next_cursor is None or not _continues(items, next_cursor, start, limit, time_of):
            return
        cursor = next_cursor


def _continues(
    items: list[_R],
    next_cursor: datetime | None,
    start: datetime,
    limit: int,
    time_of: Callable[[_R], datetime],
) -> bool:
    """Whether a page asks for the next one: a ``nextCursor``, a full page, not yet at
    ``start``."""
    return (
        bool(items)
        and next_cursor is not None
        and len(items) >= limit
        and min(time_of(item) for item in items) > start
    )


def _cursor_check(
    cursor: datetime | None, start: datetime, limit: int, time_of: Callable[[_R], datetime]
) -> _PageCheck[_R]:
    """The check of the page asked for with ``cursor``: if it continues the paging, its
    ``nextCursor`` must be older than ``cursor`` (else the paging would never end)."""

    def check(items: list[_R], next_cursor: datetime | None) -> None:
        if cursor is None or not _continues(items, next_cursor, start, limit, time_of):
            return
        assert next_cursor is not None
        if next_cursor >= cursor:
            raise InvalidMarketData(
                f"nextCursor {format_rfc3339_ms(next_cursor)} does not move back from cursor "
                f"{format_rfc3339_ms(cursor)}"
            )

    return check


_EPSILON = datetime.resolution


#: One step of a msgspec error path: ``.field`` or ``[index]``.
_PATH_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
#: How many characters of an offending value an error message quotes.
VALUE_CHARS = 80


def _with_offending_value(error: ExchangeDecodeError, body: bytes) -> ExchangeDecodeError:
    """``error`` naming the value found at its path in ``body`` (as JSON text) and the
    ``time`` of the item (candle, settlement) that holds it; ``error`` itself when the path
    can't be followed."""
    value, item_time = _value_at(body, error.path or "$")
    if value is None:
        return error
    richer = ExchangeDecodeError(
        error.detail,
        path=error.path,
        endpoint=error.endpoint,
        value=value,
        item_time=item_time,
    )
    richer.__cause__ = error.__cause__
    return richer


def _value_at(body: bytes, path: str) -> tuple[str | None, str | None]:
    """The JSON text (cut to :data:`VALUE_CHARS`) at msgspec ``path`` (``$.data[3].open``) in
    ``body``, and the ``time`` of the innermost object on the way that has one (unless the
    path ends at that ``time``)."""
    if not path.startswith("$"):
        return None, None
    try:
        node: Any = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None, None
    item_time: str | None = None
    position = 1
    for step in _PATH_STEP.finditer(path, 1):
        if step.start() != position:
            return None, None
        position = step.end()
        key, index = step.groups()
        if isinstance(node, dict) and isinstance(node.get("time"), str | int | float):
            item_time = str(node["time"])
        if key is not None and isinstance(node, dict) and key in node:
            node = node[key]
        elif index is not None and isinstance(node, list) and int(index) < len(node):
            node = node[int(index)]
        else:
            return None, None
    if position != len(path):
        return None, None
    if isinstance(node, dict) and isinstance(node.get("time"), str | int | float):
        item_time = str(node["time"])
    if path.endswith(".time"):
        item_time = None
    text = msgspec.json.encode(node).decode()
    if len(text) > VALUE_CHARS:
        text = text[: VALUE_CHARS - 1] + "…"
    return text, item_time


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
