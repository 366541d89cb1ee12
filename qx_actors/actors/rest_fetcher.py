"""The REST fetcher actor: owns the LN Markets REST client on its own event-loop thread.

It takes fetch requests (in :class:`Envelope`\\ s) from the Engine, pages through the exchange,
validates every page, and hands the pages straight to the DB writer, a few at a time (flow
control: pages are grouped into batches of :data:`WRITE_BATCH_CANDLES`, at most
:data:`PAGES_IN_FLIGHT` batches unacknowledged), so that fetching page *n+1*
overlaps writing page *n*. When the last page is handed over it sends the DB writer a *finish*
message; the DB writer, having written everything before it, answers the Engine. A failed fetch
is answered to the Engine directly with the error. On stop every request in flight is cancelled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pykka

from qx_actors.actors.base import QxActor, RunThreads
from qx_actors.actors.loop_thread import LoopThread
from qx_actors.actors.messages import (
    CancelRequest,
    Envelope,
    FetchCandleRange,
    FetchSettlementRange,
    FinishCandleRange,
    FinishSettlementRange,
    PageStored,
    Reply,
    StoreCandlePage,
    StoreSettlementPage,
)
from qx_actors.config import QxConfig
from qx_actors.domain.timeutil import MINUTE
from qx_actors.domain.validation import format_utc, validate_candle_page, validate_settlement_page
from qx_actors.domain.values import Candle
from qx_actors.errors import InvalidMarketData
from qx_actors.lnmarkets.rest import RestClient
from qx_actors.logs import get_logger

#: Batches handed to the DB writer and not yet acknowledged, per request.
PAGES_IN_FLIGHT = 3
#: A long range is fetched as this many parts at once (see :func:`_split`)...
PARALLEL_PARTS = 2
#: ... when it spans at least this many pages.
PARALLEL_MIN_PAGES = 8
#: Validated candle pages are written together up to this many candles: one transaction and
#: one acknowledgement per batch instead of per page (measured: the per-transaction cost was a
#: tenth of a 1000-row upsert on SQLite).
WRITE_BATCH_CANDLES = 4000


class RestFetcherActor(QxActor):
    """Fetches candles and settlements over REST and feeds the DB writer."""

    def __init__(
        self,
        *,
        threads: RunThreads,
        config: QxConfig,
        db_writer: pykka.ActorRef[Any],
        run_id: str,
        supervisor: pykka.ActorRef[Any] | None = None,
        child_name: str | None = None,
    ) -> None:
        super().__init__(
            threads=threads, run_id=run_id, supervisor=supervisor, child_name=child_name
        )
        sync = config.sync
        self._client = RestClient(
            config.exchange.rest_url,
            timeout_s=sync.rest_timeout_s,
            rate_limit_per_s=sync.rest_rate_limit_per_s,
            error_cooldown_s=sync.rest_error_cooldown_s,
            error_max_trials=sync.rest_error_max_trials,
        )
        self._db_writer = db_writer
        self._loop = LoopThread(f"qx-rest-{run_id}")
        self._inflight: dict[int, concurrent.futures.Future[None]] = {}
        self._windows: dict[int, asyncio.Semaphore] = {}
        self.gauges = FetcherGauges()
        self._log = get_logger(run_id=run_id, actor="rest_fetcher")

    @property
    def client(self) -> RestClient:
        """The REST client (its counters feed the metrics)."""
        return self._client

    def on_start(self) -> None:
        super().on_start()
        self._loop.start()
        self.threads.add(self._loop.thread)

    def on_stop(self) -> None:
        self._cancel_all()
        try:
            self._loop.run(self._client.close(), timeout=1.0)
        except Exception as exc:  # closing is best effort; the loop goes anyway
            self._log.debug("rest_client_close_failed", error=repr(exc))
        self._loop.stop()
        super().on_stop()

    def on_receive(self, message: Any) -> Any:
        match message:
            case Envelope(request_id=rid, reply_to=reply_to, payload=FetchCandleRange() as req):
                self._run(rid, reply_to, self._fetch_candles(rid, reply_to, req))
            case Envelope(request_id=rid, reply_to=reply_to, payload=FetchSettlementRange() as req):
                self._run(rid, reply_to, self._fetch_settlements(rid, reply_to, req))
            case PageStored(request_id=rid):
                self._loop.call_soon(self._page_acknowledged, rid)
            case CancelRequest(request_id=rid):
                future = self._inflight.pop(rid, None)
                if future is not None:
                    future.cancel()
            case _:
                self._log.warning("unknown_message", message=repr(message))
        return None

    # -- running requests on the loop --------------------------------------------------------

    def _send_page(self, message: StoreCandlePage | StoreSettlementPage) -> None:
        self.gauges.unacknowledged_pages += 1  # loop thread only, as the decrement
        self._db_writer.tell(message)

    def _page_acknowledged(self, request_id: int) -> None:
        self.gauges.unacknowledged_pages = max(self.gauges.unacknowledged_pages - 1, 0)
        window = self._windows.get(request_id)
        if window is not None:
            window.release()

    def _run(self, request_id: int, reply_to: pykka.ActorRef[Any], coro: Any) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _tell(reply_to, Reply(request_id, error=exc))
            finally:
                self._windows.pop(request_id, None)

        future = self._loop.submit(guarded())
        self._inflight[request_id] = future
        future.add_done_callback(lambda _: self._inflight.pop(request_id, None))

    def _cancel_all(self) -> None:
        for future in list(self._inflight.values()):
            future.cancel()
        self._inflight.clear()

    async def _fetch_candles(
        self, request_id: int, reply_to: pykka.ActorRef[Any], request: FetchCandleRange
    ) -> None:
        download = request.download
        window = self._windows[request_id] = asyncio.Semaphore(PAGES_IN_FLIGHT)
        parts = _split(download.start, download.end, request.batch_size)
        try:
            async with asyncio.TaskGroup() as group:  # one failing part cancels the others
                tasks = [
                    group.create_task(self._fetch_part(request_id, start, end, request, window))
                    for start, end in parts
                ]
        except ExceptionGroup as errors:
            # The Engine decides from the error's type: hand it the part's own error.
            raise _first_leaf(errors) from None
        results = [task.result() for task in tasks]
        count = sum(part.count for part in results)
        olds = [part.oldest for part in results if part.oldest is not None]
        missing = _merge_descending([m for part in results for m in part.missing])
        self._db_writer.tell(
            FinishCandleRange(
                request_id, reply_to, download, count, min(olds, default=None), tuple(missing)
            )
        )

    async def _fetch_part(
        self,
        request_id: int,
        start: datetime,
        end: datetime,
        request: FetchCandleRange,
        window: asyncio.Semaphore,
    ) -> _PartResult:
        """Page through ``[start, end]``, validate, hand batches over; what came back."""
        result = _PartResult()
        expected = end  # the next minute we expect, walking backwards
        pending: list[Candle] = []
        async for page in self._client.candle_pages(start, end, limit=request.batch_size):
            validate_candle_page(page)
            if result.oldest is not None and page[0].time >= result.oldest:
                raise InvalidMarketData(
                    f"candles not strictly descending across pages at {format_utc(page[0].time)}"
                )
            result.oldest = page[-1].time
            result.count += len(page)
            for candle in page:
                if candle.time < expected:
                    result.missing.append((candle.time + MINUTE, expected))
                expected = candle.time - MINUTE
            pending.extend(page)
            if len(pending) >= WRITE_BATCH_CANDLES:
                await window.acquire()
                self._send_page(StoreCandlePage(tuple(pending), self.actor_ref, request_id))
                pending = []
        if pending:
            await window.acquire()
            self._send_page(StoreCandlePage(tuple(pending), self.actor_ref, request_id))
        if expected >= start:
            result.missing.append((start, expected))
        return result

    async def _fetch_settlements(
        self, request_id: int, reply_to: pykka.ActorRef[Any], request: FetchSettlementRange
    ) -> None:
        window = self._windows[request_id] = asyncio.Semaphore(PAGES_IN_FLIGHT)
        count = 0
        oldest: datetime | None = None
        async for page in self._client.settlement_pages(
            request.start, request.end, limit=request.batch_size
        ):
            validate_settlement_page(page)
            if oldest is not None and page[0].time >= oldest:
                raise InvalidMarketData(
                    "settlements not strictly descending across pages at "
                    f"{format_utc(page[0].time)}"
                )
            oldest = page[-1].time
            count += len(page)
            await window.acquire()
            self._send_page(StoreSettlementPage(tuple(page), self.actor_ref, request_id))
        self._db_writer.tell(FinishSettlementRange(request_id, reply_to, count))


def _tell(ref: pykka.ActorRef[Any], message: Any) -> None:
    with contextlib.suppress(pykka.ActorDeadError):
        ref.tell(message)


@dataclass
class FetcherGauges:
    """Current figures for the health probe (written by the actor, read by the probe)."""

    #: pages handed to the DB writer and not acknowledged yet (flow control: a few at most)
    unacknowledged_pages: int = 0


@dataclass
class _PartResult:
    """What one part of a range fetch received."""

    count: int = 0
    oldest: datetime | None = None
    #: minutes the exchange returned nothing for, descending
    missing: list[tuple[datetime, datetime]] = field(default_factory=list)


def _split(start: datetime, end: datetime, batch_size: int) -> list[tuple[datetime, datetime]]:
    """A long range as :data:`PARALLEL_PARTS` adjacent parts, newest first (else whole).

    Cursor paging is sequential; independent parts let requests overlap the exchange's
    latency. The rate limiter still paces every request.
    """
    minutes = int((end - start) / MINUTE) + 1
    if minutes < PARALLEL_MIN_PAGES * batch_size:
        return [(start, end)]
    step = minutes // PARALLEL_PARTS
    bounds = [start + i * step * MINUTE for i in range(PARALLEL_PARTS)] + [end + MINUTE]
    parts = [(bounds[i], bounds[i + 1] - MINUTE) for i in range(PARALLEL_PARTS)]
    return parts[::-1]


def _first_leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first error in a (possibly nested) exception group."""
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _merge_descending(ranges: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Join descending inclusive minute ranges that touch (at the parts' seams)."""
    merged: list[tuple[datetime, datetime]] = []
    for first, last in ranges:
        if merged and merged[-1][0] - MINUTE == last:
            merged[-1] = (first, merged[-1][1])
        else:
            merged.append((first, last))
    return merged
