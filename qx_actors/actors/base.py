"""What every actor of a run shares: daemon threads that the run can join when it ends."""

from __future__ import annotations

import threading
import time

import pykka
import structlog


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
    """

    use_daemon_thread = True

    def __init__(self, *, threads: RunThreads, run_id: str | None = None) -> None:
        super().__init__()
        self.threads = threads
        self.run_id = run_id

    def on_start(self) -> None:
        self.threads.add(threading.current_thread())
        if self.run_id is not None:
            # Log events of the libraries this actor drives (the LN Markets clients), also from
            # the asyncio tasks it submits, carry the run's id (structlog merge_contextvars).
            structlog.contextvars.bind_contextvars(run_id=self.run_id)
