"""The DB writer actor: the only writer of the database.

It opens the storage (creating or checking the schema) and takes the single-writer lock when it
starts (then tells the Engine :class:`DbWriterReady`: the WS feed may send ticks), upserts
pages in one transaction each, or the candle pages already waiting in its inbox together in one
(group commit; acknowledging each page to the REST fetcher, every page of a failed
transaction with its error), answers the Engine's state queries (so that they see every
write before them), and releases the lock when it stops. On a restart the Engine starts a new
DB writer (new connection, writer lock taken again); after a database error only the writer
and what needs it are restarted, the WS feed holds its ticks meanwhile.

Committed ticks are published from here, straight to the update hub: the supervisors never see
them; so is ``CandleClosed`` for each minute that a page makes stable (final) for the first
time, from an hour before the run started on (the minutes the run followed; what it fetches
of older history is not news). Ticks are never dropped for a failed write: the feed is
acknowledged all the same (so it keeps batching), the batch is kept and written before the
next one, the failure is reported to the Engine, and a writer that stops with ticks it could
not store hands them to the Engine (:class:`UnwrittenTicks`) for the next writer.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import queue
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from qx_actors.actors._base import QxActor, RunThreads, tell
from qx_actors.actors.messages import (
    ActorRef,
    CancelRequest,
    ChildFailed,
    DbWriterReady,
    Envelope,
    FlagHoles,
    PageStored,
    PruneTicks,
    QueryFunding,
    QueryPriceHistory,
    RecordVerifiedEmpty,
    Reply,
    Request,
    StoreCandlePage,
    StoreSettlementPage,
    StoreTicks,
    TicksStored,
    UnwrittenTicks,
)
from qx_actors.domain.timeutil import UNSTABLE_AGE, utc_now
from qx_actors.domain.values import Candle, PriceTick
from qx_actors.errors import StorageError
from qx_actors.logs import get_logger
from qx_actors.storage import Storage, stable_minutes
from qx_actors.updates import CandleClosedUpdate, PriceTickUpdate, UpdateHub

#: Opens the run's storage (a new connection each call).
StorageOpener = Callable[[], Storage]
#: Candles of the pages waiting in the inbox that one transaction takes at most.
GROUP_MAX_CANDLES = 20_000


def _page_bounds(candles: tuple[Candle, ...]) -> tuple[datetime, datetime] | None:
    """The first and last minute of a page in strict time order (either way, checked at C
    speed); ``None`` for an empty page or one out of order (never grouped)."""
    if not candles:
        return None
    times = [c.time for c in candles]
    after = itertools.islice(times, 1, None)
    if all(map(operator.gt, times, after)):
        return times[-1], times[0]
    if all(map(operator.lt, times, itertools.islice(times, 1, None))):
        return times[0], times[-1]
    return None


class DbWriterActor(QxActor):
    """Serialises every write and state query of one run."""

    def __init__(
        self,
        *,
        threads: RunThreads,
        open_storage: StorageOpener,
        writer_holder: str,
        engine: ActorRef,
        run_id: str,
        hub: UpdateHub | None = None,
        clock: Callable[[], datetime] = utc_now,
        child_name: str | None = None,
        closed_from: datetime | None = None,
    ) -> None:
        super().__init__(threads=threads, run_id=run_id, supervisor=engine, child_name=child_name)
        self._clock = clock
        #: ``CandleClosed`` is published for minutes from here on (``None``: never).
        self._closed_from = closed_from
        self._open_storage = open_storage
        self._writer_holder = writer_holder
        self._engine = engine
        self._hub = hub
        self._storage: Storage | None = None
        #: Why opening failed (answered to every request; the Engine restarts the writer).
        self._open_error: Exception | None = None
        #: Received ticks whose write failed, oldest first: written before the next batch.
        self._unwritten: list[PriceTick] = []
        self._log = get_logger(run_id=run_id, actor="db_writer")

    def on_start(self) -> None:
        super().on_start()
        try:
            storage = self._open_storage()
            try:
                # PostgreSQL only: give the server a moment to notice a killed holder is gone.
                storage.acquire_writer_lock(self._writer_holder, wait_s=1.0)
            except BaseException:
                storage.close()
                raise
            self._storage = storage
            tell(self._engine, DbWriterReady(self.actor_ref))
        except Exception as exc:
            self._open_error = exc
            self._report(exc)

    def on_stop(self) -> None:
        storage, self._storage = self._storage, None
        if storage is not None:
            if self._unwritten:
                # One last try: the fault may be gone (a lock released, the server back).
                with contextlib.suppress(Exception):
                    self._store_ticks(storage, ())
            with contextlib.suppress(Exception):  # a dead connection can't be closed cleanly
                storage.close()
        if self._unwritten:
            self._log.warning("unwritten_ticks_handed_over", count=len(self._unwritten))
            tell(self._engine, UnwrittenTicks(tuple(self._unwritten)))
            self._unwritten = []
        super().on_stop()

    def _report(self, error: BaseException) -> None:
        self._log.debug("db_writer_error", error=f"{type(error).__name__}: {error}")
        tell(self._engine, ChildFailed(self.child_name, error))

    def on_receive(self, message: Any) -> Any:
        storage = self._storage
        if storage is None:
            # Opening failed (already reported): answer everything so nobody waits forever,
            # and keep ticks for the next writer.
            self._refuse(message, self._open_error or StorageError("the database is not open"))
            return None
        match message:
            case StoreCandlePage():
                self._store_candle_pages(storage, [message, *self._waiting_pages(message)])
            case StoreSettlementPage(settlements=settlements, ack_to=ack_to, request_id=rid):
                self._store_page(ack_to, rid, lambda: storage.upsert_settlements(settlements))
            case StoreTicks(ticks=ticks, ack_to=ack_to):
                try:
                    self._store_ticks(storage, ticks)
                except Exception as exc:
                    self._report(exc)
                finally:
                    # The feed sends its next batch either way: a failed write must not stall it.
                    if ack_to is not None:
                        tell(ack_to, TicksStored(committed=not self._unwritten))
            case Envelope(request_id=rid, reply_to=reply_to, payload=payload):
                try:
                    tell(reply_to, Reply(rid, self._answer(storage, payload)))
                except Exception as exc:
                    tell(reply_to, Reply(rid, error=exc))
            case CancelRequest():
                pass  # each request is answered within its one message: nothing to cancel
            case _:
                self._log.warning("unknown_message", message=repr(message))
        return None

    def _refuse(self, message: Any, error: Exception) -> None:
        match message:
            case Envelope(request_id=rid, reply_to=reply_to):
                tell(reply_to, Reply(rid, error=error))
            case StoreCandlePage(ack_to=ack_to, request_id=rid):
                tell(ack_to, PageStored(rid, error))
            case StoreSettlementPage(ack_to=ack_to, request_id=rid):
                tell(ack_to, PageStored(rid, error))
            case StoreTicks(ticks=ticks, ack_to=ack_to):
                self._unwritten.extend(ticks)
                if ack_to is not None:
                    tell(ack_to, TicksStored(committed=False))

    def _store_page(self, ack_to: ActorRef, request_id: int, write: Callable[[], Any]) -> None:
        try:
            write()
        except Exception as exc:
            self._log.debug("db_writer_error", error=f"{type(exc).__name__}: {exc}")
            tell(ack_to, PageStored(request_id, exc))
        else:
            tell(ack_to, PageStored(request_id))

    def _waiting_pages(self, first: StoreCandlePage) -> list[StoreCandlePage]:
        """The candle pages queued right behind ``first`` in the inbox that can share its
        transaction (group commit, sized by what is waiting), taken out of the inbox.

        Only pages at the head of the inbox are taken (the order of every message is kept),
        at most :data:`GROUP_MAX_CANDLES` candles in all, and only while the group stays exact:
        no minute in two pages (the later page must win) and every candle older than the
        stable cutoff of every page (then one ``served_at`` classifies each candle as its own
        page would). A backfill, its pages an hour old or more, is the usual case. Each page
        is in strict time order (no minute twice in it) and the pages' spans do not overlap.
        """
        inbox = cast("queue.Queue[Any]", self.actor_inbox)  # pykka's ThreadingActor inbox
        now = self._clock()
        bounds = _page_bounds(first.candles)
        cutoff = min(now, first.asked_at or now) - UNSTABLE_AGE
        if bounds is None or bounds[1] >= cutoff:
            return []
        spans = [bounds]
        count, newest = len(first.candles), bounds[1]
        taken: list[StoreCandlePage] = []
        while True:
            with inbox.mutex:
                envelope = inbox.queue[0] if inbox.queue else None
            message = getattr(envelope, "message", None)
            if type(message) is not StoreCandlePage:
                return taken
            bounds = _page_bounds(message.candles)
            if bounds is None or count + len(message.candles) > GROUP_MAX_CANDLES:
                return taken
            lo, hi = bounds
            cutoff = min(cutoff, min(now, message.asked_at or now) - UNSTABLE_AGE)
            newest = max(newest, hi)
            if newest >= cutoff or any(lo <= b and a <= hi for a, b in spans):
                return taken
            inbox.get_nowait()  # the head looked at: only this thread takes from the inbox
            taken.append(message)
            spans.append(bounds)
            count += len(message.candles)

    def _store_candle_pages(self, storage: Storage, pages: list[StoreCandlePage]) -> None:
        """Upsert ``pages`` in one transaction and acknowledge each (all with the error if the
        transaction failed: no page is half-written)."""
        if len(pages) == 1:
            page = pages[0]
            write: Callable[[], Any] = lambda: self._upsert_candles(  # noqa: E731
                storage, [page.candles], page.asked_at
            )
            self._store_page(page.ack_to, page.request_id, write)
            return
        asked = [page.asked_at for page in pages]
        served_at = None if None in asked else min(a for a in asked if a is not None)
        try:
            self._upsert_candles(storage, [page.candles for page in pages], served_at)
        except Exception as exc:
            self._log.debug(
                "db_writer_error", error=f"{type(exc).__name__}: {exc}", pages=len(pages)
            )
            for page in pages:
                tell(page.ack_to, PageStored(page.request_id, exc))
        else:
            for page in pages:
                tell(page.ack_to, PageStored(page.request_id))

    def _upsert_candles(
        self, storage: Storage, pages: list[tuple[Candle, ...]], asked: datetime | None
    ) -> None:
        """Upsert pages in one transaction; publish ``CandleClosed`` for the minutes they make
        stable first (page by page, each page's in time order)."""
        now = self._clock()
        since = self._closed_from
        candles = pages[0] if len(pages) == 1 else list(itertools.chain.from_iterable(pages))
        followed = (
            [c for c in candles if c.time >= since]
            if since is not None and self._hub is not None
            else []
        )
        known: set[datetime] = set()
        if followed:
            lo, hi = min(c.time for c in followed), max(c.time for c in followed)
            known = stable_minutes(storage, lo, hi)
        storage.upsert_candles(candles, now=now, served_at=asked)
        if not followed or self._hub is None:
            return
        cutoff = min(now, asked or now) - UNSTABLE_AGE  # the rule upsert_candles applies
        assert since is not None
        for page in pages:
            closed = {c.time: c for c in page if since <= c.time < cutoff and c.time not in known}
            for time in sorted(closed):
                candle = closed[time]
                final = Candle(
                    candle.time, candle.open, candle.high, candle.low, candle.close, candle.volume
                )
                self._hub.publish(CandleClosedUpdate(final))

    def _store_ticks(self, storage: Storage, ticks: tuple[PriceTick, ...]) -> None:
        """Write the kept ticks and ``ticks`` in one transaction; on failure keep them all."""
        batch = [*self._unwritten, *ticks] if self._unwritten else list(ticks)
        try:
            new = storage.insert_new_ticks(batch)
        except Exception:
            self._unwritten = batch
            raise
        self._unwritten = []
        if self._hub is not None and new:
            # One call for the batch: every receiver gets its ticks in order, woken once.
            self._hub.publish_many(list(map(PriceTickUpdate, new)))

    def _answer(self, storage: Storage, payload: Request[Any]) -> Any:
        match payload:
            case QueryPriceHistory():
                return storage.price_history_facts()
            case QueryFunding(scan_from=scan_from):
                return storage.funding_facts(scan_from=scan_from)
            case RecordVerifiedEmpty(ranges=ranges):
                storage.record_verified_empty(ranges, now=self._clock())
                return None
            case FlagHoles(holes=holes):
                storage.flag_holes(holes)
                return None
            case PruneTicks(up_to=up_to):
                return storage.prune_ticks(up_to)
        raise TypeError(f"the DB writer does not answer {payload!r}")
