"""What the CLI shows while a run goes: a live progress view.

On a terminal the view is a small ``rich`` dashboard (status, candles stored, share of the reach
covered, gaps left, ETA at the configured rate limit, ticks/s and the last price); its last
frame shows how the run ended. Otherwise the run's structured log lines are the output, plus one
``price_history_state`` / ``funding_settlements_state`` event per evaluation and a
``live_ticks`` event every 5 s; when those lines go to ``logging.file``, short plain progress
lines (``qx-actors: ...``) still appear on stderr as the run goes.

The figures (status, candle and settlement states, ticks committed, ticks/s, last price,
updates missed) are the run's one fold of the update stream, :meth:`RunHealth.view
<qx_actors.observability.RunHealth.view>` — what ``/health`` and ``/metrics`` read too; the
view's own receiver only says when to log or echo (one line per evaluation, per status).

Whatever it prints has its secrets replaced by ``***`` (:mod:`qx_actors.redact`): the status
text carries the error's message, and the database URL is shown without its password.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from qx_actors.config import QxConfig
from qx_actors.domain.lookback import SyncMode
from qx_actors.domain.values import EXCHANGE_PAGE_LIMIT
from qx_actors.logs import get_logger
from qx_actors.observability import RunHealth, RunView
from qx_actors.redact import redact_text
from qx_actors.status import SyncStatus
from qx_actors.sync_engine import SyncController, SyncEngine
from qx_actors.updates import (
    FundingSettlementsStateUpdate,
    PriceHistoryStateUpdate,
    StatusUpdate,
    SyncUpdate,
)

__all__ = [
    "ProgressView",
]

#: Without a terminal, how often a ``live_ticks`` line is logged.
_TICK_REPORT_EVERY_S = 5.0


class ProgressView:
    """Follows a run's updates and shows them (dashboard on a TTY, log events otherwise)."""

    def __init__(
        self, engine: SyncEngine, config: QxConfig, mode: SyncMode, *, interactive: bool
    ) -> None:
        self._receiver = engine.update_receiver()
        self._health: RunHealth = engine.health
        self._config = config
        self._mode = mode
        self._interactive = interactive
        # how the run ended (finish); until then the fold's status
        self._final: SyncStatus | None = None
        self._log = get_logger(run_id=engine.run_id, mode=mode.name, actor="cli")
        # The log lines go to a file: say on the terminal how the run goes, in short lines.
        self._echo = not interactive and config.logging.file is not None
        # The last summary logged of each kind: one event per evaluation (a state published
        # again unchanged, same ``now``, is the same evaluation).
        self._logged: dict[str, dict[str, Any]] = {}
        self._live: Live | None = None

    def _log_state(self, event: str, summary: dict[str, Any], line: Callable[[], str]) -> None:
        """Log ``event`` unless it repeats the last one; when it was logged and the log goes
        to a file, say ``line()`` on the terminal."""
        if self._logged.get(event) == summary:
            return
        self._logged[event] = summary
        self._log.info(event, **summary)
        if self._echo:
            self._say(line())

    def _say(self, text: str) -> None:
        print(redact_text(f"qx-actors: {text}"), file=sys.stderr, flush=True)

    def _apply(self, update: SyncUpdate) -> None:
        match update:
            case StatusUpdate(status=status):
                if self._echo:
                    self._say(f"status {status.text}")
            case PriceHistoryStateUpdate(state=history) if not self._interactive:
                self._log_state(
                    "price_history_state",
                    history.summary(),
                    lambda: (
                        f"candles {history.coverage_ratio:.2%} of the reach stored, "
                        f"{history.missing_minutes:,} minute(s) missing, "
                        f"{len(history.gaps)} gap(s)"
                    ),
                )
            case FundingSettlementsStateUpdate(state=funding) if not self._interactive:
                summary = funding.summary()
                self._log_state(
                    "funding_settlements_state",
                    summary,
                    lambda: (
                        f"settlements {summary['earliest']} .. {summary['latest']}, "
                        f"missing {summary['missing']}"
                    ),
                )

    def _view(self) -> RunView:
        view = self._health.view()
        if self._final is not None:
            return replace(view, status=self._final)
        return view

    def ticks_per_second(self) -> float:
        """Ticks committed per second over the last five seconds."""
        return self._view().ticks_per_second(5)

    def render(self) -> Table:
        """The dashboard as a rich table."""
        view = self._view()
        table = Table(title=f"qx-actors {self._mode}", show_header=False, expand=False)
        table.add_column("what", style="bold")
        table.add_column("value")
        table.add_row("status", view.status.text)
        history = view.history
        if history is not None:
            summary = history.summary()
            table.add_row("candles reach", f"{summary['reach']} .. now")
            table.add_row("stored", f"{summary['earliest']} .. {summary['latest']}")
            table.add_row("covered", f"{history.coverage_ratio:.2%}")
            table.add_row("missing minutes", f"{history.missing_minutes:,}")
            table.add_row("gaps left", str(len(history.gaps)))
            rate = self._config.sync.rest_rate_limit_per_s
            requests = -(-history.missing_minutes // EXCHANGE_PAGE_LIMIT)
            table.add_row("ETA at rate limit", str(timedelta(seconds=round(requests / rate))))
        if view.funding is not None:
            funding = view.funding.summary()
            table.add_row(
                "settlements",
                f"{funding['earliest']} .. {funding['latest']}, missing {funding['missing']}",
            )
        if self._mode.live_feed_active:
            price = "-" if view.last_price is None else f"{view.last_price:,.1f}"
            table.add_row("last price", price)
            table.add_row("ticks", f"{view.ticks:,} ({view.ticks_per_second(5):.1f}/s)")
        if view.lagged:
            table.add_row("updates missed", str(view.lagged))
        return table

    def follow_until(self, stop: threading.Event, controller: SyncController) -> None:
        """Show updates until ``stop`` is set or the run ends (the dashboard stays up until
        :meth:`finish` or :meth:`close`, so that it shows the shutdown too)."""
        if self._interactive and self._live is None:
            self._live = Live(self.render(), console=Console(file=sys.stderr), refresh_per_second=4)
            self._live.start()
        next_report = time.monotonic() + _TICK_REPORT_EVERY_S
        while not stop.is_set() and not controller.status_snapshot().is_stopped:
            try:
                self._apply(self._receiver.get(timeout=0.25))
            except TimeoutError:
                pass
            except Exception:  # the receiver closed: the run ended
                break
            if self._live is not None:
                self._live.update(self.render())
            elif self._mode.live_feed_active and time.monotonic() >= next_report:
                next_report = time.monotonic() + _TICK_REPORT_EVERY_S
                view = self._view()
                self._log.info(
                    "live_ticks",
                    last_price=view.last_price,
                    ticks=view.ticks,
                    ticks_per_s=view.ticks_per_second(5),
                    status=view.status.text,
                )
                if self._echo:
                    price = "-" if view.last_price is None else f"{view.last_price:,.1f}"
                    self._say(
                        f"ticks {view.ticks:,} ({view.ticks_per_second(5):.1f}/s), "
                        f"last price {price}"
                    )

    def _drain(self) -> None:
        """Apply every update still queued (the shutdown's statuses among them)."""
        while (update := self._receiver.get_nowait()) is not None:
            self._apply(update)

    def finish(self, status: SyncStatus) -> None:
        """Show how the run ended (the dashboard's last frame too) and say it."""
        self._drain()
        self._final = status
        self.close()
        print(f"qx-actors: run ended: {status.text}", file=sys.stderr)

    def close(self) -> None:
        """Take the dashboard down, showing the current state as its last frame (idempotent)."""
        live, self._live = self._live, None
        if live is not None:
            live.update(self.render(), refresh=True)
            live.stop()
