"""The REST fetcher actor: owns the LN Markets REST client on its own event-loop thread.

It takes fetch requests (in :class:`Envelope`\\ s) from the Engine, pages through the exchange,
validates every page, and hands the pages straight to the DB writer, a few at a time (flow
control: at most :data:`PAGES_IN_FLIGHT` unacknowledged pages), so that fetching page *n+1*
overlaps writing page *n*. When the last page is handed over it sends the DB writer a *finish*
message; the DB writer, having written everything before it, answers the Engine. A failed fetch
is answered to the Engine directly with the error. On stop every request in flight is cancelled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from datetime import datetime
from typing import Any

import pykka

from qx_actors.actors.base import QxActor, RunThreads
from qx_actors.actors.loop_thread import LoopThread
from qx_actors.actors.messages import (
    CancelFetches,
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
from qx_actors.errors import InvalidMarketData
from qx_actors.lnmarkets.rest import RestClient
from qx_actors.logs import get_logger

#: Pages handed to the DB writer and not yet acknowledged, per request.
PAGES_IN_FLIGHT = 4


class RestFetcherActor(QxActor):
    """Fetches candles and settlements over REST and feeds the DB writer."""

    def __init__(
        self,
        *,
        threads: RunThreads,
        config: QxConfig,
        db_writer: pykka.ActorRef[Any],
        run_id: str,
    ) -> None:
        super().__init__(threads=threads)
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

    def on_receive(self, message: Any) -> Any:
        match message:
            case Envelope(request_id=rid, reply_to=reply_to, payload=FetchCandleRange() as req):
                self._run(rid, reply_to, self._fetch_candles(rid, reply_to, req))
            case Envelope(request_id=rid, reply_to=reply_to, payload=FetchSettlementRange() as req):
                self._run(rid, reply_to, self._fetch_settlements(rid, reply_to, req))
            case PageStored(request_id=rid):
                window = self._windows.get(rid)
                if window is not None:
                    self._loop.call_soon(window.release)
            case CancelFetches():
                self._cancel_all()
            case _:
                self._log.warning("unknown_message", message=repr(message))
        return None

    # -- running requests on the loop --------------------------------------------------------

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
        missing: list[tuple[datetime, datetime]] = []
        expected = download.end  # the next minute we expect, walking backwards
        count = 0
        oldest: datetime | None = None
        async for page in self._client.candle_pages(
            download.start, download.end, limit=request.batch_size
        ):
            validate_candle_page(page)
            if oldest is not None and page[0].time >= oldest:
                raise InvalidMarketData(
                    f"candles not strictly descending across pages at {format_utc(page[0].time)}"
                )
            oldest = page[-1].time
            count += len(page)
            for candle in page:
                if candle.time < expected:
                    missing.append((candle.time + MINUTE, expected))
                expected = candle.time - MINUTE
            await window.acquire()
            self._db_writer.tell(StoreCandlePage(tuple(page), self.actor_ref, request_id))
        if expected >= download.start:
            missing.append((download.start, expected))
        self._db_writer.tell(
            FinishCandleRange(request_id, reply_to, download, count, oldest, tuple(missing))
        )

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
            self._db_writer.tell(StoreSettlementPage(tuple(page), self.actor_ref, request_id))
        self._db_writer.tell(FinishSettlementRange(request_id, reply_to, count))


def _tell(ref: pykka.ActorRef[Any], message: Any) -> None:
    with contextlib.suppress(pykka.ActorDeadError):
        ref.tell(message)
