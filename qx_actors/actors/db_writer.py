"""The DB writer actor: the only writer of the database.

It opens the storage (creating or checking the schema) and takes the single-writer lock when it
starts, upserts pages in one transaction each, answers the Engine's state queries (so that they
see every write before them), and releases the lock when it stops. Errors are reported to the
Engine, which decides from their type whether to restart or fail; on a restart the Engine
starts a new DB writer (new connection, writer lock taken again).

Ticks are never dropped for a failed write: the feed is acknowledged all the same (so it keeps
batching), the batch is kept and written before the next one, and a writer that stops with
ticks it could not store hands them to the Engine (:class:`UnwrittenTicks`) for the next
writer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pykka

from qx_actors.actors.base import QxActor, RunThreads
from qx_actors.actors.messages import (
    CancelRequest,
    CandleRangeStored,
    ChildFailed,
    Envelope,
    FinishCandleRange,
    FinishSettlementRange,
    FlagHoles,
    PageStored,
    PruneTicks,
    QueryFunding,
    QueryPriceHistory,
    RecordVerifiedEmpty,
    Reply,
    SettlementRangeStored,
    StoreCandlePage,
    StoreSettlementPage,
    StoreTicks,
    TicksCommitted,
    TicksStored,
    UnwrittenTicks,
)
from qx_actors.domain.timeutil import utc_now
from qx_actors.domain.values import PriceTick
from qx_actors.errors import StorageError
from qx_actors.logs import get_logger
from qx_actors.redact import redact_url
from qx_actors.storage import Storage, open_storage, writer_holder


class DbWriterActor(QxActor):
    """Serialises every write and state query of one run."""

    def __init__(
        self,
        *,
        threads: RunThreads,
        database_url: str,
        engine: pykka.ActorRef[Any],
        run_id: str,
        clock: Callable[[], datetime] = utc_now,
        child_name: str | None = None,
    ) -> None:
        super().__init__(threads=threads, run_id=run_id, supervisor=engine, child_name=child_name)
        self._clock = clock
        self._url = database_url
        self._engine = engine
        self._run_id = run_id
        self._storage: Storage | None = None
        #: Why opening failed (answered to every request; the Engine restarts the writer).
        self._open_error: Exception | None = None
        #: Received ticks whose write failed, oldest first: written before the next batch.
        self._unwritten: list[PriceTick] = []
        self._log = get_logger(run_id=run_id, actor="db_writer")

    def on_start(self) -> None:
        super().on_start()
        try:
            storage = open_storage(self._url)
            try:
                # PostgreSQL only: give the server a moment to notice a killed holder is gone.
                storage.acquire_writer_lock(writer_holder(self._run_id), wait_s=1.0)
            except BaseException:
                storage.close()
                raise
            self._storage = storage
        except Exception as exc:
            self._open_error = exc
            self._report(exc)

    def on_stop(self) -> None:
        storage, self._storage = self._storage, None
        if storage is not None:
            if self._unwritten:
                # One last try: the fault may be gone (a lock released, the server back).
                with contextlib.suppress(Exception):
                    self._store_ticks(storage, [], None)
            with contextlib.suppress(Exception):  # a dead connection can't be closed cleanly
                storage.close()
        if self._unwritten:
            self._log.warning("unwritten_ticks_handed_over", count=len(self._unwritten))
            _tell(self._engine, UnwrittenTicks(tuple(self._unwritten)))
            self._unwritten = []
        super().on_stop()

    def _report(self, error: BaseException) -> None:
        self._log.warning("db_writer_error", error=f"{type(error).__name__}: {error}")
        with contextlib.suppress(pykka.ActorDeadError):
            self._engine.tell(ChildFailed(self.child_name, error))

    def on_receive(self, message: Any) -> Any:
        storage = self._storage
        if storage is None:
            # Opening failed (already reported): answer requests so nobody waits forever, and
            # keep ticks for the next writer.
            error = self._open_error or StorageError(
                f"the database {redact_url(self._url)} is not open"
            )
            match message:
                case Envelope(request_id=rid, reply_to=reply_to):
                    _tell(reply_to, Reply(rid, error=error))
                case FinishCandleRange(request_id=rid, reply_to=reply_to):
                    _tell(reply_to, Reply(rid, error=error))
                case FinishSettlementRange(request_id=rid, reply_to=reply_to):
                    _tell(reply_to, Reply(rid, error=error))
                case StoreTicks(ticks=ticks, ack_to=ack_to):
                    self._unwritten.extend(ticks)
                    if ack_to is not None:
                        _tell(ack_to, TicksStored())
            return None
        try:
            self._handle(storage, message)
        except Exception as exc:
            if isinstance(message, (Envelope, FinishCandleRange, FinishSettlementRange)):
                _tell(message.reply_to, Reply(message.request_id, error=exc))
            else:
                self._report(exc)
        return None

    def _handle(self, storage: Storage, message: Any) -> None:
        match message:
            case StoreCandlePage(candles=candles, ack_to=ack_to, request_id=rid):
                storage.upsert_candles(candles, now=self._clock())
                _tell(ack_to, PageStored(rid))
            case FinishCandleRange() as finish:
                result = CandleRangeStored(
                    finish.download, finish.received_count, finish.received_oldest, finish.missing
                )
                _tell(finish.reply_to, Reply(finish.request_id, result))
            case StoreSettlementPage(settlements=settlements, ack_to=ack_to, request_id=rid):
                storage.upsert_settlements(settlements)
                _tell(ack_to, PageStored(rid))
            case FinishSettlementRange(request_id=rid, reply_to=reply_to, received_count=n):
                _tell(reply_to, Reply(rid, SettlementRangeStored(n)))
            case StoreTicks(ticks=ticks, ack_to=ack_to):
                self._store_ticks(storage, ticks, ack_to)
            case Envelope(request_id=rid, reply_to=reply_to, payload=payload):
                _tell(reply_to, Reply(rid, self._answer(storage, payload)))
            case CancelRequest():
                pass  # each request is answered within its one message: nothing to cancel
            case _:
                self._log.warning("unknown_message", message=repr(message))

    def _store_ticks(
        self, storage: Storage, ticks: tuple[PriceTick, ...] | list[PriceTick], ack_to: Any
    ) -> None:
        """Write the kept ticks and ``ticks`` in one transaction; on failure keep them all."""
        batch = [*self._unwritten, *ticks] if self._unwritten else list(ticks)
        try:
            new = storage.insert_new_ticks(batch)
        except Exception:
            self._unwritten = batch
            raise
        finally:
            # The feed sends its next batch either way: a failed write must not stall it.
            if ack_to is not None:
                _tell(ack_to, TicksStored())
        self._unwritten = []
        _tell(self._engine, TicksCommitted(tuple(new), len(batch)))

    def _answer(self, storage: Storage, payload: Any) -> Any:
        match payload:
            case QueryPriceHistory(scan_from=scan_from):
                return storage.price_history_facts(scan_from=scan_from)
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


def _tell(ref: pykka.ActorRef[Any], message: Any) -> None:
    with contextlib.suppress(pykka.ActorDeadError):
        ref.tell(message)
