"""The async actor base: messages, tasks and timers on one loop thread, the stop and failure
paths, and the pykka internals it is built on (pykka is unpinned: a release that reshapes them
must fail here, by name)."""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any

import pykka
import pytest

from qx_actors.actors import AsyncQxActor, RunThreads
from qx_actors.actors._base import PYKKA_INTERNALS, check_pykka_internals
from qx_actors.actors.messages import ChildExited, ChildFailed
from qx_actors.errors import ChildDied

WAIT_S = 10.0


class Recorder(pykka.ThreadingActor):
    """A supervisor that only records what it is told."""

    def __init__(self, inbox: queue.Queue[Any]) -> None:
        super().__init__()
        self.inbox = inbox

    def on_receive(self, message: Any) -> None:
        self.inbox.put(message)


class Worker(AsyncQxActor):
    def __init__(self, events: queue.Queue[Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.events = events

    def on_receive(self, message: Any) -> Any:
        match message:
            case "where":
                # handled on the loop itself: a running loop, in the actor's thread
                return threading.current_thread(), asyncio.get_running_loop()
            case "task":
                self.start_task(self._record_where("task"))
            case "timer":
                self.call_later(0.01, self._record_timer)
            case "park":
                self.start_task(self._park())
            case "boom":
                raise RuntimeError("boom")
        return None

    def _record_timer(self) -> None:
        self.events.put(("timer", threading.current_thread()))

    async def _record_where(self, label: str) -> None:
        await asyncio.sleep(0)
        self.events.put((label, threading.current_thread()))

    async def _park(self) -> None:
        self.events.put(("parked", None))
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.events.put(("task cancelled", None))
            raise

    async def release(self) -> None:
        self.events.put(("release", None))
        await super().release()

    def on_stop(self) -> None:
        self.events.put(("on_stop", None))
        super().on_stop()


def _next(events: queue.Queue[Any]) -> Any:
    return events.get(timeout=WAIT_S)


@pytest.fixture
def threads() -> Any:
    run_threads = RunThreads()
    yield run_threads
    pykka.ActorRegistry.stop_all()
    assert run_threads.join(WAIT_S)


def test_messages_tasks_and_timers_run_on_the_actors_one_thread(threads: RunThreads) -> None:
    events: queue.Queue[Any] = queue.Queue()
    ref = Worker.start(events, threads=threads)
    thread, loop = ref.ask("where", timeout=WAIT_S)
    assert thread is not threading.current_thread()
    assert loop.is_running()
    ref.tell("task")
    ref.tell("timer")
    seen = dict([_next(events), _next(events)])
    assert seen == {"task": thread, "timer": thread}
    ref.stop()
    assert threads.join(WAIT_S)
    assert loop.is_closed()


def test_stop_awaits_release_and_cancels_tasks_before_on_stop(threads: RunThreads) -> None:
    events: queue.Queue[Any] = queue.Queue()
    ref = Worker.start(events, threads=threads)
    ref.tell("park")
    assert _next(events) == ("parked", None)
    ref.stop()  # blocks until the actor has stopped
    order = [events.get_nowait()[0] for _ in range(events.qsize())]
    assert order == ["release", "task cancelled", "on_stop"]
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("where", timeout=WAIT_S)


def test_an_ask_that_raises_answers_the_caller_and_the_actor_goes_on(threads: RunThreads) -> None:
    ref = Worker.start(queue.Queue(), threads=threads)
    with pytest.raises(RuntimeError, match="boom"):
        ref.ask("boom", timeout=WAIT_S)
    thread, _ = ref.ask("where", timeout=WAIT_S)
    assert thread.is_alive()


def test_a_failing_tell_tells_the_supervisor_and_stops_the_actor(threads: RunThreads) -> None:
    told: queue.Queue[Any] = queue.Queue()
    supervisor = Recorder.start(told)
    events: queue.Queue[Any] = queue.Queue()
    ref = Worker.start(events, threads=threads, supervisor=supervisor, child_name="worker")
    ref.tell("park")
    assert _next(events) == ("parked", None)
    ref.tell("boom")
    failed = _next(told)
    assert isinstance(failed, ChildFailed) and failed.source == "worker"
    assert isinstance(failed.error, ChildDied) and "RuntimeError: boom" in str(failed.error)
    exited = _next(told)
    assert isinstance(exited, ChildExited) and exited.ref == ref
    assert threads.join(WAIT_S)  # the loop thread ended ...
    assert ("task cancelled", None) in [events.get_nowait() for _ in range(events.qsize())]
    assert not ref.is_alive()  # ... after cancelling what it still ran


def test_the_installed_pykka_has_the_internals_the_async_base_uses() -> None:
    check_pykka_internals()  # what the import did; it raised nothing then either
    for name in PYKKA_INTERNALS:
        assert callable(getattr(pykka.ThreadingActor, name))


def test_a_pykka_without_those_internals_is_refused_by_name() -> None:
    class ReshapedActor(pykka.Actor):
        _actor_loop_teardown = None  # type: ignore[assignment]
        _handle_failure = None  # type: ignore[assignment]

    class ReshapedMessages:
        pass

    with pytest.raises(ImportError) as refused:
        check_pykka_internals(ReshapedActor, ReshapedMessages)
    message = str(refused.value)
    assert "_handle_failure" in message and "_actor_loop_teardown" in message
    assert "pykka.messages._ActorStop" in message
    assert "_handle_receive" not in message
