"""The run probe: a started engine watched through its update receiver, with deadlines."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

from qx_actors.domain.values import PriceTick
from qx_actors.errors import SyncError
from qx_actors.logs import STATUS_TRANSITION
from qx_actors.status import State, SyncStatus, Trigger, is_edge
from qx_actors.sync_engine import SyncController, SyncEngine
from qx_actors.updates import (
    FundingSettlementsStateUpdate,
    Lagged,
    PriceHistoryStateUpdate,
    PriceTickUpdate,
    ReceiverClosed,
    StatusUpdate,
    SyncUpdate,
    UpdateReceiver,
)

#: How long the probe waits for a run to stop (the engine's own shutdown timeout is shorter).
STOP_TIMEOUT_S = 20.0


class RunEnded(AssertionError):
    """The run reached ``Shutdown`` or ``Failed`` while a probe waited for something else."""

    def __init__(self, what: str, status: SyncStatus | None) -> None:
        final = "every update was read" if status is None else status.text
        super().__init__(f"{what}: the run stopped: {final}")
        self.status = status


class StopsOnExit:
    """A ``with`` block that ends with :meth:`stop`; a failure inside the block is not hidden
    behind a complaint of ``stop()`` (an off-graph timeline, say)."""

    def stop(self) -> None:
        """Stop what was started."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            self.stop()
        else:
            with contextlib.suppress(AssertionError):
                self.stop()


class RunProbe(StopsOnExit):
    """A started :class:`~qx_actors.SyncEngine` read through an update receiver taken before
    ``start()``, so it sees every update.

    Every update read is recorded (``updates``, ``statuses``, ``ticks``,
    ``price_history_states``, ``funding_settlement_states``); every wait has a deadline and
    raises ``TimeoutError`` naming what it waited for and the statuses seen. Each change of
    status is checked against the status graph (:func:`qx_actors.status.is_edge`) when the
    probe stops the run (:meth:`shutdown`, :meth:`stop`, or leaving the ``with`` block).
    """

    def __init__(self, engine: SyncEngine | None, receiver: UpdateReceiver | None = None) -> None:
        """Take a receiver of ``engine`` (not started yet; :meth:`start_run` starts it), or
        read ``receiver`` of an engine started elsewhere (see :meth:`reading`)."""
        self.engine = engine
        joined_late = receiver is not None
        if receiver is None:
            if engine is None:
                raise ValueError("a RunProbe needs an engine or a receiver")
            receiver = engine.update_receiver()
        self.receiver = receiver
        self._controller: SyncController | None = None
        self.updates: list[SyncUpdate] = []
        self.statuses: list[SyncStatus] = []
        self.ticks: list[PriceTick] = []
        self.price_history_states: list[Any] = []
        self.funding_settlement_states: list[Any] = []
        #: Updates the receiver dropped because it was full (the timeline has a gap there).
        self.missed = 0
        # The status timeline as pairs to check: the previous state is None after a gap.
        self._steps: list[tuple[State | None, State]] = []
        # A receiver of a run started elsewhere may join it anywhere: no known previous state.
        self._last_state: State | None = None if joined_late else State.NOT_INITIATED

    @classmethod
    def start(cls, engine: SyncEngine) -> RunProbe:
        """A probe of ``engine``, started."""
        probe = cls(engine)
        probe.start_run()
        return probe

    @classmethod
    def reading(cls, receiver: UpdateReceiver) -> RunProbe:
        """A probe reading ``receiver`` of a run started elsewhere: it waits and records, but
        has no controller and does not stop the run."""
        return cls(None, receiver)

    def start_run(self) -> SyncController:
        """Start the engine; its controller."""
        if self.engine is None:
            raise RuntimeError("this probe only reads a receiver")
        self._controller = self.engine.start()
        return self._controller

    @property
    def controller(self) -> SyncController:
        """The run's controller (after ``start``)."""
        if self._controller is None:
            raise RuntimeError("the probe's engine was not started")
        return self._controller

    @property
    def run_id(self) -> str:
        """The run's id (the ``run_id`` of its log events)."""
        if self.engine is None:
            raise RuntimeError("this probe only reads a receiver")
        return self.engine.run_id

    def names(self) -> list[str]:
        """Every status read so far, as the CLI shows it (``Running.Recovering: ...``)."""
        return [status.text for status in self.statuses]

    def state_count(self, state: State) -> int:
        """How many statuses in ``state`` were read so far."""
        return sum(1 for status in self.statuses if status.state is state)

    # -- reading ---------------------------------------------------------------------------

    def record(self, update: SyncUpdate) -> SyncUpdate:
        """Record an update read from the receiver (by the probe or by the caller)."""
        self.updates.append(update)
        if isinstance(update, PriceTickUpdate):
            self.ticks.append(update.tick)
        elif isinstance(update, StatusUpdate):
            self._take_status(update.status)
        elif isinstance(update, PriceHistoryStateUpdate):
            self.price_history_states.append(update.state)
        elif isinstance(update, FundingSettlementsStateUpdate):
            self.funding_settlement_states.append(update.state)
        elif isinstance(update, Lagged):
            self.missed += update.missed
            self._last_state = None
        return update

    def _take_status(self, status: SyncStatus) -> None:
        self.statuses.append(status)
        # The same state again is a change of the degraded flag, not a transition.
        if status.state is not self._last_state:
            self._steps.append((self._last_state, status.state))
        self._last_state = status.state

    def next_update(self, timeout: float = 10.0) -> SyncUpdate:
        """The next update, recorded; ``TimeoutError`` if none came within ``timeout``."""
        return self.record(self.receiver.get(timeout))

    def drain(self) -> None:
        """Record every update already queued, without waiting."""
        with contextlib.suppress(ReceiverClosed):
            while (update := self.receiver.get_nowait()) is not None:
                self.record(update)

    def _read_for(self, seconds: float, what: str) -> StatusUpdate | None:
        """Read one update within ``seconds``; the status update, if it is one.

        Once the run has ended and every update was read, raises :class:`RunEnded`.
        """
        try:
            update = self.receiver.get(max(seconds, 0.0))
        except TimeoutError:
            return None
        except ReceiverClosed:
            raise RunEnded(what, self.statuses[-1] if self.statuses else None) from None
        self.record(update)
        return update if isinstance(update, StatusUpdate) else None

    # -- waiting ---------------------------------------------------------------------------

    def wait_for(
        self,
        accept: Callable[[SyncStatus], bool],
        timeout: float = 10.0,
        *,
        what: str = "a matching status",
    ) -> SyncStatus:
        """Read updates until a status satisfies ``accept``; that status.

        A terminal status that ``accept`` rejects raises :class:`RunEnded`.
        """
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{what}: not within {timeout:g} s; seen {self.names()}")
            update = self._read_for(left, what)
            if update is None:
                continue
            if accept(update.status):
                return update.status
            if update.status.is_stopped:
                raise RunEnded(what, update.status)

    def wait_for_state(self, state: State, timeout: float = 10.0) -> SyncStatus:
        """Read updates until a status in ``state``; that status."""
        return self.wait_for(lambda s: s.state is state, timeout, what=f"reaching {state.value}")

    def wait_for_end(self, timeout: float = STOP_TIMEOUT_S) -> SyncStatus:
        """Read updates until ``Shutdown`` or ``Failed``; that status."""
        return self.wait_for(lambda s: s.is_stopped, timeout, what="the end of the run")

    def wait_until(
        self, condition: Callable[[], bool], timeout: float = 10.0, *, what: str = "a condition"
    ) -> None:
        """Read updates until ``condition()`` holds (checked after each update and every
        0.1 s); a terminal status before that raises :class:`RunEnded`."""
        deadline = time.monotonic() + timeout
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{what}: not within {timeout:g} s; seen {self.names()}")
            update = self._read_for(min(left, 0.1), what)
            if update is not None and update.status.is_stopped and not condition():
                raise RunEnded(what, update.status)

    def wait_for_count(self, state: State, count: int, timeout: float = 10.0) -> SyncStatus:
        """Read updates until ``count`` statuses in ``state`` were read in all (e.g. the
        number of passes that reported ``Running.Backfilled``); the last status read."""
        self.wait_until(
            lambda: self.state_count(state) >= count,
            timeout,
            what=f"{count} times {state.value}",
        )
        return self.statuses[-1]

    def wait_for_ticks(self, count: int, timeout: float = 10.0) -> list[PriceTick]:
        """Read updates until ``count`` committed ticks were read in all; every tick read."""
        self.wait_until(lambda: len(self.ticks) >= count, timeout, what=f"{count} ticks")
        return self.ticks

    def watch(self, seconds: float) -> list[SyncStatus]:
        """Read updates for ``seconds`` (or until the run ends); the statuses read meanwhile."""
        before = len(self.statuses)
        deadline = time.monotonic() + seconds
        with contextlib.suppress(RunEnded):
            while (left := deadline - time.monotonic()) > 0:
                update = self._read_for(left, "watching")
                if update is not None and update.status.is_stopped:
                    break
        return self.statuses[before:]

    # -- the graph -------------------------------------------------------------------------

    def off_graph_steps(self) -> list[tuple[State, State]]:
        """Changes of status read so far that are no edge of the status graph."""
        return [
            (src, dst)
            for src, dst in self._steps
            if src is not None and not any(is_edge(t, src, dst) for t in Trigger)
        ]

    def check_timeline(self) -> None:
        """Raise ``AssertionError`` if a change of status read is no edge of the graph."""
        off_graph = self.off_graph_steps()
        if off_graph:
            raise AssertionError(f"status changes off the graph: {off_graph}; {self.names()}")

    # -- stopping --------------------------------------------------------------------------

    def shutdown(self, timeout: float = STOP_TIMEOUT_S) -> SyncStatus:
        """Shut the run down gracefully; the final status (every update read, timeline
        checked). Lifecycle errors of ``shutdown()`` are raised."""
        self.controller.shutdown()
        final = self.controller.until_stopped(timeout)
        self.drain()
        self.check_timeline()
        return final

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Teardown: shut down if still running without raising lifecycle errors, wait for
        the end, read what is left and check the timeline."""
        if self._controller is None:
            return
        if not self._controller.status_snapshot().is_stopped:
            with contextlib.suppress(SyncError):
                self._controller.shutdown()
        with contextlib.suppress(TimeoutError):
            self._controller.until_stopped(timeout)
        self.drain()
        self.check_timeline()


def logged_transitions(
    logs: Iterable[Mapping[str, Any]], run_id: str | None = None
) -> list[tuple[str, str, str]]:
    """``(trigger, src, dst)`` of every ``status_transition`` log event (of ``run_id``)."""
    return [
        (str(e["trigger"]), str(e["src"]), str(e["dst"]))
        for e in logs
        if e.get("event") == STATUS_TRANSITION and run_id in (None, e.get("run_id"))
    ]


def assert_transitions_follow_graph(
    logs: Iterable[Mapping[str, Any]], run_id: str | None = None
) -> list[tuple[str, str, str]]:
    """Every logged transition (of ``run_id``) is an edge of the status graph, the first one
    leaves ``NotInitiated`` and each starts where the previous one ended; the transitions."""
    transitions = logged_transitions(logs, run_id)
    off_graph = [
        (trigger, src, dst)
        for trigger, src, dst in transitions
        if not is_edge(Trigger(trigger), State(src), State(dst))
    ]
    assert [] == off_graph, "transitions that are no edge of the status graph"
    for before, after in itertools.pairwise(transitions):
        assert before[2] == after[1], f"{before} then {after}"
    if transitions:
        assert (Trigger.START.value, State.NOT_INITIATED.value) == transitions[0][:2]
    return transitions
