"""The sync TUI: a Textual app that starts a run, follows it as a subscriber, and shuts it down.

Layout: a header (run id, mode, status, uptime), then the state column (price history,
funding settlements, live feed) beside the log pane of the run's own events (long lines wrap);
a footer lists the keys. The panes are drawn four times a second from the run's one fold of
the update stream, :meth:`RunHealth.view <qx_actors.observability.RunHealth.view>` (what
``/health``, ``/metrics`` and the progress lines read too). The app is also a subscriber like
any other, for its log pane's own lines (an evaluation, at debug; ``tui_lagged``): its receiver
is created before ``engine.start()`` and read by a thread of its own (``qx-tui-updates``). The
engine never waits for the TUI: the receiver is bounded and reports ``Lagged`` when the TUI
falls behind.

Keys: ``q`` (or Ctrl-C) shuts the run down gracefully and exits once it is ``Shutdown``; a
second ``q`` forces (exit code 130, as a second Ctrl-C in the CLI); ``tab`` switches pane
focus; arrows / PgUp / PgDn scroll the focused pane; ``l`` toggles the log pane; ``f`` cycles
the log level filter.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections import deque
from types import FrameType
from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Footer, RichLog, Sparkline, Static

from qx_actors.app.tui import logtap, render
from qx_actors.config import QxConfig
from qx_actors.domain.timeutil import utc_now
from qx_actors.errors import QxError
from qx_actors.observability import RunView
from qx_actors.redact import redact_text
from qx_actors.status import State, SyncStatus
from qx_actors.sync_engine import SyncController, SyncEngine
from qx_actors.updates import (
    FundingSettlementsStateUpdate,
    Lagged,
    PriceHistoryStateUpdate,
    ReceiverClosed,
    SyncUpdate,
    UpdateReceiver,
)

__all__ = [
    "EXIT_FAILED",
    "EXIT_FORCED",
    "EXIT_OK",
    "RATE_WINDOW_S",
    "REFRESH_HZ",
    "SPARK_SECONDS",
    "SyncTui",
    "TextPane",
    "run_tui",
]

EXIT_OK = 0
EXIT_FAILED = 1
#: A forced exit (second ``q``), as a second Ctrl-C in the CLI.
EXIT_FORCED = 130

#: Seconds of ticks/s history in the sparkline.
SPARK_SECONDS = 60
#: The ticks/s figure is the average over this many seconds.
RATE_WINDOW_S = 5
#: Redraws per second.
REFRESH_HZ = 4
#: Lines the log pane keeps.
_LOG_LINES = 5000


class TextPane(Static):
    """A ``Static`` that remembers its text as plain text (what tests and screen readers read)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plain = ""

    def show(self, text: Text) -> None:
        """Replace the content (only when it changed)."""
        if text.plain == self.plain and self.plain:
            return
        self.plain = text.plain
        self.update(text)


class SyncTui(App[int]):
    """The ``qx-actors sync --tui`` app; ``run()`` returns the exit code."""

    TITLE = "qx-actors sync"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    #header { height: auto; padding: 0 1; background: $boost; }
    #body { height: 1fr; }
    #state { width: 45%; min-width: 40; max-width: 66; }
    #state.wide { width: 1fr; max-width: 100%; }
    #state:focus, #log:focus { border: double $accent; }
    #state, #log { border: round $primary-darken-2; }
    .pane { height: auto; border: round $panel-lighten-2; padding: 0 1; }
    #live { height: auto; }
    #live-text { height: auto; }
    #sparkline { height: 2; margin-top: 1; }
    #log { width: 1fr; overflow-x: hidden; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit_run", "Quit (again: force)"),
        Binding("ctrl+c", "quit_run", "Quit", show=False, priority=True),
        Binding("ctrl+q", "quit_run", "Quit", show=False, priority=True),
        Binding("tab", "app.focus_next", "Switch pane", priority=True),
        Binding("shift+tab", "app.focus_previous", "Previous pane", show=False, priority=True),
        Binding("l", "toggle_log", "Log pane"),
        Binding("f", "cycle_filter", "Log level"),
    ]

    def __init__(
        self,
        engine: SyncEngine,
        config: QxConfig,
        *,
        stop_event: threading.Event | None = None,
        health_url: str | None = None,
        min_level: str = "info",
    ) -> None:
        super().__init__()
        self._engine = engine
        self._config = config
        self._stop_event = stop_event
        self._health_url = health_url
        # Created before start(): the TUI sees every update of the run.
        self._receiver: UpdateReceiver = engine.update_receiver()
        self.tap = logtap.LogTap(engine.run_id)
        self._installed: Any = None
        self._entries: deque[logtap.LogEntry] = deque(maxlen=5000)
        # the lines the log pane shows (each may wrap over several rows)
        self._shown: deque[str] = deque(maxlen=_LOG_LINES)
        self.min_level = min_level
        self.controller: SyncController | None = None
        self._reader_stop = threading.Event()
        self._reader: threading.Thread | None = None
        self._shutdown_thread: threading.Thread | None = None
        self._quit_presses = 0
        self.forced = False
        self._started_at: float | None = None
        self._stopped_at: float | None = None
        self._note: str | None = None
        self._exiting = False
        self._header = TextPane(id="header")

    # --- layout ---------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield self._header
        with Horizontal(id="body"):
            with VerticalScroll(id="state"):
                yield TextPane(id="history", classes="pane")
                yield TextPane(id="funding", classes="pane")
                with Vertical(id="live", classes="pane"):
                    yield TextPane(id="live-text")
                    yield Sparkline([0.0], id="sparkline")
            yield RichLog(id="log", max_lines=_LOG_LINES, wrap=True, min_width=20)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#state").border_title = "sync state"
        self.query_one("#history").border_title = "price history"
        self.query_one("#funding").border_title = "funding settlements"
        self.query_one("#live").border_title = "live"
        self.query_one("#live").border_subtitle = f"ticks/s, last {SPARK_SECONDS} s"
        self._title_log()
        self._installed = logtap.install(self.tap)
        self._started_at = time.monotonic()
        try:
            self.controller = self._engine.start()
        except QxError as exc:
            self._note = redact_text(f"the run did not start: {type(exc).__name__}: {exc}")
            self._stopped_at = time.monotonic()
            self._refresh()
            self._exit_with(EXIT_FAILED)
            return
        self._reader = threading.Thread(
            target=self._read_updates, name="qx-tui-updates", daemon=True
        )
        self._reader.start()
        self.set_interval(1 / REFRESH_HZ, self._refresh)
        self.query_one("#log", RichLog).focus()
        self._refresh()

    def on_unmount(self) -> None:
        self._reader_stop.set()
        if self._reader is not None:
            self._reader.join(2)
        if self._installed is not None:
            logtap.restore(self._installed)
            self._installed = None

    # --- the subscriber -------------------------------------------------------------------

    def _read_updates(self) -> None:
        """The reader thread: the log pane's lines about updates until the run or the app
        ends."""
        while not self._reader_stop.is_set():
            try:
                update = self._receiver.get(timeout=0.2)
            except TimeoutError:
                continue
            except ReceiverClosed:
                return
            self._log_update(update)

    def _log_update(self, update: SyncUpdate) -> None:
        """The pane's own lines about updates (debug: a line per evaluation)."""
        match update:
            case PriceHistoryStateUpdate(state=state):
                self._own("debug", "price_history_state", state.summary())
            case FundingSettlementsStateUpdate(state=state):
                self._own("debug", "funding_settlements_state", state.summary())
            case Lagged(missed=missed):
                self._own("warning", "tui_lagged", {"missed": missed})

    def _own(self, level: str, event: str, fields: dict[str, Any]) -> None:
        self.tap.add(logtap.LogEntry(time.time(), level, event, "tui", tuple(fields.items())))

    # --- drawing --------------------------------------------------------------------------

    @property
    def model(self) -> RunView:
        """The run's figures now (the run's one fold: ``engine.health.view()``)."""
        return self._engine.health.view()

    def status(self) -> SyncStatus:
        """The run's current status (the hub's snapshot: never lost to a lagging receiver)."""
        return self._engine.status_snapshot()

    def _uptime(self) -> float:
        if self._started_at is None:
            return 0.0
        end = self._stopped_at if self._stopped_at is not None else time.monotonic()
        return end - self._started_at

    def _refresh(self) -> None:
        status = self.status()
        if status.is_stopped and self._stopped_at is None:
            self._stopped_at = time.monotonic()
        if self._stop_event is not None and self._stop_event.is_set():
            self._begin_shutdown()
        view = self.model
        self._header.show(
            render.header_text(
                run_id=self._engine.run_id,
                mode=str(self._engine.mode),
                status=status,
                uptime_s=self._uptime(),
                note=self._note,
                lagged=view.lagged,
                health_url=self._health_url,
            )
        )
        self._draw_state(view)
        self._draw_log()
        if status.is_stopped:
            self._on_stopped(status)

    def _draw_state(self, view: RunView) -> None:
        sync = self._config.sync
        history, funding = view.history, view.funding
        last_price, tick_time, ticks = view.last_price, view.last_tick_time, view.ticks
        width = max(10, self.query_one("#history").content_size.width or 40)
        self.query_one("#history", TextPane).show(
            render.history_text(
                history,
                rate_per_s=sync.rest_rate_limit_per_s,
                page_size=sync.price_history_batch_size,
                bar_width=width,
            )
        )
        self.query_one("#funding", TextPane).show(render.funding_text(funding))
        series = view.tick_series(SPARK_SECONDS)
        age = None if tick_time is None else (utc_now() - tick_time).total_seconds()
        counters = self._counters()
        self.query_one("#live-text", TextPane).show(
            render.live_text(
                active=self._engine.mode.live_feed_active,
                last_price=last_price,
                tick_time=tick_time,
                tick_age_s=age,
                ticks=ticks,
                rate_per_s=view.ticks_per_second(RATE_WINDOW_S),
                counters=counters,
            )
        )
        sparkline = self.query_one("#sparkline", Sparkline)
        sparkline.display = self._engine.mode.live_feed_active
        sparkline.data = series

    def _counters(self) -> dict[str, dict[str, Any]]:
        try:
            counters = self._engine.health.snapshot().get("counters", {})
        except Exception:  # the health figures are a nicety; never break the screen
            return {}
        return {str(k): dict(v) for k, v in counters.items() if isinstance(v, dict)}

    def _title_log(self) -> None:
        self.query_one("#log", RichLog).border_title = f"log ≥ {self.min_level}  (f: filter)"

    def _is_shown(self, entry: logtap.LogEntry) -> bool:
        return logtap.level_rank(entry.level) >= logtap.level_rank(self.min_level)

    def _draw_log(self) -> None:
        fresh = list(self.tap.drain())
        if not fresh:
            return
        self._entries.extend(fresh)
        self._write_log([entry.line() for entry in fresh if self._is_shown(entry)])

    def _write_log(self, lines: list[str]) -> None:
        if not lines:
            return
        log = self.query_one("#log", RichLog)
        # follow the tail, unless the reader scrolled up
        follow = log.is_vertical_scroll_end and not log.is_vertical_scrollbar_grabbed
        for line in lines:
            self._shown.append(line)
            # folded, not cut, at the pane's edge: a long line wraps onto the next rows
            log.write(Text(line, overflow="fold"), scroll_end=False)
        if follow:
            log.scroll_end(animate=False, immediate=True, x_axis=False)

    def log_lines(self) -> list[str]:
        """The lines the log pane holds now (each whole, however it wraps)."""
        return [line for line in self._shown if line]

    # --- keys -----------------------------------------------------------------------------

    def action_toggle_log(self) -> None:
        """``l``: hide or show the log pane (the state column takes the width)."""
        log = self.query_one("#log", RichLog)
        log.display = not log.display
        self.query_one("#state").set_class(not log.display, "wide")
        if not log.display and self.focused is log:
            self.query_one("#state").focus()

    def action_cycle_filter(self) -> None:
        """``f``: the next minimum level (debug, info, warning, error, debug, ...)."""
        index = (logtap.level_rank(self.min_level) + 1) % len(logtap.LEVELS)
        self.set_min_level(logtap.LEVELS[index])

    def set_min_level(self, level: str) -> None:
        """Show log entries at ``level`` or above (the pane is redrawn from its buffer)."""
        self.min_level = level
        self._title_log()
        self._draw_log()
        self.query_one("#log", RichLog).clear()
        self._shown.clear()
        self._write_log([entry.line() for entry in self._entries if self._is_shown(entry)])

    def action_quit_run(self) -> None:
        """``q``: graceful shutdown, then exit; a second ``q`` forces the exit."""
        self._quit_presses += 1
        status = self.status()
        if self.controller is None or status.is_stopped:
            self._on_stopped(status, asked=True)
            return
        if self._quit_presses == 1:
            self._begin_shutdown()
            return
        # A second q forces: leave without waiting for the graceful shutdown.
        self.forced = True
        self._note = "forced exit"
        self._exit_with(EXIT_FORCED)

    def _begin_shutdown(self) -> None:
        controller = self.controller
        if controller is None or self._shutdown_thread is not None:
            return
        self._note = "shutting down… (q again to force)"
        self._own("info", "tui_shutdown_requested", {})
        self._shutdown_thread = threading.Thread(
            target=self._shut_down_run, args=(controller,), name="qx-tui-shutdown", daemon=True
        )
        self._shutdown_thread.start()

    def _shut_down_run(self, controller: SyncController) -> None:
        # already stopped, failed, or timed out: the status tells
        with contextlib.suppress(QxError):
            controller.shutdown()

    def _on_stopped(self, status: SyncStatus, *, asked: bool = False) -> None:
        """The run ended: exit on ``Shutdown``; after ``Failed`` stay until asked (or stopped),
        so that the error can be read."""
        if self._exiting:
            return
        if status.state is State.SHUTDOWN:
            self._note = None
            self._exit_with(EXIT_OK)
            return
        stop_requested = self._stop_event is not None and self._stop_event.is_set()
        if asked or stop_requested or self._shutdown_thread is not None:
            self._exit_with(EXIT_FAILED)
        else:
            self._note = "the run failed; press q to exit"

    def _exit_with(self, code: int) -> None:
        if self._exiting:
            return
        self._exiting = True
        if code != EXIT_FORCED:
            self._refresh_header_only()
        self.exit(code, return_code=code)

    def _refresh_header_only(self) -> None:
        self._header.show(
            render.header_text(
                run_id=self._engine.run_id,
                mode=str(self._engine.mode),
                status=self.status(),
                uptime_s=self._uptime(),
                note=self._note,
                lagged=self.model.lagged,
                health_url=self._health_url,
            )
        )

    def join_threads(self, timeout: float) -> None:
        """Wait (bounded) for the reader and shutdown threads (after a forced exit, say)."""
        deadline = time.monotonic() + timeout
        for thread in (self._reader, self._shutdown_thread):
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def header(self) -> str:
        """The header as plain text (its last text, also once the app has exited)."""
        return self._header.plain


def run_tui(
    engine: SyncEngine,
    config: QxConfig,
    *,
    stop_event: threading.Event | None = None,
    health_url: str | None = None,
    headless: bool = False,
) -> int:
    """Run ``engine`` (not yet started) under the TUI until it is shut down; the exit code.

    ``q`` shuts down gracefully (exit 0 on ``Shutdown``, 1 if the run failed); a second ``q``
    forces (130). ``stop_event`` (e.g. set by a ``--duration`` timer or a SIGTERM handler)
    starts the graceful shutdown as ``q`` does. SIGTERM sets it while the TUI runs (the
    terminal is in raw mode: Ctrl-C arrives as a key, not as SIGINT). However the app ends,
    the run is not left running unless the exit was forced. ``headless``: no terminal output
    (tests).
    """
    stop = stop_event or threading.Event()
    app = SyncTui(engine, config, stop_event=stop, health_url=health_url)
    previous = _install_sigterm(stop)
    try:
        code = app.run(headless=headless)
    finally:
        _restore_sigterm(previous)
    if not app.forced and app.controller is not None:
        final = _ensure_stopped(app.controller, config)
        if code is None:
            code = EXIT_OK if final.state is State.SHUTDOWN else EXIT_FAILED
        print(f"qx-actors: run ended: {final.text}", file=sys.stderr)
    elif app.forced:
        print("qx-actors: forced exit", file=sys.stderr)
    return EXIT_FAILED if code is None else code


def _ensure_stopped(controller: SyncController, config: QxConfig) -> SyncStatus:
    status = controller.status_snapshot()
    if not status.is_stopped:
        with contextlib.suppress(QxError):
            controller.shutdown()
    try:
        return controller.until_stopped(timeout=config.sync.shutdown_timeout_s * 2)
    except TimeoutError:
        return controller.status_snapshot()


def _install_sigterm(stop: threading.Event) -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None

    def _handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    return signal.signal(signal.SIGTERM, _handler)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
