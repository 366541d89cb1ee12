"""Running a sync as a foreground service: until a signal, the progress view or the TUI, and
the health server on ``metrics.listen``. Shared by ``qx-actors sync`` and ``qx-actors demo``."""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

from qx_actors.app.progress import ProgressView
from qx_actors.app.tui import run_tui
from qx_actors.config import QxConfig, parse_listen
from qx_actors.domain.lookback import SyncMode
from qx_actors.errors import QxError
from qx_actors.observability.health import HealthServer
from qx_actors.redact import redact_text
from qx_actors.sync_engine import SyncController, SyncEngine

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def print_error(message: str) -> None:
    """Print ``message`` on stderr with every known secret replaced by ``***``."""
    print(redact_text(message), file=sys.stderr)


def listen_error_text(exc: OSError) -> str:
    """``address already in use`` rather than asyncio's ``[Errno 98] error while ...``."""
    if exc.errno is not None:
        return os.strerror(exc.errno).lower()
    return str(exc)


def _install_signal_handlers(stop: threading.Event) -> None:
    presses = {"count": 0}

    def _handler(signum: int, frame: FrameType | None) -> None:
        presses["count"] += 1
        if presses["count"] > 1:
            # A second Ctrl-C forces: leave without waiting for the graceful shutdown.
            print("\nqx-actors: forced exit", file=sys.stderr)
            raise SystemExit(130)
        stop.set()

    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)


def run_until_signal(
    config: QxConfig,
    mode: SyncMode,
    *,
    progress: bool,
    stop: threading.Event | None = None,
    tui: bool = False,
) -> int:
    """Run a sync until SIGINT/SIGTERM (or ``stop``) or until it fails; the exit code.

    With ``tui`` the Textual UI is the view (``q`` shuts down); otherwise log lines and, on a
    terminal, the progress table."""
    stop = stop or threading.Event()
    _install_signal_handlers(stop)
    engine = SyncEngine.from_config(config, mode)
    health_server = None
    if config.metrics.listen is not None:
        host, port = parse_listen(config.metrics.listen)
        try:
            health_server = HealthServer(engine.health, engine.run_id, host, port).start()
        except OSError as exc:
            print_error(
                f"qx-actors: cannot serve metrics.listen {host}:{port}: {listen_error_text(exc)}"
            )
            return EXIT_FAILED
        print(f"qx-actors: health {health_server.url}/health, metrics {health_server.url}/metrics",
              file=sys.stderr)  # fmt: skip
    if tui:
        try:
            url = None if health_server is None else health_server.url
            return run_tui(engine, config, stop_event=stop, health_url=url)
        finally:
            if health_server is not None:
                health_server.stop()
    view = ProgressView(engine, config, mode, interactive=progress)
    try:
        controller = engine.start()
        view.follow_until(stop, controller)
        return _stop_run(controller, config, view)
    finally:
        view.close()
        if health_server is not None:
            health_server.stop()


def _stop_run(controller: SyncController, config: QxConfig, view: ProgressView) -> int:
    """Shut the run down (unless it already ended) and say how it ended; the exit code."""
    status = controller.status_snapshot()
    if not status.is_stopped:
        try:
            controller.shutdown()
        except QxError as exc:
            print_error(f"qx-actors: shutdown failed: {exc}")
            return EXIT_FAILED
    final = controller.until_stopped(timeout=config.sync.shutdown_timeout_s * 2)
    view.finish(final)
    return EXIT_OK if final.name == "Shutdown" else EXIT_FAILED
