"""What every actor of a run shares: daemon threads that the run can join when it ends."""

from __future__ import annotations

import contextlib
import threading
import time
from types import TracebackType
from typing import Any

import pykka
import structlog

from qx_actors.actors.messages import ChildExited, ChildFailed
from qx_actors.errors import ChildDied


class RunThreads:
    """The threads of one run (actor threads and loop threads), joined when the run ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def add(self, thread: threading.Thread) -> None:
        """Remember ``thread`` (called from the thread itself or its starter)."""
        with self._lock:
            self._threads.append(thread)

    def join(self, timeout: float) -> bool:
        """Join every thread but the caller's; whether all ended within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = [t for t in self._threads if t is not threading.current_thread()]
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        return not any(t.is_alive() for t in threads)

    def alive(self) -> list[threading.Thread]:
        """The threads still running."""
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
        self.threads.add(threading.current_thread())
        if self.run_id is not None:
            # Log events of the libraries this actor drives (the LN Markets clients), also from
            # the asyncio tasks it submits, carry the run's id (structlog merge_contextvars).
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
            with contextlib.suppress(pykka.ActorDeadError):
                self.supervisor.tell(message)
