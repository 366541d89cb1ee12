"""The Engine actor: supervisor of one sync run.

It starts the children (DB writer, REST fetcher, WS feed), runs the mode *program* and owns
the recovery loop. A program is a generator that yields effects (``Sleep``, ``Report``,
``Publish``, ``Call``, see :mod:`qx_actors.actors.messages`); the Engine turns each effect into
a timer or a message and resumes the generator when the answer arrives, so the mode logic reads
top to bottom while the actor never blocks. Timers run on the Engine's own event loop
(:class:`~qx_actors.actors._base.AsyncQxActor`).

Errors decide by type alone: a :class:`~qx_actors.errors.RecoverableError` → ``Recovering``:
the children are stopped (connections, the writer lock and the HTTP session go with them);
after ``restart_interval_s`` → ``Restarting``: fresh children are started and the program runs
again from the top, as quantoxide starts fresh tasks on every restart. Anything else → the
children are stopped and the run ends in ``Failed``.

A child that dies unexpectedly (an uncaught exception, or stopped by someone else) is a
recoverable :class:`~qx_actors.errors.ChildDied`. Ticks that a stopping DB writer could not
store come back as :class:`UnwrittenTicks` and are handed to the next writer first: a child
restart drops nothing that was received.

Data does not pass through here: committed ticks go from the DB writer to the update hub. The
WS feed tells the Engine what its stream does (up, down, quiet, ticks flowing); the Engine
turns that into the degraded flag and ``Synced``, and hands the :class:`FeedState` to a
sleeping live program.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

import pykka

from qx_actors._run_health import RunHealth
from qx_actors.actors import _program
from qx_actors.actors._base import AsyncQxActor, RunThreads, tell
from qx_actors.actors.messages import (
    ActorRef,
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
    FeedQuiet,
    FeedState,
    Publish,
    PublishUpdates,
    Reply,
    Report,
    Request,
    SetDegraded,
    Sleep,
    StatusEvent,
    StoreTicks,
    StreamDown,
    StreamUp,
    Tell,
    TicksFlowing,
    UnwrittenTicks,
)
from qx_actors.config import QxConfig
from qx_actors.domain.lookback import SyncMode
from qx_actors.domain.timeutil import utc_now
from qx_actors.domain.values import PriceTick
from qx_actors.errors import ChildDied, ShutdownTimeout, is_recoverable
from qx_actors.logs import get_logger
from qx_actors.status import Trigger
from qx_actors.updates import UpdateHub

#: What a mode program yields and is sent back (typed in :mod:`qx_actors.actors._program`).
Program = _program.Program


@dataclass(frozen=True)
class RunContext:
    """What a mode program and the spawners of the children know about their run."""

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
    #: Where a program reads the time its timers run on (seconds; tests pass a manual one).
    monotonic: Callable[[], float] = time.monotonic
    #: Where committed ticks go (the DB writer publishes them; None: nobody listens).
    hub: UpdateHub | None = None


class ModeProgram(Protocol):
    """Builds the generator that a run executes (once per start or restart)."""

    def __call__(self, ctx: RunContext) -> Program: ...


#: Starts a child actor: gets the run context, the Engine's ref and the children started
#: before it (spawners run in order), returns the child's ref.
ChildSpawner = Callable[[RunContext, ActorRef, Mapping[str, ActorRef]], ActorRef]


class EngineActor(AsyncQxActor):
    """Runs one mode program with its children and recovers from recoverable errors."""

    def __init__(
        self,
        *,
        controller: ActorRef,
        context: RunContext,
        program: ModeProgram,
        children: Mapping[str, ChildSpawner],
        stop_order: tuple[str, ...] = (),
        tick_sink: str | None = None,
    ) -> None:
        super().__init__(threads=context.threads, run_id=context.run_id, child_name="engine")
        self._controller = controller
        self._ctx = context
        self._program_factory = program
        self._spawners = dict(children)
        # Children stop in this order (e.g. WS feed before DB writer so queued ticks land);
        # the ones not named stop afterwards.
        self._stop_order = stop_order
        # The child that stores ticks: it gets the ticks a stopped writer handed back.
        self._tick_sink = tick_sink
        self._carried_ticks: list[PriceTick] = []
        self._children: dict[str, ActorRef] = {}
        # Children that did not stop in time: no new generation starts while one still runs
        # (a second DB writer beside the old one would find its own writer lock taken).
        self._lingering: list[tuple[str, ActorRef]] = []
        self._program: Program | None = None
        self._attempt = 0
        self._ids = itertools.count(1)
        self._pending_request: int | None = None
        self._pending_target: str | None = None
        self._sleep: asyncio.TimerHandle | None = None
        self._sleep_until_feed_changes = False
        self._restart: asyncio.TimerHandle | None = None
        self._feed = FeedState()
        self._synced_reported = False
        self._stopping = False
        self._final_error: BaseException | None = None
        self._log = get_logger(run_id=context.run_id, mode=context.mode.name, actor="engine")

    # -- lifecycle ---------------------------------------------------------------------------

    def on_stop(self) -> None:
        # Runs for a graceful stop, a fatal error and a forced stop alike: the Controller hears
        # of the end only once every child is gone.
        self._stopping = True
        self._close_program()
        self._cancel_restart()
        deadline = time.monotonic() + self._ctx.config.sync.shutdown_timeout_s
        stuck = self._stop_children(deadline)
        if self._carried_ticks:
            stuck += self._flush_carried_ticks(deadline)
        if stuck and self._final_error is None:
            # A graceful stop that left a child running did not complete: the run fails.
            timeout = self._ctx.config.sync.shutdown_timeout_s
            self._final_error = ShutdownTimeout(
                f"{', '.join(stuck)} did not stop within {timeout:g} s"
            )
        self._tell_controller(EngineStopped(self._final_error))

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self._final_error = exception_value
        self.on_stop()

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
            case StreamUp() | StreamDown() | FeedQuiet() | TicksFlowing():
                self._on_feed_event(message)
            case EngineBegin():
                self._spawn_children()
                self._start_program()
            case EngineStop():
                self._end(None)
            case ChildFailed(source=source, error=error):
                if not self._stopping:
                    self._log.warning("child_failed", child=source, error=str(error))
                    self._handle_error(error)
            case ChildExited(source=source, ref=ref):
                # Children the Engine stops are no longer in _children: only a surprise counts.
                if not self._stopping and self._children.get(source) is ref:
                    self._log.warning("child_exited", child=source)
                    self._handle_error(ChildDied(source, "stopped unexpectedly"))
            case UnwrittenTicks(ticks=ticks):
                self._carried_ticks.extend(ticks)
                self._log.warning("ticks_carried_over", count=len(ticks))
            case _:
                self._log.warning("unknown_message", message=repr(message))

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

    # -- the stream, as the WS feed tells it ---------------------------------------------------

    def _on_feed_event(self, event: StreamUp | StreamDown | FeedQuiet | TicksFlowing) -> None:
        if self._program is None or self._stopping:
            return  # recovering: the feed that said it is gone, a fresh one starts over
        feed = self._feed
        match event:
            case StreamUp():
                self._feed = replace(feed, down=False)
                self._set_degraded(False, "stream subscribed")
            case StreamDown(error=error):
                self._feed = replace(feed, down=True)
                self._set_degraded(True, str(error))
            case FeedQuiet(silent_s=silent_s):
                self._feed = replace(feed, quiet=True)
                if not feed.down:
                    self._set_degraded(True, f"no tick for {silent_s:g} s")
            case TicksFlowing():
                self._feed = replace(feed, quiet=False)
                if feed.quiet and not feed.down:
                    self._set_degraded(False, "ticks flow again")
                self._report(Trigger.SYNCED)
        if self._feed != feed and self._sleep is not None and self._sleep_until_feed_changes:
            self._sleep.cancel()
            self._sleep = None
            self._advance(self._feed, None)

    def _set_degraded(self, degraded: bool, reason: str) -> None:
        self._tell_controller(DegradedChanged(degraded, reason))

    # -- the program -------------------------------------------------------------------------

    def _start_program(self) -> None:
        self._feed = FeedState()
        self._synced_reported = False
        self._program = self._program_factory(replace(self._ctx, attempt=self._attempt))
        self._advance(None, None)

    def _close_program(self) -> None:
        program, self._program = self._program, None
        if self._pending_request is not None and self._pending_target in self._children:
            # e.g. a range fetch of the old attempt must not go on paging and writing
            tell(self._children[self._pending_target], CancelRequest(self._pending_request))
        self._pending_request = None
        if self._sleep is not None:
            self._sleep.cancel()
            self._sleep = None
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
                        self._report(trigger, degraded=degraded)
                    case Publish(update=update):
                        self._tell_controller(PublishUpdates((update,)))
                    case SetDegraded(degraded=degraded, reason=reason):
                        self._set_degraded(degraded, reason)
                    case Sleep(seconds=seconds, until_feed_changes=interruptible):
                        self._sleep_until_feed_changes = interruptible
                        self._sleep = self.call_later(seconds, self._wake_program)
                        return
                    case Tell(target=target, message=message):
                        self._children[target].tell(message)
                    case Call(target=target, payload=payload):
                        self._pending_request = self._send_request(target, payload)
                        self._pending_target = target
                        return
                    case _:
                        raise TypeError(f"a mode program yielded an unknown effect: {effect!r}")
        except StopIteration:
            self._program = None
            self._log.info("program_finished")
        except Exception as exc:
            self._program = None
            self._handle_error(exc)

    def _wake_program(self) -> None:
        if self._sleep is None or self._stopping:
            return
        self._sleep = None
        self._advance(self._feed, None)

    def _report(self, trigger: Trigger, *, degraded: bool | None = None) -> None:
        if trigger is Trigger.SYNCED:
            if self._synced_reported:
                return  # once per attempt: by the first committed tick or the program
            self._synced_reported = True
        self._tell_controller(StatusEvent(trigger, None, degraded))

    def _send_request(self, target: str, payload: Request[Any]) -> int:
        """Send a request to a child; its :class:`Reply` will carry the returned id."""
        request_id = next(self._ids)
        self._children[target].tell(Envelope(request_id, self.actor_ref, payload))
        return request_id

    # -- recovery and stop -------------------------------------------------------------------

    def _handle_error(self, error: BaseException) -> None:
        """Recover from a recoverable error, fail on anything else."""
        if self._stopping:
            return
        if is_recoverable(error) and self._restart is not None:
            # Already recovering (e.g. the old children's last words): one restart is enough.
            self._log.info("recoverable_error_while_recovering", error=_describe(error))
            return
        if is_recoverable(error):
            self._recover(error)
        else:
            self._fail(error)

    def _recover(self, error: BaseException) -> None:
        self._log.warning("recoverable_error", error=_describe(error))
        self._close_program()
        self._tell_controller(StatusEvent(Trigger.RECOVERABLE_ERROR, error))
        # Fresh state for the next attempt: the children go now (a DB writer releases its
        # connection and writer lock, the feed its socket), new ones start at the restart.
        sync = self._ctx.config.sync
        self._stop_children(time.monotonic() + sync.shutdown_timeout_s)
        self._restart = self.call_later(sync.restart_interval_s, self._on_restart_due)

    def _on_restart_due(self) -> None:
        if self._stopping:
            return
        running = self._ctx.threads.actor_running
        self._lingering = [(n, ref) for n, ref in self._lingering if running(ref.actor_urn)]
        if self._lingering:
            self._log.warning("restart_postponed", lingering=len(self._lingering))
            interval = self._ctx.config.sync.restart_interval_s
            self._restart = self.call_later(interval, self._on_restart_due)
            return
        self._restart = None
        self._tell_controller(StatusEvent(Trigger.RESTART))
        self._attempt += 1
        self._spawn_children()
        self._start_program()

    def _cancel_restart(self) -> None:
        if self._restart is not None:
            self._restart.cancel()
            self._restart = None

    def _stop_children(self, deadline: float) -> list[str]:
        """Stop every child (in stop order) by ``deadline``; the names of those that did not."""
        ordered = [n for n in self._stop_order if n in self._children]
        ordered += [n for n in self._children if n not in ordered]
        timed_out: list[str] = []
        for name in ordered:
            ref = self._children.pop(name)
            try:
                ref.stop(block=True, timeout=max(deadline - time.monotonic(), 0.01))
            except pykka.Timeout:
                self._log.warning("child_stop_timeout", child=name)
                self._lingering.append((name, ref))
                timed_out.append(name)
            except pykka.ActorDeadError:
                pass
        return timed_out

    def _flush_carried_ticks(self, deadline: float) -> list[str]:
        """Stopped while recovering: one last DB writer stores the ticks handed back."""
        name = self._tick_sink
        spawn = self._spawners.get(name) if name else None
        ticks, self._carried_ticks = tuple(self._carried_ticks), []
        if name is None or spawn is None:
            self._log.error("ticks_not_stored", count=len(ticks))
            return []
        self._children[name] = sink = spawn(self._ctx, self.actor_ref, {})
        sink.tell(StoreTicks(ticks, None))
        # If the database still fails, the writer logs what it could not store as it stops.
        return self._stop_children(deadline)

    def _fail(self, error: BaseException) -> None:
        self._log.error("fatal_error", error=_describe(error))
        self._end(error)

    def _end(self, error: BaseException | None) -> None:
        """Stop the program now; children and the report follow in ``on_stop``."""
        if self._stopping:
            return
        self._stopping = True
        self._final_error = error
        self._close_program()
        with contextlib.suppress(pykka.ActorDeadError):
            self.actor_ref.stop(block=False)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
