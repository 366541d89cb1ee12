"""What every actor of a run shares, and the one base for actors that do asynchronous work.

* :class:`QxActor`: a pykka actor on a daemon thread that registers with its run's threads and
  tells its supervisor when it dies or stops.
* :class:`AsyncQxActor`: the same, but its thread runs an asyncio event loop for its network
  I/O, tasks and timers, and handles its messages between turns of that loop: one thread, no
  hand-off from an actor thread to a loop thread. Its inbox is read by running the loop until a
  message arrives, so pykka's own actor loop handles its messages, stop and failures.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

import pykka
import pykka.messages
import structlog
from pykka.messages import ProxyCall

from qx_actors.actors.messages import ChildExited, ChildFailed
from qx_actors.errors import ChildDied
from qx_actors.logs import get_logger

#: How long a stopping async actor waits for its cancelled tasks to unwind.
TASK_CANCEL_TIMEOUT_S = 5.0

#: What :class:`AsyncQxActor` takes from pykka beyond its public API, all of pykka 4.x: the two
#: hooks pykka leaves to "implementors of new actor types" (the inbox, the start of the actor's
#: thread) and the actor loop that thread runs (pykka's own, called, not copied). Besides these,
#: ``pykka.messages._ActorStop``: the stop message, recognised in the inbox so that
#: :meth:`AsyncQxActor.release` runs before ``on_stop``.
PYKKA_INTERNALS = (
    "_create_actor_inbox",
    "_start_actor_loop",
    "_actor_loop",
)


def check_pykka_internals(
    actor_class: type[Any] = pykka.Actor, messages: Any = pykka.messages
) -> None:
    """Fail at import, naming what is missing, if this pykka lacks what the async base uses.

    pykka is not pinned: a release that reshapes these internals must fail here, by name, not
    as actors that never answer.
    """
    missing = [name for name in PYKKA_INTERNALS if not callable(getattr(actor_class, name, None))]
    if not isinstance(getattr(messages, "_ActorStop", None), type):
        missing.append("pykka.messages._ActorStop")
    if missing:
        version = getattr(pykka, "__version__", "?")
        raise ImportError(
            f"qx_actors needs pykka 4.x internals that pykka {version} lacks: {', '.join(missing)}"
        )


check_pykka_internals()
#: The message ``ActorRef.stop()`` puts in the inbox.
_ACTOR_STOP: type[Any] = pykka.messages._ActorStop

_async_actor_numbers = itertools.count()


class RunThreads:
    """The threads of one run (one per actor), joined when the run ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._by_actor: dict[str, threading.Thread] = {}

    def add(self, thread: threading.Thread, *, actor_urn: str | None = None) -> None:
        """Remember ``thread`` (called from the thread itself or its starter), the thread of
        the actor ``actor_urn`` if given."""
        with self._lock:
            self._threads.append(thread)
            if actor_urn is not None:
                self._by_actor[actor_urn] = thread

    def actor_running(self, actor_urn: str) -> bool:
        """Whether the thread of that actor still runs. (pykka calls an actor dead as soon as
        its stop begins; what matters to a restart is that its ``on_stop`` has returned.)"""
        with self._lock:
            thread = self._by_actor.get(actor_urn)
        return thread is not None and thread.is_alive()

    def join(self, timeout: float) -> bool:
        """Join every thread but the caller's; whether all ended within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = [t for t in self._threads if t is not threading.current_thread()]
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        return not any(t.is_alive() for t in threads)

    def alive(self) -> list[threading.Thread]:
        """The threads still running (what a test of a clean stop asserts is empty)."""
        with self._lock:
            return [t for t in self._threads if t.is_alive()]


class QxActor(pykka.ThreadingActor):
    """A pykka actor on a daemon thread that registers itself with its run's threads.

    Daemon threads: a child stuck in a library call must not keep the process alive after a
    forced stop.

    A child of the Engine is given its ``supervisor`` and ``child_name``: when it dies of an
    uncaught exception its supervisor hears :class:`ChildFailed` with a
    :class:`~qx_actors.errors.ChildDied`, and whenever it stops it says :class:`ChildExited`
    (the Engine ignores that for children it stopped itself). Subclasses that override
    ``on_stop`` call ``super().on_stop()`` last.
    """

    use_daemon_thread = True

    def __init__(
        self,
        *,
        threads: RunThreads,
        run_id: str | None = None,
        supervisor: pykka.ActorRef[Any] | None = None,
        child_name: str | None = None,
    ) -> None:
        super().__init__()
        self.threads = threads
        self.run_id = run_id
        self.supervisor = supervisor
        self.child_name = child_name or type(self).__name__

    def on_start(self) -> None:
        self.threads.add(threading.current_thread(), actor_urn=self.actor_urn)
        if self.run_id is not None:
            # Log events of the libraries this actor drives (the LN Markets clients), also from
            # the asyncio tasks it runs, carry the run's id (structlog merge_contextvars).
            structlog.contextvars.bind_contextvars(run_id=self.run_id)

    def on_stop(self) -> None:
        self.tell_supervisor(ChildExited(self.child_name, self.actor_ref))

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # pykka skips on_stop after an uncaught exception: the supervisor must hear of it (it
        # restarts the run's children), and what on_stop releases (connections, the writer
        # lock, queued ticks) must be released all the same.
        cause = f"{type(exception_value).__name__}: {exception_value}"
        self.tell_supervisor(ChildFailed(self.child_name, ChildDied(self.child_name, cause)))
        self.on_stop()

    def tell_supervisor(self, message: Any) -> None:
        """Tell the supervisor (if any) ``message``; a dead supervisor means the run ended."""
        if self.supervisor is not None:
            tell(self.supervisor, message)


def tell(ref: pykka.ActorRef[Any], message: Any) -> None:
    """Tell ``ref`` ``message``; a dead peer means the run is ending: nobody is left to hear."""
    with contextlib.suppress(pykka.ActorDeadError):
        ref.tell(message)


class _Failure:
    """What the inbox hands pykka's actor loop when a task or timer raised a ``BaseException``
    (``SystemExit``, ``KeyboardInterrupt``, ...): an envelope (no reply expected) whose message,
    a public pykka ``ProxyCall``, raises it again inside that loop, which then ends the actor
    (and, as pykka does, every other actor) exactly as after a handler raising it."""

    __slots__ = ("message", "reply_to")

    def __init__(self, error: BaseException) -> None:
        self.message = ProxyCall(
            attr_path=("actor_inbox", "raise_failure"), args=(error,), kwargs={}
        )
        self.reply_to = None


class _LoopInbox:
    """A pykka inbox whose reader runs the actor's asyncio loop until an envelope arrives.

    pykka's actor loop calls :meth:`get` on the actor's thread: the loop runs (tasks, timers,
    I/O) while the inbox is empty, and stops as soon as :meth:`put`, from any thread, wakes it.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._actor: AsyncQxActor | None = None  # set when the actor starts (serve)
        self._items: collections.deque[Any] = collections.deque()
        self._waiting = False  # the loop runs in get() until an envelope (or a failure) comes
        self._failure: BaseException | None = None  # raised by a task or timer, not yet handed
        self._released = False

    # -- the inbox protocol (ActorRef.tell/ask put; pykka's actor loop gets) ----------------

    def put(self, envelope: Any, /) -> None:
        self._items.append(envelope)  # deque.append is atomic
        with contextlib.suppress(RuntimeError):  # the loop is closed: the actor is gone
            self.loop.call_soon_threadsafe(self._wake)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """The next envelope, running the loop until there is one. A stop envelope waits for
        the actor's :meth:`~AsyncQxActor.release`; a failure of a task or timer comes first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._failure is not None and self._alive():
                error, self._failure = self._failure, None
                return _Failure(error)
            if self._items:
                if self._releases_first(self._items[0]):
                    continue  # released: look again (a task may have failed meanwhile)
                return self._items.popleft()
            remaining = None if deadline is None else deadline - time.monotonic()
            if not block or (remaining is not None and remaining <= 0):
                raise queue.Empty
            self._run_until_woken(remaining)

    def empty(self) -> bool:
        return not self._items

    def serve(self, actor: AsyncQxActor) -> None:
        """Read for ``actor`` (before its thread starts): its stop awaits its release."""
        self._actor = actor

    # -- the loop ------------------------------------------------------------------------------

    def fail(self, error: BaseException) -> None:
        """Hand ``error`` (raised on the loop by a task or timer) to pykka's actor loop: the
        next :meth:`get` returns it, ahead of the envelopes waiting. (On the actor's thread.)"""
        if self._failure is None and self._alive():
            self._failure = error
            self._stop_waiting()

    def raise_failure(self, error: BaseException) -> None:
        """Called by pykka's actor loop for a :class:`_Failure` envelope."""
        raise error

    def _alive(self) -> bool:
        return self._actor is not None and not self._actor.actor_stopped.is_set()

    def _releases_first(self, envelope: Any) -> bool:
        """Before pykka handles the stop (``on_stop``), await the actor's release, once."""
        actor = self._actor
        if actor is None or self._released or not isinstance(envelope.message, _ACTOR_STOP):
            return False
        if not self._alive():
            return False
        self._released = True
        try:
            self.loop.run_until_complete(actor._release_safely())
        except BaseException as exc:  # e.g. SystemExit from a task being cancelled
            self.fail(exc)
        return True

    def _run_until_woken(self, timeout: float | None) -> None:
        timer = None if timeout is None else self.loop.call_later(timeout, self._stop_waiting)
        self._waiting = True
        try:
            self.loop.run_forever()
        except BaseException as exc:  # SystemExit/KeyboardInterrupt out of a task or callback
            self._waiting = False  # the loop has stopped already
            self.fail(exc)
        finally:
            self._waiting = False
            if timer is not None:
                timer.cancel()

    def _wake(self) -> None:
        if self._items:
            self._stop_waiting()

    def _stop_waiting(self) -> None:
        if self._waiting and self.loop.is_running():
            self._waiting = False
            self.loop.stop()  # a flag: the loop ends after this turn

    def close(self) -> None:
        """End of the actor's thread: the tasks still running (after a failure) are cancelled
        and awaited, then the loop is closed."""
        actor, self._actor = self._actor, None
        loop = self.loop
        try:
            if actor is not None:
                loop.run_until_complete(actor._cancel_tasks())
            loop.run_until_complete(loop.shutdown_asyncgens())
        except BaseException as exc:  # the actor is gone already: nobody left to tell
            log = get_logger(run_id=getattr(actor, "run_id", None))
            log.warning("loop_close_failed", error=repr(exc))
        finally:
            loop.close()


class AsyncQxActor(QxActor):
    """An actor whose thread runs an asyncio loop, and handles its messages between its turns.

    ``on_receive`` and the hooks run on the actor's thread, whose event loop
    (``asyncio.get_event_loop()``, :attr:`loop`) is the actor's, so a handler may start tasks
    (:meth:`start_task`) and timers (:meth:`call_later`) directly; it must never block. They run
    while the actor waits for its next message. When the actor stops, :meth:`release` runs
    first (cancel tasks, close clients: awaited before the stopper's ``stop()`` returns), then
    ``on_stop``; after a failure the tasks are cancelled once pykka's loop is left.

    Messages, stop and failures are pykka's own actor loop's business (the inbox runs the
    asyncio loop while it waits, see :class:`_LoopInbox`): an exception in a handler fails the
    actor (``on_failure``), a ``BaseException`` (``SystemExit``, ``KeyboardInterrupt``, ...)
    stops it and every other actor, as for a ``pykka.ThreadingActor``; the same
    ``BaseException`` raised by a task or a timer of the actor is raised in that loop. (An
    ``Exception`` escaping a task or timer is asyncio's to log, as ever.)
    """

    #: The tasks started with :meth:`start_task` and still running (cancelled at the stop).
    _tasks: set[asyncio.Task[Any]]

    @staticmethod
    def _create_actor_inbox() -> Any:  # pykka calls it from Actor.__init__
        return _LoopInbox()

    @property
    def _inbox(self) -> _LoopInbox:
        inbox: _LoopInbox = self.actor_inbox  # type: ignore[assignment]
        return inbox

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """This actor's event loop (use it from the actor's own thread only)."""
        return self._inbox.loop

    def _start_actor_loop(self) -> None:
        self._tasks = set()
        self._inbox.serve(self)
        thread = threading.Thread(
            target=self._run_thread,
            name=f"{type(self).__name__}-{next(_async_actor_numbers)}",
            daemon=self.use_daemon_thread,
        )
        thread.start()

    def _run_thread(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self._actor_loop()  # pykka's: on_start, messages, stop or failure, the inbox drained
        finally:
            self._inbox.close()
            asyncio.set_event_loop(None)

    async def _release_safely(self) -> None:
        try:
            await self.release()
        except Exception as exc:  # releasing is best effort: the actor stops anyway
            log = get_logger(run_id=self.run_id, actor=self.child_name)
            log.warning("release_failed", error=repr(exc))
        await self._cancel_tasks()

    async def release(self) -> None:
        """Hook: release asynchronous resources before ``on_stop`` (default: cancel tasks)."""
        await self._cancel_tasks()

    def start_task(
        self, coro: Coroutine[Any, Any, Any], *, name: str | None = None
    ) -> asyncio.Task[Any]:
        """Run ``coro`` on this actor's loop; it is cancelled when the actor stops."""
        task = self.loop.create_task(self._guarded_task(coro), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # Cancelled before it began, ``coro`` was never awaited: closed, it says nothing.
        task.add_done_callback(lambda _: coro.close())
        return task

    def call_later(self, seconds: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        """Call ``callback`` on this actor's loop after ``seconds``."""
        return self.loop.call_later(max(seconds, 0.0), self._guarded_call, callback)

    async def _guarded_task(self, coro: Coroutine[Any, Any, Any]) -> Any:
        try:
            return await coro
        except (Exception, asyncio.CancelledError):
            raise
        except BaseException as exc:  # ends the actor as in a handler (see the class)
            self._inbox.fail(exc)
            return None

    def _guarded_call(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            raise
        except BaseException as exc:  # ends the actor as in a handler (see the class)
            self._inbox.fail(exc)

    async def _cancel_tasks(self) -> None:
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=TASK_CANCEL_TIMEOUT_S)
