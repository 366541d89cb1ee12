"""The actor system's lifecycle with test-only mode programs (no exchange, no database)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pykka
import pytest
from structlog.testing import capture_logs

from qx_actors.actors import QxActor, RunThreads
from qx_actors.actors._controller import ControllerActor
from qx_actors.actors.messages import (
    BeginRun,
    Call,
    CancelRequest,
    ChildFailed,
    EngineStopped,
    Envelope,
    Report,
    RequestShutdown,
    StatusEvent,
)
from qx_actors.config import QxConfig, config_from_mapping
from qx_actors.errors import (
    ReachBeforeHistoryError,
    RecoverableError,
    ShutdownTimeout,
    SyncAlreadyShutdown,
    SyncAlreadyStarted,
    SyncAlreadyTerminated,
    SyncNotStarted,
    SyncShutdownFailed,
)
from qx_actors.status import State, Trigger
from qx_actors.sync_engine import SyncEngine
from qx_actors.testing import RunProbe
from qx_actors.updates import StatusUpdate, SyncUpdate, UpdateHub
from tests.helpers import CollectingActor, FlakyProgram, names, stuck_child_spawner, until_state


def config(**sync: Any) -> QxConfig:
    """A config with short intervals for tests."""
    values = {"restart_interval_s": 0.05, "shutdown_timeout_s": 2.0, **sync}
    return config_from_mapping({"mode": "backfill", "sync": values})


def engine_with(program: Any, **sync: Any) -> SyncEngine:
    """An engine running ``program`` with no children."""
    return SyncEngine(config(**sync), program=program, children={})


def test_start_backfilled_shutdown_sequence() -> None:
    """A run goes Starting → InProgress → Backfilled, then ShutdownInitiated → Shutdown."""
    engine = engine_with(FlakyProgram())
    receiver = engine.update_receiver()
    assert State.NOT_INITIATED == engine.status_snapshot().state
    controller = engine.start()
    seen = until_state(receiver, State.BACKFILLED)
    controller.shutdown()
    seen += until_state(receiver, State.SHUTDOWN)
    assert [
        "Running.Starting",
        "Running.InProgress",
        "Running.Backfilled",
        "ShutdownInitiated",
        "Shutdown",
    ] == names(seen)
    assert State.SHUTDOWN == controller.until_stopped(timeout=5).state


def test_transition_log_events_field_by_field() -> None:
    """Each applied transition logs status_transition with every documented field."""
    with capture_logs() as logs:
        engine = engine_with(FlakyProgram(failures=1))
        receiver = engine.update_receiver()
        controller = engine.start()
        until_state(receiver, State.BACKFILLED)
        controller.shutdown()
    transitions = [e for e in logs if e["event"] == "status_transition"]
    expected = [
        ("start", "NotInitiated", "Running.Starting"),
        ("progress", "Running.Starting", "Running.InProgress"),
        ("recoverable_error", "Running.InProgress", "Running.Recovering"),
        ("restart", "Running.Recovering", "Running.Restarting"),
        ("progress", "Running.Restarting", "Running.InProgress"),
        ("backfilled", "Running.InProgress", "Running.Backfilled"),
        ("shutdown", "Running.Backfilled", "ShutdownInitiated"),
        ("shutdown_complete", "ShutdownInitiated", "Shutdown"),
    ]
    assert expected == [(e["trigger"], e["src"], e["dst"]) for e in transitions]
    for event in transitions:
        assert engine.run_id == event["run_id"]
        assert "backfill" == event["mode"]
        assert datetime.fromisoformat(event["timestamp"]).utcoffset() is not None
        assert "error" in event
    assert "RecoverableError: injected failure 1" == transitions[2]["error"]
    assert [None] * 7 == [e["error"] for i, e in enumerate(transitions) if i != 2]


def test_recovery_loop_waits_restart_interval_and_reruns_the_program() -> None:
    """A recoverable error → Recovering (error kept), wait restart_interval_s, Restarting, rerun;
    a rerun that fails before any progress never shows Running.InProgress."""
    program = FlakyProgram(failures=2)
    engine = engine_with(program, restart_interval_s=0.3)
    receiver = engine.update_receiver()
    controller = engine.start()
    seen = until_state(receiver, State.BACKFILLED)
    controller.shutdown()
    assert [
        "Running.Starting",
        "Running.InProgress",
        "Running.Recovering",
        "Running.Restarting",
        "Running.Recovering",
        "Running.Restarting",
        "Running.InProgress",
        "Running.Backfilled",
    ] == names(seen)
    assert [0, 1, 2] == program.attempts
    recovering = [s for s in seen if s.state is State.RECOVERING]
    restarting = [s for s in seen if s.state is State.RESTARTING]
    assert ["injected failure 1", "injected failure 2"] == [str(s.error) for s in recovering]
    pairs = zip(recovering, restarting, strict=True)
    waits = [(b.since - a.since).total_seconds() for a, b in pairs]
    # Both stamps are taken by the Controller when it applies the event, so thread scheduling
    # can shift them by a few ms either way around the Engine's 0.3 s timer.
    assert all(wait >= 0.27 for wait in waits), waits


def test_fatal_error_fails_the_run_and_shutdown_is_refused() -> None:
    """A fatal error ends in Failed with the error; shutdown then raises SyncAlreadyTerminated."""
    error = ReachBeforeHistoryError("no candle within 6 h of the reach 2020-01-01T00:00:00Z")
    engine = engine_with(FlakyProgram(fatal=error))
    controller = engine.start()
    final = controller.until_stopped(timeout=5)
    assert (State.FAILED, error) == (final.state, final.error)
    with pytest.raises(SyncAlreadyTerminated) as info:
        controller.shutdown()
    assert final == info.value.status


def test_second_shutdown_is_rejected() -> None:
    """A second shutdown raises SyncAlreadyShutdown."""
    engine = engine_with(FlakyProgram())
    controller = engine.start()
    controller.shutdown()
    with pytest.raises(SyncAlreadyShutdown):
        controller.shutdown()
    with pytest.raises(SyncAlreadyShutdown):
        engine.shutdown()


def test_shutdown_before_start_and_double_start() -> None:
    """Shutdown before start raises SyncNotStarted; a second start raises SyncAlreadyStarted."""
    engine = engine_with(FlakyProgram())
    with pytest.raises(SyncNotStarted):
        engine.shutdown()
    controller = engine.start()
    with pytest.raises(SyncAlreadyStarted):
        engine.start()
    controller.shutdown()


def test_shutdown_timeout_fails_the_run() -> None:
    """A child that does not stop in shutdown_timeout_s → Failed(ShutdownTimeout), raises."""
    release = threading.Event()
    engine = SyncEngine(
        config(shutdown_timeout_s=0.3),
        program=FlakyProgram(),
        children={"stuck": stuck_child_spawner(release)},
    )
    receiver = engine.update_receiver()
    controller = engine.start()
    until_state(receiver, State.BACKFILLED)
    try:
        with pytest.raises(SyncShutdownFailed) as info:
            controller.shutdown()
        assert isinstance(info.value.cause, ShutdownTimeout)
        final = controller.status_snapshot()
        assert State.FAILED == final.state
        assert isinstance(final.error, ShutdownTimeout)
        with pytest.raises(SyncAlreadyTerminated):
            controller.shutdown()
    finally:
        release.set()


def test_reader_and_receiver_before_start_see_every_update() -> None:
    """A receiver taken from engine.reader() before start sees Running.Starting."""
    engine = engine_with(FlakyProgram())
    reader = engine.reader()
    receiver = reader.update_receiver()
    controller = engine.start()
    first = receiver.get(5)
    assert isinstance(first, StatusUpdate) and State.STARTING == first.status.state
    assert controller.reader().mode == reader.mode == engine.mode
    controller.shutdown()


def test_actor_subscriber_receives_updates() -> None:
    """An application actor subscribed with controller.subscribe() is told each update."""

    def is_shutdown(update: SyncUpdate) -> bool:
        return isinstance(update, StatusUpdate) and update.status.state is State.SHUTDOWN

    app = CollectingActor.start(is_shutdown)
    engine = engine_with(FlakyProgram())
    receiver = engine.update_receiver()
    controller = engine.start()
    controller.subscribe(app)
    until_state(receiver, State.BACKFILLED)
    controller.shutdown()
    assert app.proxy().finished.get().wait(5)
    told = [u.status.name for u in app.ask("updates") if isinstance(u, StatusUpdate)]
    assert ["ShutdownInitiated", "Shutdown"] == told[-2:]
    app.stop()


def test_several_engines_run_independently() -> None:
    """Two engines in one process have their own run_id and status."""
    first, second = engine_with(FlakyProgram()), engine_with(FlakyProgram(fatal=ValueError("x")))
    assert first.run_id != second.run_id
    receiver = first.update_receiver()
    c1, c2 = first.start(), second.start()
    assert State.FAILED == c2.until_stopped(timeout=5).state
    until_state(receiver, State.BACKFILLED)
    assert State.BACKFILLED == c1.status_snapshot().state
    c1.shutdown()
    assert State.SHUTDOWN == c1.status_snapshot().state


def test_no_thread_left_after_until_stopped() -> None:
    """When until_stopped returns, every thread of the run has ended."""
    engine = engine_with(FlakyProgram(fatal=ValueError("boom")))
    controller = engine.start()
    controller.until_stopped(timeout=5)
    assert [] == engine._threads.alive()


class _SilentEngine(pykka.ThreadingActor):
    """Stands in for the Engine: never answers, so the test drives the Controller."""

    use_daemon_thread = True


def test_engine_status_events_after_shutdown_are_ignored() -> None:
    """Status events that arrive after shutdown was initiated are logged, not applied."""
    hub = UpdateHub(capacity=100)
    engines: list[pykka.ActorRef[Any]] = []

    def spawn(_: pykka.ActorRef[Any]) -> pykka.ActorRef[Any]:
        engines.append(_SilentEngine.start())
        return engines[-1]

    with capture_logs() as logs:
        controller = ControllerActor.start(
            run_id="r1", mode="backfill", hub=hub, spawn_engine=spawn, threads=RunThreads()
        )
        controller.ask(BeginRun())
        controller.ask(RequestShutdown())
        controller.tell(StatusEvent(Trigger.PROGRESS))
        with pytest.raises(SyncAlreadyShutdown):
            controller.ask(RequestShutdown())
        assert State.SHUTDOWN_INITIATED == hub.status().state
        controller.tell(EngineStopped(None))
        final = hub.wait_stopped(5)
    assert final is not None and State.SHUTDOWN == final.state
    ignored = [e for e in logs if e["event"] == "status_event_ignored"]
    assert [("progress", "ShutdownInitiated")] == [(e["trigger"], e["state"]) for e in ignored]
    rejected = [e for e in logs if e["event"] == "status_transition_rejected"]
    assert ["shutdown"] == [e["trigger"] for e in rejected]
    engines[0].stop()


class _FailingWorker(QxActor):
    """A child that answers a request by failing recoverably, and records cancellations."""

    def __init__(
        self,
        *,
        threads: Any,
        engine: pykka.ActorRef[Any],
        cancelled: list[int],
        done: threading.Event,
    ) -> None:
        super().__init__(threads=threads)
        self.engine = engine
        self.cancelled = cancelled
        self.done = done

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Envelope):
            self.engine.tell(ChildFailed("worker", RecoverableError("worker lost its connection")))
        elif isinstance(message, CancelRequest):
            self.cancelled.append(message.request_id)
            self.done.set()
        return None


def test_recovery_cancels_the_request_the_program_waited_for() -> None:
    """When the program restarts while waiting for a child, that child is told to drop it."""
    cancelled: list[int] = []
    done = threading.Event()
    workers: list[pykka.ActorRef[Any]] = []

    def spawn(ctx: Any, engine: pykka.ActorRef[Any], siblings: Any) -> pykka.ActorRef[Any]:
        workers.append(
            _FailingWorker.start(threads=ctx.threads, engine=engine, cancelled=cancelled, done=done)
        )
        return workers[-1]

    def program(ctx: Any) -> Iterator[Any]:
        yield Report(Trigger.PROGRESS)
        yield Call("worker", "fetch something")

    engine = SyncEngine(config(restart_interval_s=30), program=program, children={"worker": spawn})
    receiver = engine.update_receiver()
    controller = engine.start()
    recovering = until_state(receiver, State.RECOVERING)[-1]
    assert "worker lost its connection" == str(recovering.error)
    assert done.wait(5)
    assert [1] == cancelled
    # the children of the failed attempt are gone; fresh ones come with the restart
    assert workers[0].actor_stopped.wait(5)
    controller.shutdown()


def test_restart_waits_for_a_child_still_stopping() -> None:
    """A child whose stop outlasts shutdown_timeout_s postpones the restart (restart_postponed)
    until it has really ended: two generations of children never run at once."""
    release = threading.Event()
    engine = SyncEngine(
        config(shutdown_timeout_s=0.2, restart_interval_s=0.05),
        program=FlakyProgram(failures=1),
        children={"stuck": stuck_child_spawner(release)},
    )
    with capture_logs() as logs, RunProbe.start(engine) as probe:
        probe.wait_for_state(State.RECOVERING)
        probe.wait_until(
            lambda: any(e["event"] == "restart_postponed" for e in logs),
            what="the restart postponed",
        )
        assert State.RECOVERING == probe.controller.status_snapshot().state
        release.set()
        probe.wait_for_state(State.BACKFILLED)
        assert "Running.Restarting" in probe.names()
