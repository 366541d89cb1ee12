"""The DB writer actor: the only writer of the database.

It opens the storage (creating or checking the schema) and takes the single-writer lock when it
starts, upserts pages in one transaction each, answers the Engine's state queries (so that they
see every write before them), and releases the lock when it stops. Errors are reported to the
Engine, which decides from their type whether to restart or fail.
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
)
from qx_actors.domain.timeutil import utc_now
from qx_actors.logs import get_logger
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
    ) -> None:
        super().__init__(threads=threads, run_id=run_id)
        self._clock = clock
        self._url = database_url
        self._engine = engine
        self._run_id = run_id
        self._storage: Storage | None = None
        self._failed = False
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
            self._report(exc)

    def on_stop(self) -> None:
        storage, self._storage = self._storage, None
        if storage is not None:
            storage.close()

    def _report(self, error: BaseException) -> None:
        self._failed = True
        self._log.warning("db_writer_error", error=f"{type(error).__name__}: {error}")
        with contextlib.suppress(pykka.ActorDeadError):
            self._engine.tell(ChildFailed("db_writer", error))

    def on_receive(self, message: Any) -> Any:
        storage = self._storage
        if storage is None:
            # Opening failed (already reported): answer requests so nobody waits forever.
            if isinstance(message, Envelope):
                _tell(message.reply_to, Reply(message.request_id, error=_not_open(self._url)))
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
                new = storage.insert_new_ticks(ticks)
                if ack_to is not None:
                    _tell(ack_to, TicksStored())
                _tell(self._engine, TicksCommitted(tuple(new), len(ticks)))
            case Envelope(request_id=rid, reply_to=reply_to, payload=payload):
                _tell(reply_to, Reply(rid, self._answer(storage, payload)))
            case CancelRequest():
                pass  # each request is answered within its one message: nothing to cancel
            case _:
                self._log.warning("unknown_message", message=repr(message))

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


def _not_open(url: str) -> Exception:
    from qx_actors.errors import StorageError

    return StorageError(f"the database {url} is not open")


def _tell(ref: pykka.ActorRef[Any], message: Any) -> None:
    with contextlib.suppress(pykka.ActorDeadError):
        ref.tell(message)
