"""Running a sync as a foreground service: until a signal, the progress view or the TUI, and
the health server on ``metrics.listen``. Shared by ``qx-actors sync`` and ``qx-actors demo``."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import NoReturn
from urllib.parse import unquote

from qx_actors.app.progress import ProgressView
from qx_actors.app.tui import run_tui
from qx_actors.config import QxConfig, parse_listen
from qx_actors.domain.lookback import SyncMode
from qx_actors.errors import QxError, StorageError
from qx_actors.logs import mute_logging
from qx_actors.observability.health import HealthServer
from qx_actors.redact import redact_text
from qx_actors.sync_engine import SyncController, SyncEngine

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: Ctrl-C (SIGINT): 128 + 2, the shell's convention; SIGTERM ends with 143.
EXIT_INTERRUPTED = 130


def print_error(message: str) -> None:
    """Print ``message`` on stderr with every known secret replaced by ``***``."""
    print(redact_text(message), file=sys.stderr)


def listen_error_text(exc: OSError) -> str:
    """``address already in use`` rather than asyncio's ``[Errno 98] error while ...``."""
    if exc.errno is not None:
        return os.strerror(exc.errno).lower()
    return str(exc)


#: A second signal counts (forces the exit) only this long after the first: ``timeout`` and a
#: terminal send one Ctrl-C to the process and to its group, which can arrive twice.
SIGNAL_GRACE_S = 1.0


def exit_code_of_signal(signum: int) -> int:
    """The shell's convention for a run ended by a signal: 128 + its number (Ctrl-C: 130)."""
    return 128 + signum


class SignalStop:
    """SIGINT/SIGTERM: the first asks for a graceful stop (``stop`` is set); another one at
    least ``grace_s`` later forces the exit (exit 130) with nothing logged after it."""

    def __init__(
        self,
        stop: threading.Event,
        *,
        where: str = "qx-actors",
        grace_s: float = SIGNAL_GRACE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stop = stop
        self.where = where
        self.grace_s = grace_s
        self._clock = clock
        self._first_at: float | None = None
        #: the first signal received (None: none)
        self.signum: int | None = None

    def install(self) -> SignalStop:
        """Handle SIGINT and SIGTERM (in the main thread)."""
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)
        return self

    def exit_code(self, default: int) -> int:
        """``default``, or 128 + the signal's number when a signal stopped the run."""
        return default if self.signum is None else exit_code_of_signal(self.signum)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = self._clock()
        if self._first_at is None:
            self._first_at, self.signum = now, signum
            self.stop.set()
        elif now - self._first_at >= self.grace_s:
            self.force(self.where)

    def force(self, where: str) -> None:
        """Leave now (:func:`force_exit`)."""
        force_exit(where)

    def __call__(self, signum: int, frame: FrameType | None = None) -> None:
        """The handler itself (what :meth:`install` installs)."""
        self._handle(signum, frame)


def force_exit(where: str = "qx-actors") -> NoReturn:
    """Leave now, without waiting for the graceful shutdown: logging is muted first, so that
    nothing is logged after the ``forced exit`` line; exit code 130."""
    mute_logging()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    with contextlib.suppress(Exception):
        print(f"\n{where}: forced exit", file=sys.stderr, flush=True)
    os._exit(EXIT_INTERRUPTED)


def check_sqlite_directory(url: str) -> None:
    """A SQLite database is created only where its directory exists: ``StorageError`` before
    anything starts, naming the directory, instead of a run that fails at start."""
    if not url.startswith("sqlite:///"):
        return
    path = unquote(url.removeprefix("sqlite:///"))
    if path in ("", ":memory:") or os.path.exists(path):
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise StorageError(
            f"no directory {parent} for the SQLite database {path} "
            "(create it first, or check the path)"
        )


def run_until_signal(
    config: QxConfig,
    mode: SyncMode,
    *,
    progress: bool,
    stop: threading.Event | None = None,
    tui: bool = False,
    duration_s: float | None = None,
    where: str = "qx-actors",
) -> int:
    """Run a sync until SIGINT/SIGTERM (or ``stop``, or ``duration_s``) or until it fails; the
    exit code: 0 after a graceful shutdown asked by ``stop``/``duration_s``/the TUI, 130 after
    Ctrl-C (128 + the signal: SIGTERM 143), 1 when the run failed.

    With ``tui`` the Textual UI is the view (``q`` shuts down); otherwise log lines and, on a
    terminal, the progress table."""
    stop = stop or threading.Event()
    signals = SignalStop(stop, where=where).install()
    check_sqlite_directory(config.database)
    engine = SyncEngine.from_config(config, mode)
    health_server = None
    if config.metrics.listen is not None:
        host, port = parse_listen(config.metrics.listen)
        try:
            health_server = HealthServer(engine.health, engine.run_id, host, port).start()
        except OSError as exc:
            print_error(
                f"{where}: cannot serve metrics.listen {host}:{port}: {listen_error_text(exc)}"
            )
            return EXIT_FAILED
        print(f"{where}: health {health_server.url}/health, metrics {health_server.url}/metrics",
              file=sys.stderr)  # fmt: skip
    timer = None
    if duration_s is not None:
        timer = threading.Timer(duration_s, stop.set)
        timer.daemon = True
        timer.start()
    try:
        if tui:
            url = None if health_server is None else health_server.url
            code = run_tui(engine, config, stop_event=stop, health_url=url)
            return signals.exit_code(code) if code == EXIT_OK else code
        view = ProgressView(engine, config, mode, interactive=progress)
        try:
            controller = engine.start()
            view.follow_until(stop, controller)
            code = _stop_run(controller, config, view, where)
        finally:
            view.close()
        return signals.exit_code(code) if code == EXIT_OK else code
    finally:
        if timer is not None:
            timer.cancel()
        if health_server is not None:
            health_server.stop()


def _stop_run(controller: SyncController, config: QxConfig, view: ProgressView, where: str) -> int:
    """Shut the run down (unless it already ended) and say how it ended; the exit code."""
    status = controller.status_snapshot()
    if not status.is_stopped:
        try:
            controller.shutdown()
        except QxError as exc:
            print_error(f"{where}: shutdown failed: {exc}")
            return EXIT_FAILED
    final = controller.until_stopped(timeout=config.sync.shutdown_timeout_s * 2)
    view.finish(final)
    return EXIT_OK if final.name == "Shutdown" else EXIT_FAILED
