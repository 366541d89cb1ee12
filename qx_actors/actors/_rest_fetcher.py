"""The REST fetcher actor: owns the LN Markets REST client, on its own event loop.

It takes fetch requests (in :class:`Envelope`\\ s) from the Engine, pages through the exchange,
and hands the pages straight to the DB writer, a few at a time (flow control: pages are grouped
into batches of :data:`WRITE_BATCH_CANDLES`, at most :data:`PAGES_IN_FLIGHT` batches
unacknowledged), so that fetching page *n+1* overlaps writing page *n*. Once every batch is
acknowledged it answers the Engine itself: one request, one :class:`Reply` from here, whether
the fetch succeeded, the exchange failed or a write failed (the DB writer acknowledges a page
with its error). On stop every request in flight is cancelled and the HTTP session closed.

Every page it gets has been checked by the client (:class:`RestClient` runs
:mod:`qx_actors.domain.validation` on each answer, inside the request's trials): a page that
does not decode or breaks the exchange's rules is asked for again, and after the last trial its
error (:class:`~qx_actors.errors.ExchangeDecodeError`,
:class:`~qx_actors.errors.InvalidMarketData`: recoverable) fails the request before anything of
that page is handed to the DB writer. Pages of the request that came before it and are still
being collected into a batch are dropped with it; batches already handed over were valid.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from qx_actors.actors._base import AsyncQxActor, RunThreads, tell
from qx_actors.actors.messages import (
    ActorRef,
    CancelRequest,
    CandleRangeStored,
    Envelope,
    FetchCandleRange,
    FetchSettlementRange,
    PageStored,
    Reply,
    SettlementRangeStored,
    StoreCandlePage,
    StoreSettlementPage,
)
from qx_actors.domain.spans import join_touching_descending
from qx_actors.domain.timeutil import MINUTE, utc_now
from qx_actors.domain.values import Candle
from qx_actors.lnmarkets.rest import RestClient
from qx_actors.logs import get_logger
from qx_actors.observability._run_health import RunHealth

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


class _WriteWindow:
    """The pages of one request that are with the DB writer: at most :data:`PAGES_IN_FLIGHT`.

    A failed write fails the request: the next :meth:`send` or :meth:`drain` raises it.
    """

    def __init__(self) -> None:
        self._slots = asyncio.Semaphore(PAGES_IN_FLIGHT)
        self._unacknowledged = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self.error: BaseException | None = None

    async def acquire(self) -> None:
        await self._slots.acquire()
        if self.error is not None:
            raise self.error
        self._unacknowledged += 1
        self._drained.clear()

    def acknowledge(self, error: BaseException | None) -> None:
        if error is not None and self.error is None:
            self.error = error
        self._unacknowledged = max(self._unacknowledged - 1, 0)
        if self._unacknowledged == 0:
            self._drained.set()
        self._slots.release()

    async def drain(self) -> None:
        """Wait until every page sent is acknowledged; raise the first write error."""
        await self._drained.wait()
        if self.error is not None:
            raise self.error


class RestFetcherActor(AsyncQxActor):
    """Fetches candles and settlements over REST and feeds the DB writer."""

    def __init__(
        self,
        *,
        threads: RunThreads,
        connect_rest: Callable[[], RestClient],
        db_writer: ActorRef,
        run_id: str,
        health: RunHealth | None = None,
        supervisor: ActorRef | None = None,
        child_name: str | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        super().__init__(
            threads=threads, run_id=run_id, supervisor=supervisor, child_name=child_name
        )
        self._client = connect_rest()
        # The run's clock: when a page was asked for, so that a candle that turned an hour
        # old while its page was in flight is not stored as final with provisional values.
        self._clock = clock
        self._db_writer = db_writer
        self._requests: dict[int, asyncio.Task[None]] = {}
        self._windows: dict[int, _WriteWindow] = {}
        self.gauges = FetcherGauges()
        if health is not None:
            counters, gauges = self._client.counters, self.gauges
            health.register("rest", lambda: dataclasses.asdict(counters))
            health.register_gauges("rest", lambda: dataclasses.asdict(gauges))
        self._log = get_logger(run_id=run_id, actor="rest_fetcher")

    async def release(self) -> None:
        await super().release()  # every request in flight is cancelled first
        try:
            await asyncio.wait_for(self._client.close(), timeout=1.0)
        except Exception as exc:  # closing is best effort
            self._log.debug("rest_client_close_failed", error=repr(exc))

    def on_receive(self, message: Any) -> Any:
        match message:
            case Envelope(request_id=rid, reply_to=reply_to, payload=FetchCandleRange() as req):
                self._answer_request(rid, reply_to, self._fetch_candles(rid, req))
            case Envelope(request_id=rid, reply_to=reply_to, payload=FetchSettlementRange() as req):
                self._answer_request(rid, reply_to, self._fetch_settlements(rid, req))
            case PageStored(request_id=rid, error=error):
                self.gauges.unacknowledged_pages = max(self.gauges.unacknowledged_pages - 1, 0)
                window = self._windows.get(rid)
                if window is not None:
                    window.acknowledge(error)
            case CancelRequest(request_id=rid):
                task = self._requests.pop(rid, None)
                if task is not None:
                    task.cancel()
            case _:
                self._log.warning("unknown_message", message=repr(message))
        return None

    # -- requests ----------------------------------------------------------------------------

    def _answer_request(
        self, request_id: int, reply_to: ActorRef, work: Coroutine[Any, Any, Any]
    ) -> None:
        """Run ``work`` and answer ``reply_to`` with its value or its error (one reply)."""

        async def answered() -> None:
            try:
                value = await work
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                tell(reply_to, Reply(request_id, error=exc))
            else:
                tell(reply_to, Reply(request_id, value))
            finally:
                self._windows.pop(request_id, None)
                self._requests.pop(request_id, None)

        self._windows[request_id] = _WriteWindow()
        task = self.start_task(answered(), name=f"request-{request_id}")
        # cancelled before it first ran (a shutdown, a cancelled request), ``work`` was never
        # awaited: close it (a no-op once it ran) rather than let Python warn about it
        task.add_done_callback(lambda _: work.close())
        self._requests[request_id] = task

    async def _send_page(
        self, window: _WriteWindow, message: StoreCandlePage | StoreSettlementPage
    ) -> None:
        await window.acquire()
        self.gauges.unacknowledged_pages += 1
        self._db_writer.tell(message)

    async def _fetch_candles(self, request_id: int, request: FetchCandleRange) -> CandleRangeStored:
        download = request.download
        window = self._windows[request_id]
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
        await window.drain()
        results = [task.result() for task in tasks]
        olds = [part.oldest for part in results if part.oldest is not None]
        return CandleRangeStored(
            download,
            sum(part.count for part in results),
            min(olds, default=None),
            tuple(join_touching_descending(m for part in results for m in part.missing)),
        )

    async def _fetch_part(
        self,
        request_id: int,
        start: datetime,
        end: datetime,
        request: FetchCandleRange,
        window: _WriteWindow,
    ) -> _PartResult:
        """Page through ``[start, end]`` (pages checked by the client), hand batches over;
        what came back."""
        result = _PartResult()
        expected = end  # the next minute we expect, walking backwards
        pending: list[Candle] = []
        asked_at = self._clock()  # when the next page is asked for, at the earliest
        pending_asked_at = asked_at
        async for page in self._client.candle_pages(start, end, limit=request.batch_size):
            if not pending:
                pending_asked_at = asked_at
            result.oldest = page[-1].time
            result.count += len(page)
            for candle in page:
                if candle.time < expected:
                    result.missing.append((candle.time + MINUTE, expected))
                expected = candle.time - MINUTE
            pending.extend(page)
            if len(pending) >= WRITE_BATCH_CANDLES:
                await self._send_page(
                    window,
                    StoreCandlePage(tuple(pending), self.actor_ref, request_id, pending_asked_at),
                )
                pending = []
            asked_at = self._clock()
        if pending:
            await self._send_page(
                window,
                StoreCandlePage(tuple(pending), self.actor_ref, request_id, pending_asked_at),
            )
        if expected >= start:
            result.missing.append((start, expected))
        return result

    async def _fetch_settlements(
        self, request_id: int, request: FetchSettlementRange
    ) -> SettlementRangeStored:
        window = self._windows[request_id]
        count = 0
        async for page in self._client.settlement_pages(
            request.start, request.end, limit=request.batch_size
        ):
            count += len(page)
            await self._send_page(
                window, StoreSettlementPage(tuple(page), self.actor_ref, request_id)
            )
        await window.drain()
        return SettlementRangeStored(count)


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
