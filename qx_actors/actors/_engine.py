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

Supervision goes by events, never blocking the Engine's loop: the Engine's :class:`Phase` says
where the run is (``RUNNING`` → ``RECOVERING`` → ``WAITING_RESTART`` → ``RUNNING`` ...,
``SHUTTING_DOWN`` → ``STORING_CARRIED_TICKS`` → ``ENDED``). Children are asked to stop
(``stop(block=False)``) in stop order, each once the one before it said :class:`ChildExited`,
under one ``shutdown_timeout_s`` deadline (a ``call_later`` timer): past it the rest are asked
at once; at the end of the run a child still running fails it with ``ShutdownTimeout``, while
recovering the restart waits for it. The restart comes when ``restart_interval_s`` has passed
*and* every child of the failed attempt has exited; the Engine stops itself only once its
children are gone (``on_stop`` blocks only after a failure of the Engine or a forced stop).

A database error (a :class:`~qx_actors.errors.StorageError`: down, restarted, locked, full,
connection lost) restarts only what needs the database: the DB writer, the REST fetcher (it
writes through the writer) and the program (candle work pauses, and starts again from the top
with the new writer). The WS feed outlives it: told :class:`UseDbWriter` ``(None)`` it holds
the ticks it receives in its bounded queue (the run is ``degraded`` meanwhile), and the new
writer gets them once it said :class:`DbWriterReady`. The status still goes
``Running.Recovering`` with the database error and back. Any other recoverable error restarts
every child; an error of the kept feed itself while the writer is replaced adds the feed to the
restart.

After a restart the run stays ``Running.Restarting`` until the program makes progress: its
first ``Report(PROGRESS)`` is held until a fetch stored candles or settlements, the feed
committed ticks (``TicksFlowing``), or the program reports ``Synced``/``Backfilled`` — a
restart loop against a down exchange or database never passes through ``Running.InProgress``.
The cause of a failure is logged once, by ``recoverable_error`` (warning); the child's own word
of it (``child_failed``) is a debug line.

A child that dies unexpectedly (an uncaught exception, or stopped by someone else) is a
recoverable :class:`~qx_actors.errors.ChildDied`. Ticks that a stopping DB writer could not
store come back as :class:`UnwrittenTicks` and are handed to the next writer first: a child
restart drops nothing that was received.

Data does not pass through here: committed ticks go from the DB writer to the update hub. The
WS feed tells the Engine what its stream does (up, down, quiet, ticks flowing); its
:class:`~qx_actors.actors._feed_watch.FeedWatch` turns that into the degraded flag and
``Synced``, and the Engine hands the :class:`~qx_actors.actors.messages.FeedState` to a
sleeping live program.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol, TypeGuard

import pykka

from qx_actors.actors import _program
from qx_actors.actors._base import AsyncQxActor, RunThreads, tell
from qx_actors.actors._feed_watch import FeedWatch
from qx_actors.actors._tick_spool import TickSpool
from qx_actors.actors.messages import (
    ActorRef,
    Call,
    CancelRequest,
    CandleRangeStored,
    ChildExited,
    ChildFailed,
    ChildrenStarted,
    DbWriterReady,
    DegradedChanged,
    EndRun,
    EngineBegin,
    EngineStop,
    EngineStopped,
    Envelope,
    FeedQuiet,
    Publish,
    PublishUpdates,
    Reply,
    Report,
    Request,
    RunComplete,
    SetDegraded,
    SettlementRangeStored,
    Sleep,
    StartStream,
    StatusEvent,
    StoreTicks,
    StreamDown,
    StreamUp,
    Tell,
    TicksFlowing,
    UnwrittenTicks,
    UseDbWriter,
)
from qx_actors.config import QxConfig
from qx_actors.domain.lookback import SyncMode
from qx_actors.domain.timeutil import format_utc, utc_now
from qx_actors.domain.values import PriceTick
from qx_actors.errors import ChildDied, ShutdownTimeout, StorageError, is_recoverable
from qx_actors.logs import CANDLES_STORED, SETTLEMENTS_STORED, get_logger
from qx_actors.observability._run_health import RunHealth
from qx_actors.status import Trigger
from qx_actors.updates import UpdateHub

#: What a mode program yields and is sent back (typed in :mod:`qx_actors.actors._program`).
Program = _program.Program


@dataclass
class TicksWaiting:
    """Received ticks that no DB writer holds now (``/health``: ticks waiting), as the WS feed
    (its queue while the writer is replaced, and its spool file, ``sync.tick_spool``) and the
    Engine (ticks carried over to the next writer) last wrote them; read from any thread."""

    in_feed: int = 0
    carried: int = 0
    #: in the spool file, not yet known to be stored (a spool left by a crash included)
    spooled: int = 0

    @property
    def total(self) -> int:
        """Every received tick waiting for a DB writer."""
        return self.in_feed + self.carried + self.spooled


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
    #: How many received ticks wait for a DB writer (the WS feed and the Engine write it).
    ticks_waiting: TicksWaiting = field(default_factory=TicksWaiting)
    #: Where a replay paces itself (the engine's ``clock=``; ``clock`` is then the replayed
    #: instant, see :class:`~qx_actors.modes.ReplayClock`).
    pace_clock: Callable[[], datetime] = utc_now
    #: When the run started (its clock): a live run publishes ``CandleClosed`` for the minutes
    #: from an hour before it on (older ones are history it fetched, not minutes it followed).
    started_at: datetime | None = None


class ModeProgram(Protocol):
    """Builds the generator that a run executes (once per start or restart)."""

    def __call__(self, ctx: RunContext) -> Program: ...


#: Starts a child actor: gets the run context, the Engine's ref and the children started
#: before it (spawners run in order), returns the child's ref.
ChildSpawner = Callable[[RunContext, ActorRef, Mapping[str, ActorRef]], ActorRef]


class Phase(enum.Enum):
    """Where the Engine is in its run."""

    #: The program runs with its children.
    RUNNING = "running"
    #: A recoverable error: the children are being stopped, one after another.
    RECOVERING = "recovering"
    #: Every child of the failed attempt exited; the restart timer runs.
    WAITING_RESTART = "waiting_restart"
    #: The run ends: the children are being stopped.
    SHUTTING_DOWN = "shutting_down"
    #: Then one last DB writer stores the ticks handed back while recovering, and stops.
    STORING_CARRIED_TICKS = "storing_carried_ticks"
    #: ``on_stop`` was reached.
    ENDED = "ended"


#: The phases of the end of the run.
_ENDING = frozenset({Phase.SHUTTING_DOWN, Phase.STORING_CARRIED_TICKS, Phase.ENDED})


class _ChildStops:
    """Children asked to stop one after another: each once the one before it exited (so the
    DB writer still stores what the feed queued), all at once past the deadline.

    A child has exited when its :class:`ChildExited` arrives, or when its stop completes (its
    ``on_stop`` returned: a child without a supervisor says nothing); a daemon thread waits for
    the latter and tells the Engine a ``ChildExited`` on the child's behalf."""

    def __init__(
        self,
        children: list[tuple[str, ActorRef]],
        engine: ActorRef,
        deadline: asyncio.TimerHandle,
    ) -> None:
        self.pending = children
        self.deadline = deadline
        self._engine = engine
        self._asked: set[str] = set()
        self._overdue = False
        #: the threads waiting for a child's stop (joined before the run is reported ended, so
        #: that a run leaves no thread behind)
        self.waiters: list[threading.Thread] = []

    @property
    def done(self) -> bool:
        return not self.pending

    def ask_next(self) -> None:
        for name, ref in self.pending:
            if ref.actor_urn not in self._asked:
                self._asked.add(ref.actor_urn)
                self._ask(name, ref)
            if not self._overdue:
                return

    def _ask(self, name: str, ref: ActorRef) -> None:
        stopped = ref.stop(block=False)
        engine = self._engine

        def wait() -> None:
            with contextlib.suppress(Exception):
                stopped.get()
            tell(engine, ChildExited(name, ref))

        waiter = threading.Thread(target=wait, name=f"engine-awaits-{name}", daemon=True)
        waiter.start()
        self.waiters.append(waiter)

    def join_waiters(self, deadline: float) -> None:
        """Wait (until ``deadline``, monotonic) for the waiters to end; each ends right after
        its child's stop completed and it told the Engine."""
        for waiter in self.waiters:
            waiter.join(max(deadline - time.monotonic(), 0.0))

    def exited(self, ref: ActorRef) -> bool:
        """``ref`` has exited: whether it was one of these."""
        before = len(self.pending)
        self.pending = [(n, r) for n, r in self.pending if r is not ref]
        if len(self.pending) == before:
            return False
        if self.done:
            self.deadline.cancel()
        else:
            self.ask_next()
        return True

    def overdue(self) -> list[str]:
        """The deadline passed: ask the rest to stop now; the names of those still running."""
        self._overdue = True
        self.ask_next()
        return [name for name, _ in self.pending]


@dataclass
class _FeedRoles:
    """What the Engine knows of the tick feed across attempts (the feed keeps the ticks)."""

    #: the current feed was told to follow its stream (it receives ticks)
    following: bool = False
    #: the program of this attempt told the feed to follow its stream (Synced may come)
    streaming: bool = False
    #: the feed was kept through a restart of the DB writer (and waits for the next one)
    kept: bool = False


class _ProgressGate:
    """No ``Running.InProgress`` after a failure until progress is made.

    Progress: a fetch stored data, ticks were committed, Synced or Backfilled. Until then a
    restarted program's ``Report(PROGRESS)`` is held (its ``degraded``), so that the status
    stays ``Running.Restarting`` through a restart loop.
    """

    def __init__(self) -> None:
        self._made = True
        self._held: tuple[bool | None] | None = None

    def failed(self) -> None:
        """A failure: progress is to be made again."""
        self._made = False
        self._held = None

    def hold(self, degraded: bool | None) -> bool:
        """Whether a progress report (with ``degraded``) is held rather than reported."""
        if self._made:
            return False
        self._held = (degraded,)
        return True

    def made(self) -> tuple[bool | None] | None:
        """Progress was made: the held report (its ``degraded``), if one was held."""
        self._made = True
        held, self._held = self._held, None
        return held


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
        tick_feed: str | None = None,
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
        # The child that receives ticks (the WS feed): it outlives a database error.
        self._tick_feed = tick_feed
        self._ids = itertools.count(1)
        self._feed = FeedWatch(self._set_degraded, self._on_ticks_flowing)
        self._log = get_logger(run_id=context.run_id, mode=context.mode.name, actor="engine")
        # What changes:
        self._phase = Phase.RUNNING
        self._attempt = 0
        self._carried_ticks: list[PriceTick] = []
        self._children: dict[str, ActorRef] = {}
        self._feed_roles = _FeedRoles()
        self._progress = _ProgressGate()
        # The children being stopped (recovery or shutdown); no new generation starts while
        # one still runs (a second DB writer beside the old one would find its lock taken).
        self._stops: _ChildStops | None = None
        self._program: Program | None = None
        # The program waits for the reply to (request id, child) or for a timer to wake it.
        self._pending: tuple[int, str] | None = None
        self._sleep: tuple[asyncio.TimerHandle, bool] | None = None
        # Recovering: the restart timer (None once due); shutting down: nothing.
        self._restart: asyncio.TimerHandle | None = None
        self._final_error: BaseException | None = None

    @property
    def phase(self) -> Phase:
        return self._phase

    # -- lifecycle ---------------------------------------------------------------------------

    def on_stop(self) -> None:
        # The normal end (EngineStop, a fatal error) stopped the children by events before
        # stopping the Engine; a failure of the Engine or a forced stop did not: they go here.
        self._phase = Phase.ENDED
        self._close_program()
        self._cancel_restart()
        deadline = time.monotonic() + self._ctx.config.sync.shutdown_timeout_s
        stuck = self._stop_children_now(deadline)
        if self._carried_ticks and not stuck:
            stuck += self._flush_carried_ticks_now(deadline)
        if stuck and self._final_error is None:
            self._final_error = self._shutdown_timeout(stuck)
        if self._stops is not None:
            self._stops.join_waiters(deadline)
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
        running = self._phase is Phase.RUNNING
        match message:
            case Reply(request_id=request_id, value=value, error=error):
                if running and self._pending is not None and request_id == self._pending[0]:
                    self._pending = None
                    if _stored_something(value):
                        self._log_stored(value)
                        self._on_progress()
                    self._advance(value, error)
            case StreamUp() | StreamDown() | FeedQuiet() | TicksFlowing():
                # Only the current feed's word counts: a feed being stopped is gone, a fresh one
                # starts over; a feed kept through a writer restart goes on.
                current = self._feed_is_current()
                if current and running and isinstance(message, TicksFlowing):
                    self._on_progress()  # ticks committed
                if current and self._feed.on_event(message) and running:
                    self._wake_on_feed_change()
            case DbWriterReady(ref=ref):
                self._on_writer_ready(ref)
            case EngineBegin():
                self._spawn_children()
                self._start_program()
            case EngineStop():
                self._end(None)
            case ChildFailed(source=source, error=error):
                if self._phase not in _ENDING:
                    # the cause is logged once, by recoverable_error (or fatal_error)
                    self._log.debug("child_failed", child=source, error=_describe(error))
                    self._handle_error(error, source)
            case ChildExited(source=source, ref=ref):
                self._on_child_exited(source, ref)
            case UnwrittenTicks(ticks=ticks):
                self._carried_ticks.extend(ticks)
                self._ctx.ticks_waiting.carried = len(self._carried_ticks)
                self._log.warning("ticks_carried_over", count=len(ticks))
            case _:
                self._log.warning("unknown_message", message=repr(message))

    def _spawn_children(self) -> None:
        """Start a fresh generation of children (in order; a kept feed stays) and hand over
        carried ticks."""
        for name, spawn in self._spawners.items():
            if name not in self._children:
                self._children[name] = spawn(self._ctx, self.actor_ref, dict(self._children))
                if name == self._tick_feed:
                    self._feed_roles.following = False
        self._tell_controller(ChildrenStarted(tuple(self._children.values())))
        sink = self._children.get(self._tick_sink) if self._tick_sink else None
        if sink is not None and self._carried_ticks:
            ticks, self._carried_ticks = tuple(self._carried_ticks), []
            self._ctx.ticks_waiting.carried = 0
            sink.tell(StoreTicks(ticks, None))
            self._log.info("ticks_handed_over", count=len(ticks))

    # -- the stream, as the WS feed tells it ---------------------------------------------------

    def _feed_is_current(self) -> bool:
        if self._phase in _ENDING:
            return False
        if self._tick_feed is None:
            return self._phase is Phase.RUNNING and self._program is not None
        return self._tick_feed in self._children

    def _on_ticks_flowing(self) -> None:
        # Synced once the program went live: a kept feed's ticks flow during the catch-up too.
        if self._phase is Phase.RUNNING and self._feed_roles.streaming:
            self._report(Trigger.SYNCED)

    def _on_writer_ready(self, ref: ActorRef) -> None:
        """A DB writer opened the database: a kept feed sends it what it holds."""
        sink = self._children.get(self._tick_sink) if self._tick_sink else None
        feed = self._children.get(self._tick_feed) if self._tick_feed else None
        if ref is not sink or self._phase in _ENDING:
            return
        if feed is not None and self._feed_roles.kept:
            self._feed_roles.kept = False
            feed.tell(UseDbWriter(ref))
            self._feed.hold_ticks(None)

    def _wake_on_feed_change(self) -> None:
        if self._sleep is not None and self._sleep[1]:
            self._sleep[0].cancel()
            self._sleep = None
            self._advance(self._feed.state, None)

    def _set_degraded(self, degraded: bool, reason: str) -> None:
        self._tell_controller(DegradedChanged(degraded, reason))

    # -- the program -------------------------------------------------------------------------

    def _start_program(self) -> None:
        self._phase = Phase.RUNNING
        self._feed_roles.streaming = False
        if self._feed_roles.kept:
            self._feed.new_attempt()
        else:
            self._feed.reset()
        self._program = self._program_factory(replace(self._ctx, attempt=self._attempt))
        self._advance(None, None)

    def _close_program(self) -> None:
        program, self._program = self._program, None
        pending, self._pending = self._pending, None
        if pending is not None and pending[1] in self._children:
            # e.g. a range fetch of the old attempt must not go on paging and writing
            tell(self._children[pending[1]], CancelRequest(pending[0]))
        if self._sleep is not None:
            self._sleep[0].cancel()
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
                        self._sleep = (self.call_later(seconds, self._wake_program), interruptible)
                        return
                    case Tell(target=target, message=message):
                        if isinstance(message, StartStream):
                            self._feed_roles.streaming = self._feed_roles.following = True
                        self._children[target].tell(message)
                    case Call(target=target, payload=payload):
                        self._pending = (self._send_request(target, payload), target)
                        return
                    case EndRun():
                        self._log.info("run_complete")
                        self._tell_controller(RunComplete())
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
        if self._sleep is None or self._phase is not Phase.RUNNING:
            return
        self._sleep = None
        self._advance(self._feed.state, None)

    def _report(self, trigger: Trigger, *, degraded: bool | None = None) -> None:
        if trigger is Trigger.SYNCED and not self._feed.take_synced():
            return  # once per attempt: by the first committed tick or the program
        if trigger is Trigger.PROGRESS and self._progress.hold(degraded):
            return  # Running.Restarting until progress is made
        if trigger in (Trigger.SYNCED, Trigger.BACKFILLED):
            self._on_progress()
        self._tell_controller(StatusEvent(trigger, None, degraded))

    def _log_stored(self, value: CandleRangeStored | SettlementRangeStored) -> None:
        """What a range fetch stored, at info: the events of a healthy run."""
        if isinstance(value, CandleRangeStored):
            download = value.download
            self._log.info(
                CANDLES_STORED,
                kind=download.kind.value,
                start=format_utc(download.start),
                end=format_utc(download.end),
                received=value.received_count,
            )
        else:
            self._log.info(SETTLEMENTS_STORED, received=value.received_count)

    def _on_progress(self) -> None:
        """The program made progress: a held ``Running.InProgress`` is reported now."""
        held = self._progress.made()
        if held is not None and self._phase is Phase.RUNNING:
            self._tell_controller(StatusEvent(Trigger.PROGRESS, None, held[0]))

    def _send_request(self, target: str, payload: Request[Any]) -> int:
        """Send a request to a child; its :class:`Reply` will carry the returned id."""
        request_id = next(self._ids)
        self._children[target].tell(Envelope(request_id, self.actor_ref, payload))
        return request_id

    # -- recovery and stop -------------------------------------------------------------------

    def _handle_error(self, error: BaseException, source: str | None = None) -> None:
        """Recover from a recoverable error, fail on anything else."""
        if self._phase in _ENDING:
            return
        if not is_recoverable(error):
            self._fail(error)
        elif self._phase is not Phase.RUNNING:
            kept = self._tick_feed if self._feed_roles.kept else None
            feed_fault = not isinstance(error, StorageError)  # else it speaks of the writer
            if feed_fault and source is not None and source == kept and kept in self._children:
                # The feed kept through the writer's restart failed itself: it restarts too.
                self._log.warning("kept_feed_failed", error=_describe(error))
                self._feed_roles.kept = False
                self._stop_children()
                return
            # Already recovering (e.g. the old children's last words): one restart is enough.
            self._log.info("recoverable_error_while_recovering", error=_describe(error))
        else:
            self._recover(error)

    def _recover(self, error: BaseException) -> None:
        self._log.warning("recoverable_error", error=_describe(error))
        self._phase = Phase.RECOVERING
        self._progress.failed()
        self._close_program()
        self._tell_controller(StatusEvent(Trigger.RECOVERABLE_ERROR, error))
        # Fresh state for the next attempt: the children go now (a DB writer releases its
        # connection and writer lock, the feed its socket), new ones start at the restart.
        self._restart = self.call_later(
            self._ctx.config.sync.restart_interval_s, self._on_restart_due
        )
        feed = self._children.get(self._tick_feed) if self._tick_feed else None
        if feed is not None and isinstance(error, StorageError):
            # The database failed, not the stream: the feed holds its ticks meanwhile.
            self._feed_roles.kept = True
            feed.tell(UseDbWriter(None))
            if self._feed_roles.following:
                self._feed.hold_ticks(f"ticks held in memory: {_describe(error)}")
            self._stop_children(keep=self._tick_feed)
        else:
            self._feed_roles.kept = False
            self._stop_children()

    def _on_child_exited(self, source: str, ref: ActorRef) -> None:
        if self._stops is not None and self._stops.exited(ref):
            if self._stops.done:
                self._stops = None
                self._on_children_exited()
            return
        if self._children.get(source) is ref:
            # Not asked to stop: a surprise (it is gone, it will not say so again).
            del self._children[source]
            if self._phase is Phase.RUNNING:
                self._log.warning("child_exited", child=source)
                self._handle_error(ChildDied(source, "stopped unexpectedly"))

    def _stop_children(self, keep: str | None = None) -> None:
        """Ask the children (in stop order) to stop, each once the one before it exited;
        ``keep``: the one that goes on (the WS feed through a database error)."""
        ordered = [n for n in self._stop_order if n in self._children and n != keep]
        ordered += [n for n in self._children if n not in ordered and n != keep]
        children = [(name, self._children.pop(name)) for name in ordered]
        if self._stops is not None:  # e.g. a flush writer started while the others still stop
            self._stops.pending += children
            self._stops.ask_next()
            return
        if not children:
            self._on_children_exited()
            return
        timeout = self._ctx.config.sync.shutdown_timeout_s
        deadline = self.call_later(timeout, self._on_stop_deadline)
        self._stops = _ChildStops(children, self.actor_ref, deadline)
        self._stops.ask_next()

    def _on_stop_deadline(self) -> None:
        stops = self._stops
        if stops is None:
            return
        stuck = stops.overdue()
        for name in stuck:
            self._log.warning("child_stop_timeout", child=name)
        if stops.done:
            self._stops = None
            self._on_children_exited()
        elif self._phase in _ENDING:
            # A graceful stop that left a child running did not complete: the run fails.
            if self._final_error is None:
                self._final_error = self._shutdown_timeout(stuck)
            self._set_aside_carried_ticks()
            self._stops = None
            self._stop_self()
        # Recovering: the restart waits for the lingering ones to exit.

    def _on_children_exited(self) -> None:
        """Every child asked to stop has exited."""
        if self._phase is Phase.SHUTTING_DOWN and self._carried_ticks:
            self._phase = Phase.STORING_CARRIED_TICKS
            if self._spawn_flush_writer() is not None:
                self._stop_children()
                return
        if self._phase in _ENDING:
            # handed back by the last writer too: the database fails
            self._set_aside_carried_ticks()
            self._stop_self()
        elif self._phase is Phase.RECOVERING:
            if self._restart is None:  # the restart was due already
                self._restart_now()
            else:
                self._phase = Phase.WAITING_RESTART

    def _on_restart_due(self) -> None:
        self._restart = None
        if self._phase is Phase.WAITING_RESTART:
            self._restart_now()
        elif self._phase is Phase.RECOVERING:
            pending = len(self._stops.pending) if self._stops is not None else 0
            self._log.warning("restart_postponed", lingering=pending)

    def _restart_now(self) -> None:
        self._tell_controller(StatusEvent(Trigger.RESTART))
        self._attempt += 1
        self._spawn_children()
        self._start_program()

    def _cancel_restart(self) -> None:
        if self._restart is not None:
            self._restart.cancel()
            self._restart = None

    def _spawn_flush_writer(self) -> ActorRef | None:
        name = self._tick_sink
        spawn = self._spawners.get(name) if name else None
        if name is None or spawn is None:
            self._set_aside_carried_ticks()
            return None
        ticks, self._carried_ticks = tuple(self._carried_ticks), []
        self._ctx.ticks_waiting.carried = 0
        self._children[name] = sink = spawn(self._ctx, self.actor_ref, {})
        sink.tell(StoreTicks(ticks, None))
        # If the database still fails, the writer logs what it could not store as it stops.
        return sink

    def _set_aside_carried_ticks(self) -> None:
        """The run ends with ticks no writer could store: with a spool (``sync.tick_spool``)
        they are appended to it and stored at the next start, else they are lost, and said so.

        The WS feed has exited by now (or is stuck past the shutdown deadline: each append is one
        write of whole lines to a file opened for appending, so it can't tear the feed's). With
        a spool the feed appended every batch a writer failed with, so these are usually in the
        file already: stored twice, which the database ignores, and published once."""
        ticks, self._carried_ticks = tuple(self._carried_ticks), []
        self._ctx.ticks_waiting.carried = 0
        if not ticks:
            return
        path = self._ctx.config.sync.tick_spool
        if path is not None:
            try:
                spool = TickSpool.open(path, log=self._log)
                try:
                    spool.append(ticks)
                finally:
                    spool.close()
            except OSError as exc:
                self._log.error(
                    "tick_spool_write_failed", path=path, ticks=len(ticks), error=str(exc)
                )
            else:
                self._log.warning("ticks_spooled_at_stop", path=path, count=len(ticks))
                return
        self._log.error("ticks_not_stored", count=len(ticks))

    def _stop_self(self) -> None:
        with contextlib.suppress(pykka.ActorDeadError):
            self.actor_ref.stop(block=False)

    def _shutdown_timeout(self, stuck: list[str]) -> ShutdownTimeout:
        timeout = self._ctx.config.sync.shutdown_timeout_s
        return ShutdownTimeout(f"{', '.join(stuck)} did not stop within {timeout:g} s")

    # -- the forced path (on_stop after a failure or a forced stop): blocking, as pykka is ---

    def _stop_children_now(self, deadline: float) -> list[str]:
        """Stop every child left (in stop order) by ``deadline``; the names of those that did
        not. Only ``on_stop`` blocks so: its thread is ending anyway."""
        stops, self._stops = self._stops, None
        if stops is not None:
            stops.deadline.cancel()
        ordered = [n for n in self._stop_order if n in self._children]
        ordered += [n for n in self._children if n not in ordered]
        left = (stops.pending if stops is not None else []) + [
            (name, self._children.pop(name)) for name in ordered
        ]
        timed_out: list[str] = []
        for name, ref in left:
            try:
                ref.stop(block=True, timeout=max(deadline - time.monotonic(), 0.01))
            except pykka.Timeout:
                self._log.warning("child_stop_timeout", child=name)
                timed_out.append(name)
            except pykka.ActorDeadError:
                pass
        return timed_out

    def _flush_carried_ticks_now(self, deadline: float) -> list[str]:
        if self._spawn_flush_writer() is None:
            return []
        return self._stop_children_now(deadline)

    def _fail(self, error: BaseException) -> None:
        self._log.error("fatal_error", error=_describe(error))
        self._end(error)

    def _end(self, error: BaseException | None) -> None:
        """Stop the program now, then the children by their events, then the Engine."""
        if self._phase in _ENDING:
            return
        self._phase = Phase.SHUTTING_DOWN
        self._feed_roles.kept = False
        self._final_error = error
        self._close_program()
        self._cancel_restart()
        self._stop_children()


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _stored_something(value: Any) -> TypeGuard[CandleRangeStored | SettlementRangeStored]:
    """Whether a child's answer says data was stored (a range fetch that received some)."""
    return isinstance(value, (CandleRangeStored, SettlementRangeStored)) and (
        value.received_count > 0
    )
