"""What every actor of a run shares, and the one base for actors that do asynchronous work.

* :class:`QxActor`: a pykka actor on a daemon thread that registers with its run's threads and
  tells its supervisor when it dies or stops.
* :class:`AsyncQxActor`: the same, but its thread runs an asyncio event loop and its messages
  are handled *on that loop*: network I/O (the REST and stream clients) and timers run beside
  message handling in one thread, with no hand-off from an actor thread to a loop thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

import pykka
import pykka.messages
import structlog

from qx_actors.actors.messages import ChildExited, ChildFailed
from qx_actors.errors import ChildDied
from qx_actors.logs import get_logger

#: How long a stopping async actor waits for its cancelled tasks to unwind.
TASK_CANCEL_TIMEOUT_S = 5.0

#: What :class:`AsyncQxActor` takes from pykka beyond its public API, all of pykka 4.x: the two
#: hooks pykka leaves to "implementors of new actor types" (the inbox, the loop's thread) and
#: the steps of its own actor loop, which ``_serve_inbox`` runs in the same order.
PYKKA_INTERNALS = (
    "_create_actor_inbox",
    "_start_actor_loop",
    "_actor_loop_setup",
    "_handle_receive",
    "_handle_failure",
    "_actor_loop_teardown",
)


def check_pykka_internals(
    actor_class: type[Any] = pykka.Actor, messages: Any = pykka.messages
) -> None:
    """Fail at import, naming what is missing, if this pykka lacks what the async base uses.

    pykka is not pinned: a release that reshapes its actor loop must fail here, by name, not as
    actors that never answer.
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


class _LoopInbox:
    """A pykka inbox whose reader is an asyncio loop: ``put`` from any thread wakes the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._items: collections.deque[Any] = collections.deque()
        self._wakeup: asyncio.Event | None = None  # created on the loop (it binds to it)

    def put(self, envelope: Any) -> None:
        self._items.append(envelope)  # deque.append is atomic
        with contextlib.suppress(RuntimeError):  # the loop is closed: the actor is gone
            self.loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def next(self) -> Any:
        """The oldest envelope, waiting on the loop for one."""
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        while not self._items:
            self._wakeup.clear()
            if self._items:
                break
            await self._wakeup.wait()
        return self._items.popleft()

    def get(self) -> Any:  # pykka's teardown drains the inbox after the loop ended
        return self._items.popleft()

    def empty(self) -> bool:
        return not self._items


class AsyncQxActor(QxActor):
    """An actor whose thread runs an asyncio loop, and whose messages are handled on it.

    ``on_receive`` and the hooks run on the loop, so a handler may start tasks
    (:meth:`start_task`) and timers (:meth:`call_later`) directly; it must never block. When
    the actor stops, :meth:`release` runs first (cancel tasks, close clients: awaited before
    the stopper's ``stop()`` returns), then ``on_stop``; after a failure the tasks are
    cancelled once the loop is left.
    """

    #: The tasks started with :meth:`start_task` and still running (cancelled at the stop).
    _tasks: set[asyncio.Task[Any]]

    @staticmethod
    def _create_actor_inbox() -> Any:  # pykka calls it from Actor.__init__
        return _LoopInbox(asyncio.new_event_loop())

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """This actor's event loop (use it from the actor's own thread only)."""
        inbox: _LoopInbox = self.actor_inbox  # type: ignore[assignment]
        return inbox.loop

    def _start_actor_loop(self) -> None:
        thread = threading.Thread(
            target=self._run_loop,
            name=f"{type(self).__name__}-{next(_async_actor_numbers)}",
            daemon=self.use_daemon_thread,
        )
        thread.start()

    def _run_loop(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve_inbox())
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve_inbox(self) -> None:
        """pykka's actor loop, reading the inbox on the event loop."""
        self._tasks = set()
        self._actor_loop_setup()  # on_start
        inbox: _LoopInbox = self.actor_inbox  # type: ignore[assignment]
        while not self.actor_stopped.is_set():
            envelope = await inbox.next()
            if isinstance(envelope.message, _ACTOR_STOP):
                await self._release_safely()
            self._handle_envelope(envelope)
        await self._cancel_tasks()  # after a failure: release what is still running
        self._actor_loop_teardown()

    def _handle_envelope(self, envelope: Any) -> None:
        # As pykka's ThreadingActor loop does for one envelope.
        try:
            response = self._handle_receive(envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except Exception:
            if envelope.reply_to is not None:
                envelope.reply_to.set_exception()
            else:
                self._handle_failure(*sys.exc_info())
                try:
                    self.on_failure(*sys.exc_info())
                except Exception:
                    self._handle_failure(*sys.exc_info())

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
        task = self.loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def call_later(self, seconds: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        """Call ``callback`` on this actor's loop after ``seconds``."""
        return self.loop.call_later(max(seconds, 0.0), callback)

    async def _cancel_tasks(self) -> None:
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=TASK_CANCEL_TIMEOUT_S)
