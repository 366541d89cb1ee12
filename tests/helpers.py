"""Test-only helpers: the pinned clock, mode programs, a stuck child actor, and waiting on a
status receiver (a shim over :class:`qx_actors.testing.RunProbe` for the tests that read a
receiver of their own)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from datetime import time as time_of_day
from typing import Any

import pykka

from qx_actors.actors import QxActor, RunContext
from qx_actors.actors.messages import Report, Sleep
from qx_actors.config import QxConfig
from qx_actors.errors import RecoverableError
from qx_actors.observability import HealthServer
from qx_actors.status import State, SyncStatus, Trigger
from qx_actors.sync_engine import SyncController, SyncEngine
from qx_actors.testing import RunProbe
from qx_actors.updates import SyncUpdate, UpdateReceiver


@contextmanager
def locking_child(code: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """A Python process running ``code`` with ``args`` (stdin and stdout piped), inside the block
    once it has printed ``locked``; killed at the end if it still runs then."""
    child = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert "locked" == child.stdout.readline().strip()
        yield child
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def pinned_start(text: str, today: datetime | None = None) -> datetime:
    """The UTC instant of a pinned test clock: ``HH:MM`` or ``HH:MM:SS`` is that time of
    ``today`` (default: the current UTC date); an ISO date and time (``2026-03-01T23:59``,
    ``Z`` or an offset allowed, naive means UTC) is taken as is."""
    text = text.strip()
    match = re.fullmatch(r"(\d{1,2}):(\d{2})(?::(\d{2}))?", text)
    if match:
        day = (today or datetime.now(UTC)).astimezone(UTC)
        try:
            clock_time = time_of_day(int(match[1]), int(match[2]), int(match[3] or 0))
        except ValueError as exc:
            raise ValueError(f"not a UTC time of day: {text!r}") from exc
        return datetime.combine(day.date(), clock_time, tzinfo=UTC)
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"expected HH:MM or an ISO date and time, got {text!r}") from exc
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def statuses_until(
    receiver: UpdateReceiver, stop: Callable[[SyncStatus], bool], timeout: float = 10.0
) -> list[SyncStatus]:
    """Read status updates until ``stop(status)``; the statuses read, in order.

    ``timeout`` bounds the whole wait (other updates keep arriving meanwhile).
    """
    probe = RunProbe.reading(receiver)
    probe.wait_for(stop, timeout)
    return probe.statuses


def until_state(receiver: UpdateReceiver, state: State, timeout: float = 10.0) -> list[SyncStatus]:
    """Read status updates until ``state`` is reached (or a terminal state)."""
    return statuses_until(receiver, lambda s: s.state is state or s.is_stopped, timeout)


def names(statuses: list[SyncStatus]) -> list[str]:
    """The status names of ``statuses``."""
    return [s.name for s in statuses]


class FlakyProgram:
    """A test-only mode: progress, fail recoverably ``failures`` times, then backfilled, idle."""

    def __init__(self, failures: int = 0, fatal: BaseException | None = None) -> None:
        self.failures = failures
        self.fatal = fatal
        self.attempts: list[int] = []

    def __call__(self, ctx: RunContext) -> Iterator[Any]:
        self.attempts.append(ctx.attempt)
        yield Report(Trigger.PROGRESS)
        if ctx.attempt < self.failures:
            raise RecoverableError(f"injected failure {ctx.attempt + 1}")
        if self.fatal is not None:
            raise self.fatal
        yield Report(Trigger.BACKFILLED)
        while True:
            yield Sleep(3600)


class StuckChild(QxActor):
    """A child whose stop blocks until ``release`` is set (to provoke a shutdown timeout)."""

    def __init__(self, *, threads: Any, release: threading.Event) -> None:
        super().__init__(threads=threads)
        self.release = release

    def on_stop(self) -> None:
        self.release.wait(30)


def stuck_child_spawner(release: threading.Event) -> Callable[..., pykka.ActorRef[Any]]:
    """A child spawner for :class:`StuckChild`."""

    def spawn(ctx: RunContext, engine: pykka.ActorRef[Any], siblings: Any) -> pykka.ActorRef[Any]:
        return StuckChild.start(threads=ctx.threads, release=release)

    return spawn


class CollectingActor(pykka.ThreadingActor):
    """An application actor that collects the updates it is told."""

    def __init__(self, done: Callable[[SyncUpdate], bool]) -> None:
        super().__init__()
        self.updates: list[SyncUpdate] = []
        self.finished = threading.Event()
        self._done = done

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, SyncUpdate):
            self.updates.append(message)
            if self._done(message):
                self.finished.set()
        elif message == "updates":
            return list(self.updates)
        return None


@contextmanager
def served_run(
    config: QxConfig,
) -> Iterator[tuple[SyncEngine, UpdateReceiver, HealthServer, SyncController]]:
    """A started engine for ``config`` (with a receiver taken before the start) and its
    ``/health`` + ``/metrics`` server on a free port; both stopped at the end."""
    engine = SyncEngine(config)
    receiver = engine.update_receiver()
    server = HealthServer(engine.health, engine.run_id, "127.0.0.1", 0).start()
    try:
        controller = engine.start()
        try:
            yield engine, receiver, server, controller
        finally:
            controller.shutdown()
    finally:
        server.stop()


class RecordingInbox(pykka.ThreadingActor):
    """Stands in for the Engine and the REST fetcher of a DB writer: keeps what it is told
    (asked ``"messages"``, answers what it kept)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[object] = []

    def on_receive(self, message: object) -> object:
        if message == "messages":
            return list(self.messages)
        self.messages.append(message)
        return None
