"""The Engine as a supervisor: a recoverable error restarts the children with fresh state, a
child that dies is a recoverable ``ChildDied``, and no received tick is lost on the way."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg2
import pykka
import pytest
from structlog.testing import capture_logs

from qx_actors.actors import QxActor
from qx_actors.actors._ws_feed import WsFeedActor
from qx_actors.actors.messages import Report, Sleep, Tell
from qx_actors.config import config_from_mapping
from qx_actors.errors import ChildDied, DatabaseUnavailable
from qx_actors.simulator import Simulator
from qx_actors.status import State, Trigger
from qx_actors.sync_engine import SyncEngine

pytest.register_assert_rewrite("tests.integration.live_fixtures")

from tests.helpers import FlakyProgram, until_state  # noqa: E402
from tests.integration.live_fixtures import (  # noqa: E402
    LiveRun,
    RunFactory,
    SimFactory,
    assert_follows_graph,
    events,
    feed_received,
    start_live,
    stored_ticks,
    tick_pairs,
    transitions,
)

pytest_plugins = ["tests.integration.live_fixtures"]


def _feeds() -> list[pykka.ActorRef[Any]]:
    return [ref for ref in pykka.ActorRegistry.get_by_class(WsFeedActor) if ref.is_alive()]


def test_a_child_stopped_by_someone_else_is_restarted_with_the_others(
    sim: SimFactory,
    run_engine: RunFactory,
    live_database_url: str,
) -> None:
    """The WS feed stopped from outside: ChildDied names it, a fresh generation syncs again."""
    with capture_logs() as logs:
        simulator, run = start_live(sim, run_engine, live_database_url, {"tick_rate_per_s": 50})
        run.until_state(State.SYNCED)
        [feed] = _feeds()
        feed.stop()
        recovering = run.until_state(State.RECOVERING)
        assert isinstance(recovering.error, ChildDied)
        assert "ws" == recovering.error.child
        assert "Running.Recovering: ChildDied: ws died: stopped unexpectedly" == recovering.text
        run.until_state(State.SYNCED)
        [fresh] = _feeds()
        assert fresh is not feed
        run.until_ticks(len(run.ticks) + 5)
        assert State.SHUTDOWN == run.shutdown().state
    assert_follows_graph(logs)
    stored = stored_ticks(live_database_url)
    assert len(set(stored)) == len(stored)
    assert set(stored) <= set(tick_pairs(simulator.sent_ticks()))
    # every tick a feed received was stored (the stopped feed handed its queue over)
    assert feed_received(logs) == len(stored)


class _Exploding(QxActor):
    """A child that raises on any message (an uncaught exception kills a pykka actor)."""

    def on_receive(self, message: Any) -> Any:
        raise RuntimeError(f"cannot handle {message!r}")


def test_a_child_dying_of_an_uncaught_exception_is_recoverable() -> None:
    """ChildDied (recoverable) names the child and the exception; the restart spawns anew."""
    spawned: list[pykka.ActorRef[Any]] = []
    second = threading.Event()

    def spawn(ctx: Any, engine: pykka.ActorRef[Any], _: Any) -> pykka.ActorRef[Any]:
        ref = _Exploding.start(threads=ctx.threads, supervisor=engine, child_name="boom")
        spawned.append(ref)
        if len(spawned) == 2:
            second.set()
        return ref

    def program(ctx: Any) -> Iterator[Any]:
        yield Report(Trigger.PROGRESS)
        if ctx.attempt == 0:
            yield Tell("boom", "explode")
        yield Sleep(3600)

    config = config_from_mapping(
        {"database": "sqlite:///:memory:", "sync": {"restart_interval_s": 0.05}}
    )
    engine = SyncEngine(config, program=program, children={"boom": spawn})
    receiver = engine.update_receiver()
    controller = engine.start()
    try:
        status = receiver.get(10)
        while getattr(status, "status", None) is None or (
            status.status.state is not State.RECOVERING  # type: ignore[attr-defined]
        ):
            status = receiver.get(10)
        recovering = status.status  # type: ignore[attr-defined]
        assert isinstance(recovering.error, ChildDied)
        assert "boom died: RuntimeError: cannot handle 'explode'" == str(recovering.error)
        assert second.wait(10)
        assert not spawned[0].is_alive()
        assert spawned[1].is_alive()
    finally:
        controller.shutdown()
    assert State.SHUTDOWN == controller.status_snapshot().state


def _terminate_writer_sessions(url: str) -> int:
    """Kill the engine's PostgreSQL sessions from another connection (as a server restart does)."""
    conn = psycopg2.connect(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'qx_actors' AND pid <> pg_backend_pid() "
                "AND datname = current_database()"
            )
            return len(cursor.fetchall())
    finally:
        conn.close()


def _writer_session_terminated(
    sim: SimFactory, run_engine: RunFactory, url: str, restart_interval_s: float
) -> tuple[Simulator, LiveRun]:
    """A live run on ``url`` at 200 ticks/s, Synced with 20 ticks stored; then its writer's
    session is terminated."""
    simulator, run = start_live(
        sim, run_engine, url, {"tick_rate_per_s": 200}, restart_interval_s=restart_interval_s
    )
    run.until_state(State.SYNCED)
    run.until_ticks(20)
    assert _terminate_writer_sessions(url) >= 1
    return simulator, run


@pytest.mark.postgres
def test_a_failed_tick_write_restarts_the_writer_and_loses_no_tick(
    sim: SimFactory,
    run_engine: RunFactory,
    postgres_db_url: str,
) -> None:
    """The writer's session dies mid-run: DatabaseUnavailable, restart, ticks keep flowing and
    every tick a feed received is stored once (the failed batch goes to the next writer)."""
    with capture_logs() as logs:
        simulator, run = _writer_session_terminated(sim, run_engine, postgres_db_url, 0.2)
        recovering = run.until_state(State.RECOVERING)
        assert isinstance(recovering.error, DatabaseUnavailable), recovering
        run.until_state(State.SYNCED)
        run.until_ticks(len(run.ticks) + 20)
        assert State.SHUTDOWN == run.shutdown().state
    assert_follows_graph(logs)
    assert ("recoverable_error", "Running.Synced", "Running.Recovering") in transitions(logs)
    # the cause at warning once (recoverable_error): db_writer_error and child_failed at debug
    cause = str(recovering.error)
    warned = [
        e["event"]
        for e in logs
        if e["log_level"] in ("warning", "error") and cause in str(e.get("error", ""))
    ]
    assert ["recoverable_error"] == warned, warned
    stored = stored_ticks(postgres_db_url)
    assert len(set(stored)) == len(stored)
    assert set(stored) <= set(tick_pairs(simulator.sent_ticks()))
    assert feed_received(logs) == len(stored)
    assert set(tick_pairs(run.ticks)) <= set(stored)


@pytest.mark.postgres
def test_ticks_handed_back_while_recovering_are_stored_at_shutdown(
    sim: SimFactory,
    run_engine: RunFactory,
    postgres_db_url: str,
) -> None:
    """Shut down during Recovering (after a failed tick write): the carried ticks are stored."""
    with capture_logs() as logs:
        _, run = _writer_session_terminated(sim, run_engine, postgres_db_url, 60)
        run.until_state(State.RECOVERING)
        assert State.SHUTDOWN == run.shutdown().state
    stored = stored_ticks(postgres_db_url)
    assert feed_received(logs) == len(stored) == len(set(stored))
    # the path under test was taken: the failed batch came back and a last writer stored it
    assert events(logs, "ticks_carried_over")
    assert [] == events(logs, "ticks_not_stored")


class _SlowToStop(QxActor):
    """A supervised child whose stop blocks until ``release`` is set (it says ``stopping``)."""

    def __init__(self, *, stopping: threading.Event, release: threading.Event, **kw: Any) -> None:
        super().__init__(**kw)
        self.stopping = stopping
        self.release = release

    def on_stop(self) -> None:
        self.stopping.set()
        self.release.wait(30)
        super().on_stop()


def test_the_engine_keeps_serving_while_a_child_is_slow_to_stop() -> None:
    """Recovering, the Engine asks its children to stop and goes on serving its inbox: it
    answers while a child's stop blocks; the restart comes once that child has exited."""
    stopping, release, second = threading.Event(), threading.Event(), threading.Event()
    spawned: list[pykka.ActorRef[Any]] = []
    engines: list[pykka.ActorRef[Any]] = []

    def spawn(ctx: Any, engine: pykka.ActorRef[Any], _: Any) -> pykka.ActorRef[Any]:
        engines.append(engine)
        ref = _SlowToStop.start(
            threads=ctx.threads,
            supervisor=engine,
            child_name="slow",
            stopping=stopping if not spawned else threading.Event(),
            release=release,
        )
        spawned.append(ref)
        if len(spawned) == 2:
            second.set()
        return ref

    config = config_from_mapping(
        {
            "database": "sqlite:///:memory:",
            "sync": {"restart_interval_s": 0.01, "shutdown_timeout_s": 20},
        }
    )
    engine = SyncEngine(config, program=FlakyProgram(failures=1), children={"slow": spawn})
    receiver = engine.update_receiver()
    controller = engine.start()
    try:
        until_state(receiver, State.RECOVERING)
        assert stopping.wait(10)
        # the child's on_stop blocks: the Engine still answers, and does not restart yet
        assert engines[0].ask("are you there?", timeout=2) is None
        assert not second.is_set()
        release.set()
        assert second.wait(10)
        until_state(receiver, State.BACKFILLED)
        assert spawned[0].actor_stopped.is_set()
    finally:
        release.set()
        controller.shutdown()
    assert State.SHUTDOWN == controller.status_snapshot().state
