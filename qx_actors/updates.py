"""What subscribers receive (``SyncUpdate``) and the bounded receivers that deliver it.

``SyncUpdate.Status(status)``, ``SyncUpdate.PriceTick(tick)``,
``SyncUpdate.PriceHistoryState(state)``, ``SyncUpdate.FundingSettlementsState(state)`` and
``SyncUpdate.Lagged(missed)`` are frozen dataclasses deriving from :class:`SyncUpdate`.

:class:`UpdateHub` holds the current status snapshot and fans every update out to queue
receivers and subscribed actors. Publishing never blocks: a full receiver drops its oldest
update and its next ``get()`` returns ``Lagged(missed=N)`` first.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import pykka

from qx_actors.errors import QxError
from qx_actors.status import State, SyncStatus


class SyncUpdate:
    """Base of every update; the variants are attributes of this class."""

    Status: ClassVar[type[StatusUpdate]]
    PriceTick: ClassVar[type[PriceTickUpdate]]
    PriceHistoryState: ClassVar[type[PriceHistoryStateUpdate]]
    FundingSettlementsState: ClassVar[type[FundingSettlementsStateUpdate]]
    Lagged: ClassVar[type[Lagged]]


@dataclass(frozen=True)
class StatusUpdate(SyncUpdate):
    """The status changed."""

    status: SyncStatus


@dataclass(frozen=True)
class PriceTickUpdate(SyncUpdate):
    """A tick was committed to the database."""

    tick: Any


@dataclass(frozen=True)
class PriceHistoryStateUpdate(SyncUpdate):
    """The price-history state was evaluated."""

    state: Any


@dataclass(frozen=True)
class FundingSettlementsStateUpdate(SyncUpdate):
    """The funding-settlements state was evaluated."""

    state: Any


@dataclass(frozen=True)
class Lagged(SyncUpdate):
    """The receiver was full and dropped its ``missed`` oldest updates."""

    missed: int


SyncUpdate.Status = StatusUpdate
SyncUpdate.PriceTick = PriceTickUpdate
SyncUpdate.PriceHistoryState = PriceHistoryStateUpdate
SyncUpdate.FundingSettlementsState = FundingSettlementsStateUpdate
SyncUpdate.Lagged = Lagged


class ReceiverClosed(QxError):
    """The run has ended and every update was read."""


class UpdateReceiver:
    """A bounded queue of updates; ``get(timeout)`` returns the next one."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[SyncUpdate] = deque()
        self._missed = 0
        self._total_missed = 0
        self._closed = False
        self._cond = threading.Condition()

    def _push(self, update: SyncUpdate) -> None:
        with self._cond:
            if self._closed:
                return
            if len(self._items) >= self.capacity:
                self._items.popleft()
                self._missed += 1
                self._total_missed += 1
            self._items.append(update)
            self._cond.notify()

    def _close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> SyncUpdate:
        """The next update; ``Lagged`` first if updates were dropped.

        Raises ``TimeoutError`` after ``timeout`` seconds, :class:`ReceiverClosed` once the run
        has ended and everything was read.
        """
        with self._cond:
            if not self._cond.wait_for(
                lambda: self._missed or self._items or self._closed, timeout
            ):
                raise TimeoutError(f"no update within {timeout} s")
            if self._missed:
                missed, self._missed = self._missed, 0
                return Lagged(missed)
            if self._items:
                return self._items.popleft()
            raise ReceiverClosed("the sync run has ended")

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


class UpdateHub:
    """The current status and the fan-out of updates (thread-safe, never blocks)."""

    def __init__(self, capacity: int, observer: Callable[[SyncUpdate], None] | None = None) -> None:
        self._capacity = capacity
        self._observer = observer
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

    def receiver(self) -> UpdateReceiver:
        """A new receiver of every update published from now on."""
        receiver = UpdateReceiver(self._capacity)
        with self._lock:
            if self._closed:
                receiver._close()
            else:
                self._receivers.add(receiver)
        return receiver

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

    def publish(self, update: SyncUpdate) -> None:
        """Deliver ``update`` to every receiver and subscribed actor."""
        if self._observer is not None:
            self._observer(update)
        with self._lock:
            receivers = list(self._receivers)
            actors = list(self._actors)
        for receiver in receivers:
            receiver._push(update)
        for ref in actors:
            try:
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
