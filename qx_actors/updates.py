"""What subscribers receive (``SyncUpdate``) and the bounded receivers that deliver it.

``SyncUpdate.Status(status)``, ``SyncUpdate.PriceTick(tick)``,
``SyncUpdate.CandleClosed(candle)``, ``SyncUpdate.FundingSettlement(settlement)``,
``SyncUpdate.PriceHistoryState(state)``, ``SyncUpdate.FundingSettlementsState(state)`` and
``SyncUpdate.Lagged(missed)`` are frozen dataclasses deriving from :class:`SyncUpdate`.

:class:`UpdateHub` holds the current status snapshot and fans every update out to queue
receivers and subscribed actors. Publishing never blocks: a full receiver drops its oldest
update and its next ``get()`` returns ``Lagged(missed=N)`` first. A *lossless* hub (a
replay's) never drops: its one data publisher waits for room (:meth:`UpdateHub.wait_for_room`)
before each update, and what else is published (statuses) is queued beyond the capacity.

:class:`AsyncUpdateReceiver` is the same bounded receiver for asyncio code
(``async for update in controller.updates():``): the publishing thread wakes a waiting task with
``loop.call_soon_threadsafe``, so the event loop never blocks and no thread is involved.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, dataclass_transform

import pykka

from qx_actors.domain.funding import FundingSettlementsState
from qx_actors.domain.history import PriceHistoryState
from qx_actors.domain.values import Candle, FundingSettlement, PriceTick
from qx_actors.errors import QxError
from qx_actors.status import State, SyncStatus

__all__ = [
    "AsyncUpdateReceiver",
    "CandleClosedUpdate",
    "FundingSettlementUpdate",
    "FundingSettlementsStateUpdate",
    "Lagged",
    "PriceHistoryStateUpdate",
    "PriceTickUpdate",
    "ReceiverClosed",
    "StatusUpdate",
    "SyncUpdate",
    "UpdateHub",
    "UpdateReceiver",
]


@dataclass_transform(frozen_default=True)
class SyncUpdate:
    """Base of every update; the variants are attributes of this class.

    A variant is a frozen dataclass deriving from it (as if written with
    ``@dataclass(frozen=True)``), set as ``SyncUpdate.<variant>`` by its class statement's
    ``variant`` keyword.
    """

    Status: ClassVar[type[StatusUpdate]]
    PriceTick: ClassVar[type[PriceTickUpdate]]
    CandleClosed: ClassVar[type[CandleClosedUpdate]]
    FundingSettlement: ClassVar[type[FundingSettlementUpdate]]
    PriceHistoryState: ClassVar[type[PriceHistoryStateUpdate]]
    FundingSettlementsState: ClassVar[type[FundingSettlementsStateUpdate]]
    Lagged: ClassVar[type[Lagged]]

    def __init_subclass__(cls, *, variant: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclass(frozen=True)(cls)
        setattr(SyncUpdate, variant, cls)


class StatusUpdate(SyncUpdate, variant="Status"):
    """The status changed."""

    status: SyncStatus


class PriceTickUpdate(SyncUpdate, variant="PriceTick"):
    """A tick was committed to the database."""

    tick: PriceTick


class CandleClosedUpdate(SyncUpdate, variant="CandleClosed"):
    """A minute's candle is final: stored stable (live, full), or replayed at the close of
    its minute (replay). ``candle.time`` is the start of the minute."""

    candle: Candle


class FundingSettlementUpdate(SyncUpdate, variant="FundingSettlement"):
    """A funding settlement fell due (replay: at its time)."""

    settlement: FundingSettlement


class PriceHistoryStateUpdate(SyncUpdate, variant="PriceHistoryState"):
    """The price-history state was evaluated."""

    state: PriceHistoryState


class FundingSettlementsStateUpdate(SyncUpdate, variant="FundingSettlementsState"):
    """The funding-settlements state was evaluated."""

    state: FundingSettlementsState


class Lagged(SyncUpdate, variant="Lagged"):
    """The receiver was full and dropped its ``missed`` oldest updates."""

    missed: int


class ReceiverClosed(QxError):
    """The run has ended and every update was read."""


class UpdateReceiver:
    """A bounded queue of updates; ``get(timeout)`` returns the next one."""

    def __init__(self, capacity: int, *, lossless: bool = False) -> None:
        self.capacity = capacity
        #: Never drop: over capacity the queue grows (a lossless hub's publisher waits first).
        self._lossless = lossless
        #: Publishers waiting for room (:meth:`_wait_room`): a taken update wakes them.
        self._room_waiters = 0
        self._items: deque[SyncUpdate] = deque()
        self._missed = 0
        self._total_missed = 0
        self._closed = False
        self._cond = threading.Condition()
        # Tasks of an AsyncUpdateReceiver waiting for the next update (see _wake_async).
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def _push(self, update: SyncUpdate) -> None:
        with self._cond:
            if self._closed:
                return
            if len(self._items) >= self.capacity and not self._lossless:
                self._items.popleft()
                self._missed += 1
                self._total_missed += 1
            self._items.append(update)
            self._cond.notify()
            waiters = self._take_async_waiters()
        _wake_async(waiters)

    def _push_many(self, updates: Sequence[SyncUpdate]) -> None:
        """:meth:`_push` of each of ``updates`` in order, under one lock and one wake-up."""
        with self._cond:
            if self._closed:
                return
            items = self._items
            items.extend(updates)
            over = len(items) - self.capacity
            if over > 0 and not self._lossless:
                # What pushing them one by one drops: the oldest ``over`` (old or new).
                for _ in range(over):
                    items.popleft()
                self._missed += over
                self._total_missed += over
            self._cond.notify(len(updates))
            waiters = self._take_async_waiters()
        _wake_async(waiters)

    def _close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            waiters = self._take_async_waiters()
        _wake_async(waiters)

    def _take_async_waiters(self) -> list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]:
        waiters, self._async_waiters = self._async_waiters, []
        return waiters

    def _ready(self) -> bool:
        return bool(self._missed or self._items or self._closed)

    def _has_room(self) -> bool:
        return self._closed or len(self._items) < self.capacity

    def _wait_room(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until it holds less than its capacity, or is closed."""
        with self._cond:
            self._room_waiters += 1
            try:
                return self._cond.wait_for(self._has_room, timeout)
            finally:
                self._room_waiters -= 1

    def _next(self) -> SyncUpdate | None:
        """``Lagged`` / the oldest update / ``None`` when empty; the caller holds ``_cond``."""
        if self._missed:
            missed, self._missed = self._missed, 0
            return Lagged(missed)
        if self._items:
            update = self._items.popleft()
            if self._room_waiters:
                self._cond.notify_all()
            return update
        if self._closed:
            raise ReceiverClosed("the sync run has ended")
        return None

    def get(self, timeout: float | None = None) -> SyncUpdate:
        """The next update; ``Lagged`` first if updates were dropped.

        Raises ``TimeoutError`` after ``timeout`` seconds, :class:`ReceiverClosed` once the run
        has ended and everything was read.
        """
        with self._cond:
            if not self._cond.wait_for(self._ready, timeout):
                raise TimeoutError(f"no update within {timeout} s")
            update = self._next()
            assert update is not None  # _ready() held under the same lock
            return update

    def get_nowait(self) -> SyncUpdate | None:
        """The next update, or ``None`` if there is none right now."""
        try:
            return self.get(timeout=0)
        except (TimeoutError, ReceiverClosed):
            return None

    def __iter__(self) -> Iterator[SyncUpdate]:
        """Every update until the run ends."""
        while True:
            try:
                yield self.get()
            except ReceiverClosed:
                return

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    @property
    def total_missed(self) -> int:
        """How many updates this receiver dropped in all."""
        with self._cond:
            return self._total_missed


def _wake_async(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
    """Resolve waiting futures on their own loops (called from the publishing thread)."""
    for loop, future in waiters:
        # A loop closed meanwhile has no task left to wake.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # a cancelled wait stays cancelled
        future.set_result(None)


class AsyncUpdateReceiver:
    """A bounded receiver for asyncio code: ``async for update in receiver:``.

    The asyncio twin of :class:`UpdateReceiver`, with the same semantics: every update published
    since the receiver was created, in order; when it was full the oldest updates were dropped
    and the next item is ``Lagged(missed=N)`` (an item, as from ``UpdateReceiver.get``); the
    iteration ends once the run has ended and every update was read (``await get()`` then raises
    :class:`ReceiverClosed`).

    Awaiting never blocks the event loop (the publishing thread wakes the waiting task with
    ``loop.call_soon_threadsafe``; no thread is started). It is cancellation-safe: an update is
    taken from the queue only in the step that returns it, so cancelling the waiting task (or a
    ``get`` timeout) loses nothing, leaves no waiter behind, and other receivers are untouched.
    Use it from one event loop at a time.
    """

    def __init__(self, receiver: UpdateReceiver) -> None:
        self._receiver = receiver

    @property
    def capacity(self) -> int:
        """How many updates it holds before dropping the oldest."""
        return self._receiver.capacity

    async def get(self, timeout: float | None = None) -> SyncUpdate:
        """The next update; ``Lagged`` first if updates were dropped.

        Raises ``TimeoutError`` after ``timeout`` seconds, :class:`ReceiverClosed` once the run
        has ended and everything was read.
        """
        async with asyncio.timeout(timeout):
            while True:
                update = self._register_or_take()
                if isinstance(update, SyncUpdate):
                    return update
                try:
                    await update
                finally:
                    self._unregister(update)

    def _register_or_take(self) -> SyncUpdate | asyncio.Future[None]:
        """The next update if there is one, else a future resolved when there may be one."""
        receiver = self._receiver
        with receiver._cond:
            update = receiver._next()
            if update is not None:
                return update
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            receiver._async_waiters.append((loop, future))
            return future

    def _unregister(self, future: asyncio.Future[None]) -> None:
        receiver = self._receiver
        with receiver._cond:
            receiver._async_waiters = [w for w in receiver._async_waiters if w[1] is not future]

    def get_nowait(self) -> SyncUpdate | None:
        """The next update, or ``None`` if there is none right now (or the run has ended)."""
        return self._receiver.get_nowait()

    def __aiter__(self) -> AsyncUpdateReceiver:
        return self

    async def __anext__(self) -> SyncUpdate:
        try:
            return await self.get()
        except ReceiverClosed:
            raise StopAsyncIteration from None

    def __len__(self) -> int:
        return len(self._receiver)

    @property
    def total_missed(self) -> int:
        """How many updates this receiver dropped in all."""
        return self._receiver.total_missed


class UpdateHub:
    """The current status and the fan-out of updates (thread-safe, never blocks)."""

    def __init__(
        self,
        capacity: int,
        observer: Callable[[SyncUpdate], None] | None = None,
        *,
        lossless: bool = False,
        batch_observer: Callable[[Sequence[SyncUpdate]], None] | None = None,
    ) -> None:
        """``observer`` sees every update before the receivers; ``batch_observer``, if given,
        sees the updates of a :meth:`publish_many` in one call instead."""
        self._capacity = capacity
        self._lossless = lossless
        self._observer = observer
        self._batch_observer = batch_observer
        self._lock = threading.Lock()
        self._status = SyncStatus(State.NOT_INITIATED)
        self._receivers: weakref.WeakSet[UpdateReceiver] = weakref.WeakSet()
        self._actors: list[pykka.ActorRef[Any]] = []
        self._closed = False
        self._stopped = threading.Event()

    def status(self) -> SyncStatus:
        """The current status snapshot."""
        with self._lock:
            return self._status

    def backlog(self) -> dict[str, int]:
        """Live receivers, updates waiting in them in all, and the fullest one (for metrics)."""
        with self._lock:
            receivers = list(self._receivers)
        depths = [len(receiver) for receiver in receivers]
        return {
            "receivers": len(depths),
            "backlog": sum(depths),
            "backlog_max": max(depths, default=0),
        }

    def receiver(self) -> UpdateReceiver:
        """A new receiver of every update published from now on."""
        receiver = UpdateReceiver(self._capacity, lossless=self._lossless)
        with self._lock:
            if self._closed:
                receiver._close()
            else:
                self._receivers.add(receiver)
        return receiver

    def async_receiver(self) -> AsyncUpdateReceiver:
        """A new asyncio receiver of every update published from now on."""
        return AsyncUpdateReceiver(self.receiver())

    def subscribe(self, actor_ref: pykka.ActorRef[Any]) -> None:
        """Tell every update from now on to ``actor_ref``."""
        with self._lock:
            self._actors.append(actor_ref)

    def set_status(self, status: SyncStatus) -> None:
        """Record a new status and publish it (Controller only)."""
        with self._lock:
            self._status = status
        self.publish(StatusUpdate(status))
        if status.is_stopped:
            self._stopped.set()

    @property
    def lossless(self) -> bool:
        """Whether its receivers never drop (a replay's hub)."""
        return self._lossless

    def wait_for_room(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until every receiver has room for one more update;
        whether they all have. The back-pressure of a lossless hub's publisher."""
        with self._lock:
            receivers = list(self._receivers)
        deadline = time.monotonic() + timeout
        for receiver in receivers:
            if not receiver._wait_room(max(deadline - time.monotonic(), 0.0)):
                return False
        return True

    def publish(self, update: SyncUpdate) -> None:
        """Deliver ``update`` to every receiver and subscribed actor."""
        if self._observer is not None:
            self._observer(update)
        receivers, actors = self._targets()
        for receiver in receivers:
            receiver._push(update)
        for ref in actors:
            self._tell(ref, (update,))

    def publish_many(self, updates: Sequence[SyncUpdate]) -> None:
        """Deliver ``updates`` in order, as :meth:`publish` of each would (the same items,
        ``Lagged`` and order in every receiver), with one lock and one wake-up per receiver:
        a committed tick batch. Receivers of a lossless hub take them all (no wait for room)."""
        if not updates:
            return
        if self._batch_observer is not None:
            self._batch_observer(updates)
        elif self._observer is not None:
            observer = self._observer
            for update in updates:
                observer(update)
        receivers, actors = self._targets()
        for receiver in receivers:
            receiver._push_many(updates)
        for ref in actors:
            self._tell(ref, updates)

    def _targets(self) -> tuple[list[UpdateReceiver], list[pykka.ActorRef[Any]]]:
        """The receivers and subscribed actors now (delivered to outside the lock)."""
        with self._lock:
            return list(self._receivers), list(self._actors)

    def _tell(self, ref: pykka.ActorRef[Any], updates: Sequence[SyncUpdate]) -> None:
        """Tell ``updates`` to ``ref`` in order; an actor that has died is unsubscribed."""
        try:
            for update in updates:
                ref.tell(update)
        except pykka.ActorDeadError:
            with self._lock:
                if ref in self._actors:
                    self._actors.remove(ref)

    def close(self) -> None:
        """No more updates: receivers end once drained."""
        with self._lock:
            self._closed = True
            receivers = list(self._receivers)
        for receiver in receivers:
            receiver._close()

    def wait_stopped(self, timeout: float | None) -> SyncStatus | None:
        """Block until the status is terminal; ``None`` on timeout."""
        if self._stopped.wait(timeout):
            return self.status()
        return None
