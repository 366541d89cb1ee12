"""The public handles: ``SyncEngine`` (builder), ``SyncController`` (running), ``SyncReader``.

These are plain objects used from the application's threads; behind them the Controller and
Engine actors do the work. ``SyncEngine.reader()``, ``update_receiver()`` and
``status_snapshot()`` work before ``start()`` so that no early update is missed.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import pykka

from qx_actors.actors._base import RunThreads
from qx_actors.actors._controller import ControllerActor
from qx_actors.actors._engine import (
    ChildSpawner,
    EngineActor,
    ModeProgram,
    RunContext,
    TicksWaiting,
)
from qx_actors.actors._replayer import ReplayClock
from qx_actors.actors.messages import BeginRun, ForceStop, RequestShutdown
from qx_actors.config import QxConfig, check_against_clock, register_secrets
from qx_actors.domain.lookback import SyncMode
from qx_actors.domain.timeutil import utc_now
from qx_actors.errors import (
    ShutdownTimeout,
    SyncAlreadyStarted,
    SyncNotStarted,
    SyncShutdownFailed,
)
from qx_actors.modes import default_parts
from qx_actors.observability._run_health import RunHealth
from qx_actors.status import State, SyncStatus, shutdown_refusal
from qx_actors.updates import AsyncUpdateReceiver, UpdateHub, UpdateReceiver

__all__ = [
    "SyncController",
    "SyncEngine",
    "SyncReader",
]


class SyncReader:
    """A read-only view of a run (mode, status, updates) to hand to other parts of an app."""

    def __init__(
        self,
        mode: SyncMode,
        hub: UpdateHub,
        run_id: str,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._mode = mode
        self._hub = hub
        self._run_id = run_id
        self._clock = clock

    @property
    def mode(self) -> SyncMode:
        """The run's mode."""
        return self._mode

    @property
    def run_id(self) -> str:
        """The run's id (also in every log event of the run)."""
        return self._run_id

    def status_snapshot(self) -> SyncStatus:
        """The current status."""
        return self._hub.status()

    def now(self) -> datetime:
        """The run's time: its clock (``SyncEngine(..., clock=)``); in a replay the recorded
        instant of the last update delivered (the start before the first)."""
        return self._clock()

    def update_receiver(self) -> UpdateReceiver:
        """A new bounded receiver of every update from now on."""
        return self._hub.receiver()

    def updates(self) -> AsyncUpdateReceiver:
        """A new bounded asyncio receiver of every update from now on.

        ``async for update in controller.updates():`` yields what ``update_receiver()`` would
        (``Lagged`` included, as an item) and ends once the run has ended and everything was
        read. The receiver starts collecting when this is called, not at the first ``await``.
        """
        return self._hub.async_receiver()


class SyncController(SyncReader):
    """The handle of a running sync: status, updates, shutdown."""

    def __init__(
        self,
        mode: SyncMode,
        hub: UpdateHub,
        run_id: str,
        controller: pykka.ActorRef[Any],
        shutdown_timeout_s: float,
        threads: RunThreads,
        health: RunHealth,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        super().__init__(mode, hub, run_id, clock)
        self._controller = controller
        self._threads = threads
        self._health = health
        self._shutdown_timeout_s = shutdown_timeout_s

    def reader(self) -> SyncReader:
        """A read-only view of this run."""
        return SyncReader(self.mode, self._hub, self.run_id, self._clock)

    def health(self) -> dict[str, Any]:
        """The run's health: status, tick age, candles behind, gaps, counters (plain data)."""
        return self._health.snapshot()

    def subscribe(self, actor_ref: pykka.ActorRef[Any]) -> None:
        """Tell every update from now on to an actor of the embedding application."""
        self._hub.subscribe(actor_ref)

    def shutdown(self) -> None:
        """Stop the run gracefully; blocks until ``Shutdown`` (or raises).

        Raises ``SyncAlreadyShutdown`` on a second call, ``SyncAlreadyTerminated`` after a fatal
        stop, and ``SyncShutdownFailed`` if the actors did not stop within
        ``sync.shutdown_timeout_s`` (they are then stopped forcibly and the run is ``Failed``).
        """
        refusal = shutdown_refusal(self._hub.status())
        if refusal is not None:
            raise refusal
        try:
            self._controller.ask(RequestShutdown(), timeout=self._shutdown_timeout_s)
        except pykka.ActorDeadError:
            # The run ended between the snapshot and the request.
            refusal = shutdown_refusal(self._hub.status())
            raise refusal or SyncShutdownFailed(RuntimeError("controller stopped")) from None
        status = self._hub.wait_stopped(self._shutdown_timeout_s)
        if status is None:
            error = ShutdownTimeout(
                f"the actors did not stop within {self._shutdown_timeout_s} s; stopped forcibly"
            )
            with contextlib.suppress(pykka.ActorDeadError, pykka.Timeout):
                self._controller.ask(ForceStop(error), timeout=self._shutdown_timeout_s)
            status = self._hub.wait_stopped(self._shutdown_timeout_s)
            raise SyncShutdownFailed(status.error if status and status.error else error)
        if status.state is State.FAILED:
            raise SyncShutdownFailed(status.error or RuntimeError("run failed"))
        self._join_actors()

    def until_stopped(self, timeout: float | None = None) -> SyncStatus:
        """Block until the run is ``Shutdown`` or ``Failed``; return the final status.

        Raises ``TimeoutError`` if that did not happen within ``timeout`` seconds.
        """
        status = self._hub.wait_stopped(timeout)
        if status is None:
            raise TimeoutError(f"the run did not stop within {timeout} s")
        self._join_actors()
        return status

    def _join_actors(self) -> None:
        # The terminal status is published just before the Controller stops itself; a thread
        # stuck after a forced stop is a daemon and is left behind (bounded wait).
        self._threads.join(self._shutdown_timeout_s)


class SyncEngine:
    """Builds one sync run; ``start()`` starts its actors and returns a :class:`SyncController`.

    ``program`` and ``children`` replace the mode logic and the child actors (tests and
    extensions); by default they follow ``mode`` (or the config's mode). ``clock`` is where the
    run reads the time (default: the wall clock; e.g. the simulator's ``ManualClock`` in tests).
    A replay (``SyncMode.replay``) paces itself on ``clock`` while the run's time
    (:meth:`SyncReader.now`) follows the replayed instant; its receivers never drop.
    """

    def __init__(
        self,
        config: QxConfig,
        mode: SyncMode | None = None,
        *,
        program: ModeProgram | None = None,
        children: Mapping[str, ChildSpawner] | None = None,
        stop_order: tuple[str, ...] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        # A config built in code was registered by no loader: its password is scrubbed from
        # every log line and message from here on.
        register_secrets(config)
        self._clock = clock or utc_now
        self.mode = mode or config.sync_mode
        # What only the run's clock can tell: an absolute reach in the future, a lookback (the
        # mode's, wherever it came from) before the reach; the same ConfigError as from YAML
        # (quantoxide's ``LookbackExceedsPriceHistoryReach`` for the lookback).
        check_against_clock(config, self._clock(), mode=self.mode)
        self.run_id = uuid.uuid4().hex[:12]
        window = self.mode.replay_window
        #: The run's time: the replayed instant in a replay, else ``clock``.
        self._run_clock: Callable[[], datetime] = (
            self._clock if window is None else ReplayClock(window.start)
        )
        self.health = RunHealth(lambda: self._hub.status())
        self._hub = UpdateHub(
            config.sync.update_queue_capacity,
            observer=self.health.observe,
            batch_observer=self.health.observe_batch,
            lossless=window is not None,
        )
        self.health.register_gauges("updates", self._hub.backlog)
        self._program = program
        self._children = children
        self._stop_order = stop_order
        self._threads = RunThreads()
        self._ticks_waiting = TicksWaiting()
        self.health.register_gauges("run", lambda: {"ticks_waiting": self._ticks_waiting.total})
        self._started = False
        self._controller: SyncController | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: QxConfig, mode: SyncMode | None = None) -> SyncEngine:
        """An engine for ``config``; ``mode`` overrides the config's mode."""
        return cls(config, mode)

    def reader(self) -> SyncReader:
        """A read-only view of the (future) run."""
        return SyncReader(self.mode, self._hub, self.run_id, self._run_clock)

    def now(self) -> datetime:
        """The run's time (see :meth:`SyncReader.now`)."""
        return self._run_clock()

    def update_receiver(self) -> UpdateReceiver:
        """A new bounded receiver; created before ``start()`` it sees every update."""
        return self._hub.receiver()

    def updates(self) -> AsyncUpdateReceiver:
        """A new bounded asyncio receiver; created before ``start()`` it sees every update."""
        return self._hub.async_receiver()

    def status_snapshot(self) -> SyncStatus:
        """The current status (``NotInitiated`` before ``start()``)."""
        return self._hub.status()

    def ticks_waiting(self) -> int:
        """Received ticks that no DB writer holds now: held by the WS feed while the DB writer
        is replaced after a database error, carried over to the next writer, or in the tick
        spool (``sync.tick_spool``; :meth:`ticks_spooled`) (``/health``)."""
        return self._ticks_waiting.total

    def ticks_spooled(self) -> int:
        """Of :meth:`ticks_waiting`, those in the tick spool file (``sync.tick_spool``), a spool
        left by a crash included, until stored."""
        return self._ticks_waiting.spooled

    def shutdown(self) -> None:
        """Shut the run down; before ``start()`` this raises ``SyncNotStarted``."""
        if self._controller is None:
            raise SyncNotStarted("the sync engine was not started")
        self._controller.shutdown()

    def start(self) -> SyncController:
        """Start the actors; a second call raises ``SyncAlreadyStarted``."""
        with self._lock:
            if self._started:
                raise SyncAlreadyStarted("this SyncEngine was already started")
            self._started = True
        if self._program is None or self._children is None:
            parts = default_parts(self.config, self.mode)
            program = self._program or parts.program
            children = self._children if self._children is not None else parts.children
            stop_order = self._stop_order or parts.stop_order
            tick_sink, tick_feed = parts.tick_sink, parts.tick_feed
        else:
            program, children, stop_order = self._program, self._children, self._stop_order or ()
            tick_sink = tick_feed = None
        context = RunContext(
            run_id=self.run_id,
            mode=self.mode,
            config=self.config,
            threads=self._threads,
            health=self.health,
            clock=self._run_clock,
            hub=self._hub,
            ticks_waiting=self._ticks_waiting,
            pace_clock=self._clock,
            started_at=self._clock(),
        )

        def spawn_engine(controller: pykka.ActorRef[Any]) -> pykka.ActorRef[Any]:
            return EngineActor.start(
                controller=controller,
                context=context,
                program=program,
                children=children,
                stop_order=stop_order,
                tick_sink=tick_sink,
                tick_feed=tick_feed,
            )

        controller = ControllerActor.start(
            run_id=self.run_id,
            mode=self.mode.name,
            hub=self._hub,
            spawn_engine=spawn_engine,
            threads=self._threads,
        )
        controller.ask(BeginRun())
        self._controller = SyncController(
            self.mode,
            self._hub,
            self.run_id,
            controller,
            self.config.sync.shutdown_timeout_s,
            self._threads,
            self.health,
            self._run_clock,
        )
        return self._controller
