"""The replayer actor: recorded data through the run's update hub, paced, back-pressured.

Asked :class:`~qx_actors.actors.messages.PlayReplay`, it reads the run's replay window from
the database (opened read-only: it never writes, and runs beside a live engine's writer) with
:func:`~qx_actors.storage.replay_events`, and publishes each event as its update
(``PriceTick``, ``CandleClosed``, ``FundingSettlement``) when it is due, then answers
:class:`~qx_actors.actors.messages.ReplayFinished`.

* Pacing: an event at recorded time ``t`` is due when the pace clock (the engine's ``clock=``)
  reads ``anchor + (t - start) / speed``; at ``max`` speed everything is due at once.
* Back-pressure: the run's hub is lossless; before each update the replayer waits until every
  receiver has room, so nothing is dropped and no ``Lagged`` is ever delivered.
* The run's clock (:class:`ReplayClock`) reads the recorded instant of the last event
  delivered (``start`` before the first, ``end`` after the last): a strategy asking "now"
  while it handles an update sees that update's time.

It works in steps (a batch of events, or one short wait for the pace clock or for room) and
tells itself to go on, so a stop (or a cancel) is handled between steps; waits are at most
:data:`WAIT_SLICE_S`. A restarted replayer resumes right after the last event delivered (the
clock keeps where the replay stands), so no event is delivered twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from qx_actors.actors._base import QxActor, RunThreads, tell
from qx_actors.actors.messages import (
    ActorRef,
    CancelRequest,
    ChildFailed,
    Envelope,
    PlayReplay,
    ReplayFinished,
    Reply,
)
from qx_actors.domain.lookback import ReplayWindow
from qx_actors.domain.values import Candle, FundingSettlement, PriceTick
from qx_actors.errors import DatabaseUnavailable
from qx_actors.logs import get_logger
from qx_actors.storage import Database, ReplayEvent, replay_events
from qx_actors.updates import (
    CandleClosedUpdate,
    FundingSettlementUpdate,
    PriceTickUpdate,
    SyncUpdate,
    UpdateHub,
)

#: The longest the replayer blocks in one step (waiting for the pace clock or for room).
WAIT_SLICE_S = 0.05
#: Events delivered per step at most.
BATCH = 2_000

#: Opens the database read-only (a new connection each call).
DatabaseOpener = Callable[[], Database]


class ReplayClock:
    """A replay's "now": the recorded instant of the last event delivered (thread-safe)."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._position: tuple[datetime, int] | None = None
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    @property
    def position(self) -> tuple[datetime, int] | None:
        """The key of the last event delivered (``None``: none yet)."""
        with self._lock:
            return self._position

    def delivered(self, event: ReplayEvent) -> None:
        """``event`` was delivered: the clock reads its time."""
        with self._lock:
            self._now = max(self._now, event.at)
            self._position = event.key

    def finish(self, end: datetime) -> None:
        """The replay reached ``end``."""
        with self._lock:
            self._now = max(self._now, end)


@dataclass(frozen=True)
class _Step:
    """To itself: deliver what is due (one batch, or one short wait)."""


def as_update(item: PriceTick | Candle | FundingSettlement) -> SyncUpdate:
    """The update a replayed item is delivered as."""
    if isinstance(item, PriceTick):
        return PriceTickUpdate(item)
    if isinstance(item, FundingSettlement):
        return FundingSettlementUpdate(item)
    return CandleClosedUpdate(item)


class ReplayerActor(QxActor):
    """Delivers a replay window to the update hub (see the module docstring)."""

    def __init__(
        self,
        *,
        threads: RunThreads,
        run_id: str,
        open_database: DatabaseOpener,
        window: ReplayWindow,
        clock: ReplayClock,
        pace_clock: Callable[[], datetime],
        hub: UpdateHub,
        supervisor: ActorRef | None = None,
        child_name: str | None = None,
    ) -> None:
        super().__init__(
            threads=threads, run_id=run_id, supervisor=supervisor, child_name=child_name
        )
        self._open_database = open_database
        self._window = window
        self._clock = clock
        self._pace_clock = pace_clock
        self._hub = hub
        self._database: Database | None = None
        self._request: tuple[int, ActorRef] | None = None
        self._events: Iterator[ReplayEvent] | None = None
        self._next: ReplayEvent | None = None
        #: pace-clock time at which the replay window's start is due
        self._anchor: datetime | None = None
        self._delivered = 0
        # never set: a bounded wait that a stop does not need to interrupt (it comes next)
        self._idle = threading.Event()
        self._log = get_logger(run_id=run_id, actor="replayer")

    def on_start(self) -> None:
        super().on_start()
        try:
            self._database = self._open_database()
        except Exception as exc:
            self._log.warning("replay_open_failed", error=f"{type(exc).__name__}: {exc}")
            self.tell_supervisor(ChildFailed(self.child_name, exc))

    def on_stop(self) -> None:
        database, self._database = self._database, None
        if database is not None:
            database.close()
        super().on_stop()

    def on_receive(self, message: Any) -> Any:
        match message:
            case _Step():
                if self._request is not None:
                    self._step()
            case Envelope(request_id=rid, reply_to=reply_to, payload=PlayReplay()):
                self._play(rid, reply_to)
            case CancelRequest(request_id=rid):
                if self._request is not None and self._request[0] == rid:
                    self._request = self._events = self._next = None
            case _:
                self._log.warning("unknown_message", message=repr(message))
        return None

    def _play(self, request_id: int, reply_to: ActorRef) -> None:
        if self._database is None:
            tell(reply_to, Reply(request_id, error=DatabaseUnavailable("the database is not open")))
            return
        window = self._window
        position = self._clock.position
        self._request = (request_id, reply_to)
        self._events = replay_events(self._database, window.start, window.end, after=position)
        self._next = None
        if window.speed is not None:
            # resuming: the part already replayed counts as played
            played = (self._clock() - window.start) / window.speed
            self._anchor = self._pace_clock() - played
        self._log.info("replay_started", window=str(window), resumed=position is not None)
        self.actor_ref.tell(_Step())

    def _step(self) -> None:
        try:
            done = self._deliver()
        except Exception as exc:
            request, self._request = self._request, None
            self._events = self._next = None
            if request is not None:
                tell(request[1], Reply(request[0], error=exc))
            return
        if done:
            request, self._request = self._request, None
            self._events = None
            self._clock.finish(self._window.end)
            self._log.info("replay_finished", delivered=self._delivered)
            if request is not None:
                tell(request[1], Reply(request[0], ReplayFinished(self._delivered)))
            return
        self.actor_ref.tell(_Step())

    def _deliver(self) -> bool:
        """Deliver up to a batch of due events; whether the window is done."""
        events, hub, window = self._events, self._hub, self._window
        assert events is not None
        for _ in range(BATCH):
            event = self._next if self._next is not None else next(events, None)
            if event is None:
                return True
            self._next = event
            if window.speed is not None and not self._due(event):
                return False
            if hub.lossless and not hub.wait_for_room(WAIT_SLICE_S):
                return False
            hub.publish(as_update(event.item))
            self._clock.delivered(event)
            self._next = None
            self._delivered += 1
        return False

    def _due(self, event: ReplayEvent) -> bool:
        """Whether ``event`` is due by the pace clock; if not, wait a slice towards it."""
        window, anchor = self._window, self._anchor
        assert window.speed is not None and anchor is not None
        due_at = anchor + (event.at - window.start) / window.speed
        wait = (due_at - self._pace_clock()).total_seconds()
        if wait <= 0:
            return True
        self._idle.wait(min(wait, WAIT_SLICE_S))
        return False
