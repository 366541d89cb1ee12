"""An asyncio event loop in a daemon thread, for the parts that serve from the background.

Coroutines are submitted with :meth:`LoopThread.submit`, which returns a
``concurrent.futures.Future``; :meth:`LoopThread.stop` cancels every task still running, so a
shutdown never waits for an in-flight request. (The engine's actors run their own loops, see
:class:`qx_actors.actors._base.AsyncQxActor`; the simulator and the health server use this.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """An asyncio event loop in its own (daemon) thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop (use it only through :meth:`submit` / :meth:`call_soon`)."""
        return self._loop

    def start(self) -> LoopThread:
        """Start the thread and wait until its loop runs."""
        self._thread.start()
        self._ready.wait()
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._ready.set)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; thread-safe."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def call_soon(self, callback: Any, *args: Any) -> None:
        """Call ``callback(*args)`` in the loop's thread; thread-safe."""
        self._loop.call_soon_threadsafe(callback, *args)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and block the calling thread for its result."""
        return self.submit(coro).result(timeout)

    def run_or_stop(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """:meth:`run`, and should ``coro`` fail (or not end within ``timeout``) :meth:`stop`
        the loop before raising: a server that could not start leaves no thread behind."""
        try:
            return self.run(coro, timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel every task, stop the loop and join the thread (idempotent)."""
        if not self._thread.is_alive():
            return
        if threading.current_thread() is self._thread:
            raise RuntimeError("LoopThread.stop() called from its own thread")

        async def _cancel_all() -> None:
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=timeout)

        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(_cancel_all(), self._loop).result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

    @property
    def thread(self) -> threading.Thread:
        """The thread running the loop."""
        return self._thread

    @property
    def is_alive(self) -> bool:
        """Whether the loop thread still runs."""
        return self._thread.is_alive()
