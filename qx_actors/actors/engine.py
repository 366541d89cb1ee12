"""The Engine actor: supervisor of one sync run.

It starts the children (REST fetcher, DB writer, WS feed), runs the mode *program* and owns the
recovery loop. A program is a generator that yields effects (``Sleep``, ``Report``,
``Publish``, ``Call``, see :mod:`qx_actors.actors.messages`); the Engine turns each effect into
a timer or a message and resumes the generator when the answer arrives, so the mode logic reads
top to bottom while the actor thread never blocks.

Errors decide by type alone: a :class:`~qx_actors.errors.RecoverableError` → ``Recovering``:
the children are stopped (connections, the writer lock and the HTTP session go with them);
after ``restart_interval_s`` → ``Restarting``: fresh children are started and the program runs
again from the top, as quantoxide starts fresh tasks on every restart. Anything else → the
children are stopped and the run ends in ``Failed``.

A child that dies unexpectedly (an uncaught exception, or stopped by someone else) is a
recoverable :class:`~qx_actors.errors.ChildDied`. Ticks that a stopping DB writer could not
store come back as :class:`UnwrittenTicks` and are handed to the next writer first: a child
restart drops nothing that was received.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import pykka

from qx_actors.actors.base import QxActor, RunThreads
from qx_actors.actors.loop_thread import LoopThread
from qx_actors.actors.messages import (
    Call,
    CancelRequest,
    ChildExited,
    ChildFailed,
    ChildrenStarted,
    DegradedChanged,
    EngineBegin,
    EngineStop,
    EngineStopped,
    Envelope,
    Publish,
    PublishUpdates,
    Reply,
    Report,
    SetDegraded,
    Sleep,
    StatusEvent,
    StoreTicks,
    Tell,
    TimerFired,
    UnwrittenTicks,
)
from qx_actors.config import QxConfig
from qx_actors.domain.lookback import SyncMode
from qx_actors.domain.timeutil import utc_now
from qx_actors.domain.values import PriceTick
from qx_actors.errors import ChildDied, is_recoverable
from qx_actors.health import RunHealth
from qx_actors.logs import get_logger
from qx_actors.status import Trigger
from qx_actors.updates import SyncUpdate

#: What a mode program yields and is sent back.
Program = Generator[Any, Any, None]


@dataclass(frozen=True)
class RunContext:
    """What a mode program and the children get to know about their run."""

    run_id: str
    mode: SyncMode
    config: QxConfig
    #: Count of (re)starts of the program in this run: 0 on the first pass.
    attempt: int = 0
    threads: RunThreads = field(default_factory=RunThreads)
    #: Where actors register their counters for the health probe (None: not collected).
    health: RunHealth | None = None
    #: Where the run reads the time (the wall clock; tests and replays pass a manual one).
    clock: Callable[[], datetime] = utc_now


class ModeProgram(Protocol):
    """Builds the generator that a run executes (once per start or restart)."""

    def __call__(self, ctx: RunContext) -> Program: ...


#: Starts a child actor: gets the run context, the Engine's ref and the children started
#: before it (spawners run in order), returns the child's ref.
ChildSpawner = Callable[
    [RunContext, pykka.ActorRef[Any], Mapping[str, pykka.ActorRef[Any]]], pykka.ActorRef[Any]
]

#: Called by the Engine on an out-of-band message it does not know (e.g. ticks committed);
#: returns the updates/effects to apply, or raises to trigger recovery.
OutOfBandHandler = Callable[[Any], list[Any]]


class EngineActor(QxActor):
    """Runs one mode program with its children and recovers from recoverable errors."""

    def __init__(
        self,
        *,
        controller: pykka.ActorRef[Any],
        context: RunContext,
        program: ModeProgram,
        children: Mapping[str, ChildSpawner],
        stop_order: tuple[str, ...] = (),
        on_out_of_band: Callable[[EngineActor, Any], None] | None = None,
        tick_sink: str | None = None,
    ) -> None:
        super().__init__(threads=context.threads, run_id=context.run_id)
        self._controller = controller
        self._ctx = context
        self._program_factory = program
        self._spawners = dict(children)
        # Children stop in this order (e.g. WS feed before DB writer so queued ticks land);
        # the ones not named stop afterwards.
        self._stop_order = stop_order
        self._on_out_of_band = on_out_of_band
        # The child that stores ticks: it gets the ticks a stopped writer handed back.
        self._tick_sink = tick_sink
        self._carried_ticks: list[PriceTick] = []
        self._children: dict[str, pykka.ActorRef[Any]] = {}
        # Children that did not stop in time: no new generation starts while one still runs
        # (a second DB writer beside the old one would find its own writer lock taken).
        self._lingering: list[pykka.ActorRef[Any]] = []
        self._program: Program | None = None
        self._attempt = 0
        self._ids = itertools.count(1)
        self._pending_request: int | None = None
        self._pending_target: str | None = None
        self._pending_timer: int | None = None
        self._restart_timer: int | None = None
        self._timers = LoopThread(f"qx-engine-timers-{context.run_id}")
        self._stopping = False
        self._final_error: BaseException | None = None
        self._log = get_logger(run_id=context.run_id, mode=context.mode.name, actor="engine")

    # -- lifecycle ---------------------------------------------------------------------------

    def on_start(self) -> None:
        super().on_start()
        self._timers.start()
        self.threads.add(self._timers.thread)

    def on_stop(self) -> None:
        # Runs for a graceful stop, a fatal error and a forced stop alike: the Controller hears
        # of the end only once every child and the timer thread are gone.
        self._stopping = True
        self._close_program()
        deadline = time.monotonic() + self._ctx.config.sync.shutdown_timeout_s
        self._stop_children(deadline)
        if self._carried_ticks:
            self._flush_carried_ticks(deadline)
        self._timers.stop()
        self._tell_controller(EngineStopped(self._final_error))

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self._final_error = exception_value

    def notify_controller(self, message: Any) -> None:
        """Send a message to the Controller (for out-of-band handlers)."""
        self._tell_controller(message)

    def _tell_controller(self, message: Any) -> None:
        try:
            self._controller.tell(message)
        except pykka.ActorDeadError:  # the run already ended (e.g. a forced stop)
            self._log.info("controller_gone", message=type(message).__name__)

    # -- messages ----------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        try:
            self._dispatch(message)
        except Exception as exc:  # a bug or an unexpected library error: end the run
            self._log.exception("engine_error", error=repr(exc))
            self._fail(exc)
        return None

    def _dispatch(self, message: Any) -> None:
        match message:
            case Reply(request_id=request_id, value=value, error=error):
                if request_id == self._pending_request and not self._stopping:
                    self._pending_request = None
                    self._advance(value, error)
            case TimerFired(token=token):
                self._on_timer(token)
            case EngineBegin():
                self._begin()
            case EngineStop():
                self._stop_gracefully()
            case ChildFailed(source=source, error=error):
                if not self._stopping:
                    self._log.warning("child_failed", child=source, error=str(error))
                    self.handle_error(error)
            case ChildExited(source=source, ref=ref):
                # Children the Engine stops are no longer in _children: only a surprise counts.
                if not self._stopping and self._children.get(source) is ref:
                    self._log.warning("child_exited", child=source)
                    self.handle_error(ChildDied(source, "stopped unexpectedly"))
            case UnwrittenTicks(ticks=ticks):
                self._carried_ticks.extend(ticks)
                self._log.warning("ticks_carried_over", count=len(ticks))
            case _:
                if self._on_out_of_band is not None and not self._stopping:
                    self._on_out_of_band(self, message)
                else:
                    self._log.warning("unknown_message", message=repr(message))

    def _begin(self) -> None:
        self._spawn_children()
        self._start_program()

    def _spawn_children(self) -> None:
        """Start a fresh generation of children (in order) and hand over carried ticks."""
        for name, spawn in self._spawners.items():
            self._children[name] = spawn(self._ctx, self.actor_ref, dict(self._children))
        self._tell_controller(ChildrenStarted(tuple(self._children.values())))
        sink = self._children.get(self._tick_sink) if self._tick_sink else None
        if sink is not None and self._carried_ticks:
            ticks, self._carried_ticks = tuple(self._carried_ticks), []
            sink.tell(StoreTicks(ticks, None))
            self._log.info("ticks_handed_over", count=len(ticks))

    # -- the program -------------------------------------------------------------------------

    def _start_program(self) -> None:
        ctx = RunContext(
            run_id=self._ctx.run_id,
            mode=self._ctx.mode,
            config=self._ctx.config,
            attempt=self._attempt,
            threads=self._ctx.threads,
            health=self._ctx.health,
            clock=self._ctx.clock,
        )
        self._program = self._program_factory(ctx)
        self._advance(None, None)

    def _close_program(self) -> None:
        program, self._program = self._program, None
        if self._pending_request is not None and self._pending_target in self._children:
            # e.g. a range fetch of the old attempt must not go on paging and writing
            with contextlib.suppress(pykka.ActorDeadError):
                self._children[self._pending_target].tell(CancelRequest(self._pending_request))
        self._pending_request = None
        self._pending_timer = None
        if program is not None:
            program.close()

    def _advance(self, value: Any, error: BaseException | None) -> None:
        """Resume the program until it waits for something (or ends, or fails)."""
        program = self._program
        if program is None:
            return
        try:
            while True:
                effect = program.throw(error) if error is not None else program.send(value)
                value, error = None, None
                match effect:
                    case Report(trigger=trigger, degraded=degraded):
                        self.report(trigger, degraded=degraded)
                    case Publish(update=update):
                        self.publish(update)
                    case SetDegraded(degraded=degraded, reason=reason):
                        self._tell_controller(DegradedChanged(degraded, reason))
                    case Sleep(seconds=seconds):
                        self._pending_timer = self._set_timer(seconds)
                        return
                    case Tell(target=target, message=message):
                        self._children[target].tell(message)
                    case Call(target=target, payload=payload):
                        self._pending_request = self.send_to_child(target, payload)
                        self._pending_target = target
                        return
                    case _:
                        raise TypeError(f"a mode program yielded an unknown effect: {effect!r}")
        except StopIteration:
            self._program = None
            self._log.info("program_finished")
        except Exception as exc:
            self._program = None
            self.handle_error(exc)

    # -- helpers for the program and for out-of-band handlers ---------------------------------

    def report(self, trigger: Trigger, *, degraded: bool | None = None) -> None:
        """Tell the Controller to fire ``trigger``."""
        self._tell_controller(StatusEvent(trigger, None, degraded))

    def publish(self, *updates: SyncUpdate) -> None:
        """Hand updates to the Controller for the subscribers."""
        self._tell_controller(PublishUpdates(tuple(updates)))

    def send_to_child(self, target: str, payload: Any) -> int:
        """Send a request to a child; its :class:`Reply` will carry the returned id."""
        request_id = next(self._ids)
        self._children[target].tell(Envelope(request_id, self.actor_ref, payload))
        return request_id

    def handle_error(self, error: BaseException) -> None:
        """Recover from a recoverable error, fail on anything else."""
        if self._stopping:
            return
        if is_recoverable(error) and self._restart_timer is not None:
            # Already recovering (e.g. the old children's last words): one restart is enough.
            self._log.info("recoverable_error_while_recovering", error=_describe(error))
            return
        if is_recoverable(error):
            self._recover(error)
        else:
            self._fail(error)

    # -- timers ------------------------------------------------------------------------------

    def _set_timer(self, seconds: float) -> int:
        token = next(self._ids)
        ref = self.actor_ref
        loop = self._timers.loop

        def _arm() -> None:
            loop.call_later(max(seconds, 0.0), _fire)

        def _fire() -> None:
            with contextlib.suppress(pykka.ActorDeadError):
                ref.tell(TimerFired(token))

        self._timers.call_soon(_arm)
        return token

    def _on_timer(self, token: int) -> None:
        if self._stopping:
            return
        if token == self._pending_timer:
            self._pending_timer = None
            self._advance(None, None)
        elif token == self._restart_timer:
            self._lingering = [ref for ref in self._lingering if ref.is_alive()]
            if self._lingering:
                self._log.warning("restart_postponed", lingering=len(self._lingering))
                self._restart_timer = self._set_timer(self._ctx.config.sync.restart_interval_s)
                return
            self._restart_timer = None
            self._tell_controller(StatusEvent(Trigger.RESTART))
            self._attempt += 1
            self._spawn_children()
            self._start_program()

    # -- recovery and stop -------------------------------------------------------------------

    def _recover(self, error: BaseException) -> None:
        self._log.warning("recoverable_error", error=_describe(error))
        self._close_program()
        self._tell_controller(StatusEvent(Trigger.RECOVERABLE_ERROR, error))
        # Fresh state for the next attempt: the children go now (a DB writer releases its
        # connection and writer lock, the feed its socket), new ones start at the restart.
        sync = self._ctx.config.sync
        self._stop_children(time.monotonic() + sync.shutdown_timeout_s)
        self._restart_timer = self._set_timer(sync.restart_interval_s)

    def _stop_children(self, deadline: float) -> None:
        ordered = [n for n in self._stop_order if n in self._children]
        ordered += [n for n in self._children if n not in ordered]
        for name in ordered:
            ref = self._children.pop(name)
            try:
                ref.stop(block=True, timeout=max(deadline - time.monotonic(), 0.01))
            except pykka.Timeout:
                self._log.warning("child_stop_timeout", child=name)
                self._lingering.append(ref)
            except pykka.ActorDeadError:
                pass

    def _flush_carried_ticks(self, deadline: float) -> None:
        """Stopped while recovering: one last DB writer stores the ticks handed back."""
        name = self._tick_sink
        spawn = self._spawners.get(name) if name else None
        ticks, self._carried_ticks = tuple(self._carried_ticks), []
        if name is None or spawn is None:
            self._log.error("ticks_not_stored", count=len(ticks))
            return
        self._children[name] = sink = spawn(self._ctx, self.actor_ref, {})
        sink.tell(StoreTicks(ticks, None))
        # If the database still fails, the writer logs what it could not store as it stops.
        self._stop_children(deadline)

    def _fail(self, error: BaseException) -> None:
        self._log.error("fatal_error", error=_describe(error))
        self._end(error)

    def _stop_gracefully(self) -> None:
        self._end(None)

    def _end(self, error: BaseException | None) -> None:
        """Stop the program now; children, timers and the report follow in ``on_stop``."""
        if self._stopping:
            return
        self._stopping = True
        self._final_error = error
        self._close_program()
        self.actor_ref.stop(block=False)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
