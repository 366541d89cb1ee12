"""The async actor base: messages, tasks and timers on one loop thread, the stop and failure
paths (a ``BaseException`` ends it as it ends a plain ``pykka.ThreadingActor``), and the pykka
internals it is built on (pykka is unpinned: a release that reshapes them must fail here, by
name)."""

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


class Abort(BaseException):
    """A ``BaseException`` of the application's own (neither SystemExit nor KeyboardInterrupt)."""


BASE_EXCEPTIONS = [SystemExit, KeyboardInterrupt, Abort]


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
                # handled in the actor's thread, whose event loop is the actor's
                return threading.current_thread(), asyncio.get_event_loop()
            case "task":
                self.start_task(self._record_where("task"))
            case "timer":
                self.call_later(0.01, self._record_timer)
            case "park":
                self.start_task(self._park())
            case "boom":
                raise RuntimeError("boom")
            case ("raise", "handler", error):
                raise error
            case ("raise", "task", error):
                self.start_task(self._raise(error))
            case ("raise", "timer", error):
                self.call_later(0, lambda: _raise_now(error))
            case ("raise", "loop callback", error):  # not through the base: straight on the loop
                self.loop.call_soon(_raise_now, error)
        return None

    def _record_timer(self) -> None:
        self.events.put(("timer", threading.current_thread(), asyncio.get_running_loop()))

    async def _record_where(self, label: str) -> None:
        await asyncio.sleep(0)
        self.events.put((label, threading.current_thread(), asyncio.get_running_loop()))

    async def _raise(self, error: BaseException) -> None:
        await asyncio.sleep(0)
        raise error

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


class Plain(pykka.ThreadingActor):
    """What the async base is compared with: pykka's own actor."""

    use_daemon_thread = True

    def on_receive(self, message: Any) -> Any:
        match message:
            case "where":
                return threading.current_thread(), None
            case ("raise", "handler", error):
                raise error
        return None


def _raise_now(error: BaseException) -> None:
    raise error


def _next(events: queue.Queue[Any]) -> Any:
    return events.get(timeout=WAIT_S)


def _drain(events: queue.Queue[Any]) -> list[Any]:
    return [events.get_nowait() for _ in range(events.qsize())]


@pytest.fixture(autouse=True)
def no_actor_left() -> Any:
    yield
    pykka.ActorRegistry.stop_all(timeout=WAIT_S)  # a zombie fails the test, not hangs it


@pytest.fixture
def threads() -> Any:
    run_threads = RunThreads()
    yield run_threads
    pykka.ActorRegistry.stop_all(timeout=WAIT_S)  # a zombie fails the test, not hangs it
    assert run_threads.join(WAIT_S)


def test_messages_tasks_and_timers_run_on_the_actors_one_thread(threads: RunThreads) -> None:
    events: queue.Queue[Any] = queue.Queue()
    ref = Worker.start(events, threads=threads)
    thread, loop = ref.ask("where", timeout=WAIT_S)
    assert thread is not threading.current_thread()
    assert isinstance(loop, asyncio.AbstractEventLoop) and not loop.is_closed()
    ref.tell("task")
    ref.tell("timer")
    seen = {label: (where, running) for label, where, running in [_next(events), _next(events)]}
    assert seen == {"task": (thread, loop), "timer": (thread, loop)}
    ref.stop()
    assert threads.join(WAIT_S)
    assert loop.is_closed()


def test_stop_awaits_release_and_cancels_tasks_before_on_stop(threads: RunThreads) -> None:
    events: queue.Queue[Any] = queue.Queue()
    ref = Worker.start(events, threads=threads)
    ref.tell("park")
    assert _next(events) == ("parked", None)
    ref.stop()  # blocks until the actor has stopped
    order = [event[0] for event in _drain(events)]
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
    assert ("task cancelled", None) in _drain(events)
    assert not ref.is_alive()  # ... after cancelling what it still ran


def test_the_installed_pykka_has_the_internals_the_async_base_uses() -> None:
    check_pykka_internals()  # what the import did; it raised nothing then either
    for name in PYKKA_INTERNALS:
        assert callable(getattr(pykka.ThreadingActor, name))


def test_a_pykka_without_those_internals_is_refused_by_name() -> None:
    class ReshapedActor(pykka.Actor):
        _actor_loop = None  # type: ignore[assignment]
        _start_actor_loop = None  # type: ignore[assignment]

    class ReshapedMessages:
        pass

    with pytest.raises(ImportError) as refused:
        check_pykka_internals(ReshapedActor, ReshapedMessages)
    message = str(refused.value)
    assert "_actor_loop" in message and "_start_actor_loop" in message
    assert "pykka.messages._ActorStop" in message
    assert "_create_actor_inbox" not in message


def test_the_async_base_no_longer_leans_on_pykkas_loop_steps() -> None:
    # The base reads its inbox for pykka's own loop instead of copying it.
    gone = {"_actor_loop_setup", "_handle_receive", "_handle_failure", "_actor_loop_teardown"}
    assert gone.isdisjoint(PYKKA_INTERNALS)
    assert not hasattr(AsyncQxActor, "_serve_inbox")


# -- a BaseException (SystemExit, KeyboardInterrupt, ...) --------------------------------------
#
# pykka's own loop, for a ThreadingActor: the actor stops (on_stop, unregistered), it stops every
# other actor, and its thread ends. The async base must leave no zombie behind (registered,
# alive, never answering, stop_all waiting for it): the same outcome, wherever it was raised.

#: What is seen after a BaseException in an actor, pykka's ThreadingActor first.
PYKKA_OUTCOME = {
    "stopped": True,
    "alive": False,
    "registered": False,
    "ask": "ActorDeadError",
    "bystander stopped": True,
    "stop_all returned": True,
    "thread ended": True,
}


def _outcome(
    ref: pykka.ActorRef[Any], bystander: pykka.ActorRef[Any], where: str, error: BaseException
) -> dict[str, Any]:
    """Raise ``error`` in the actor ``ref`` (``where``: in a handler, a task, a timer, ...) and
    say what is seen then, by its peers and by whoever asks it something."""
    thread, _ = ref.ask("where", timeout=WAIT_S)
    ref.tell(("raise", where, error))
    stopped = ref.actor_stopped.wait(WAIT_S)
    bystander_stopped = bystander.actor_stopped.wait(WAIT_S)  # pykka stops every actor
    try:
        ref.ask("where", timeout=WAIT_S)
        ask = "answered"
    except pykka.ActorDeadError:  # at once: the actor is known dead, nobody waits WAIT_S
        ask = "ActorDeadError"
    except pykka.Timeout:
        ask = "timed out"
    try:
        pykka.ActorRegistry.stop_all(timeout=WAIT_S)  # a zombie makes it time out
        stop_all_returned = True
    except pykka.Timeout:
        stop_all_returned = False
    thread.join(WAIT_S)
    return {
        "stopped": stopped,
        "alive": ref.is_alive(),
        "registered": pykka.ActorRegistry.get_by_urn(ref.actor_urn) is not None,
        "ask": ask,
        "bystander stopped": bystander_stopped,
        "stop_all returned": stop_all_returned,
        "thread ended": not thread.is_alive(),
    }


@pytest.mark.parametrize("error_type", BASE_EXCEPTIONS)
def test_a_base_exception_in_a_handler_of_a_threading_actor(error_type: type) -> None:
    # What pykka does: the reference the async base is held to below.
    bystander = Recorder.start(queue.Queue())
    ref = Plain.start()
    assert _outcome(ref, bystander, "handler", error_type("raised")) == PYKKA_OUTCOME


@pytest.mark.parametrize("error_type", BASE_EXCEPTIONS)
@pytest.mark.parametrize("where", ["handler", "task", "timer"])
def test_a_base_exception_ends_an_async_actor_as_it_ends_a_threading_actor(
    threads: RunThreads, where: str, error_type: type
) -> None:
    plain = _outcome(Plain.start(), Recorder.start(queue.Queue()), "handler", error_type("raised"))

    told: queue.Queue[Any] = queue.Queue()
    supervisor = Recorder.start(told)
    bystander = Recorder.start(queue.Queue())
    events: queue.Queue[Any] = queue.Queue()
    ref = Worker.start(events, threads=threads, supervisor=supervisor, child_name="worker")
    ref.tell("park")
    assert _next(events) == ("parked", None)
    loop = ref.ask("where", timeout=WAIT_S)[1]

    assert _outcome(ref, bystander, where, error_type("raised")) == plain == PYKKA_OUTCOME
    exited = _next(told)  # on_stop ran (pykka's way): the supervisor heard before it stopped
    assert isinstance(exited, ChildExited) and exited.source == "worker" and exited.ref == ref
    assert threads.join(WAIT_S)
    # As after a failure: on_stop first (pykka calls it), the tasks cancelled as the loop ends.
    assert [event[0] for event in _drain(events)] == ["on_stop", "task cancelled"]
    assert loop.is_closed()


@pytest.mark.parametrize("error_type", [SystemExit, KeyboardInterrupt])
def test_one_escaping_the_event_loop_itself_ends_the_actor_too(
    threads: RunThreads, error_type: type
) -> None:
    # Raised by a callback the base did not wrap (asyncio lets these two through its loop).
    ref = Worker.start(queue.Queue(), threads=threads)
    outcome = _outcome(ref, Recorder.start(queue.Queue()), "loop callback", error_type("raised"))
    assert outcome == PYKKA_OUTCOME
