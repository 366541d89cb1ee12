"""What the CLI shows: a live progress view of a run, and the database's state.

On a terminal the view is a small ``rich`` dashboard (status, candles stored, share of the reach
covered, gaps left, ETA at the configured rate limit, ticks/s and the last price); its last
frame shows how the run ended. Otherwise the run's structured log lines are the output, plus one
``price_history_state`` / ``funding_settlements_state`` event per evaluation and a
``live_ticks`` event every 5 s; when those lines go to ``logging.file``, short plain progress
lines (``qx-actors: ...``) still appear on stderr as the run goes.

``status`` and ``plan`` print rich tables; piped, they are as wide as their content (never cut
at 80 columns).

Whatever it prints has its secrets replaced by ``***`` (:mod:`qx_actors.redact`): the status
text carries the error's message, and the database URL is shown without its password.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from datetime import timedelta
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from qx_actors.config import QxConfig
from qx_actors.domain.funding import FundingSettlementsState
from qx_actors.domain.history import PriceHistoryState
from qx_actors.domain.lookback import SyncMode
from qx_actors.domain.timeutil import utc_now
from qx_actors.domain.validation import format_utc
from qx_actors.logs import get_logger
from qx_actors.redact import redact_text, redact_url
from qx_actors.status import SyncStatus
from qx_actors.sync_engine import SyncController, SyncEngine
from qx_actors.updates import (
    FundingSettlementsStateUpdate,
    Lagged,
    PriceHistoryStateUpdate,
    PriceTickUpdate,
    StatusUpdate,
    SyncUpdate,
)

_CANDLES_PER_REQUEST = 1000
#: Without a terminal, how often a ``live_ticks`` line is logged.
_TICK_REPORT_EVERY_S = 5.0
#: Piped output: tables are as wide as their content, up to this many columns.
_PIPED_WIDTH = 1000


class ProgressView:
    """Follows a run's updates and shows them (dashboard on a TTY, log events otherwise)."""

    def __init__(
        self, engine: SyncEngine, config: QxConfig, mode: SyncMode, *, interactive: bool
    ) -> None:
        self._receiver = engine.update_receiver()
        self._config = config
        self._mode = mode
        self._interactive = interactive
        self._status: SyncStatus = engine.status_snapshot()
        self._history: PriceHistoryState | None = None
        self._funding: FundingSettlementsState | None = None
        self._tick_times: deque[float] = deque(maxlen=5000)
        self._last_price: float | None = None
        self._ticks = 0
        self._lagged = 0
        self._log = get_logger(run_id=engine.run_id, mode=mode.name, actor="cli")
        # The log lines go to a file: say on the terminal how the run goes, in short lines.
        self._echo = not interactive and config.logging.file is not None
        # The last summary logged of each kind: one event per evaluation (a state published
        # again unchanged, same ``now``, is the same evaluation).
        self._logged: dict[str, dict[str, Any]] = {}
        self._live: Live | None = None

    def _log_state(self, event: str, summary: dict[str, Any]) -> bool:
        """Log ``event`` unless it repeats the last one; whether it was logged."""
        if self._logged.get(event) == summary:
            return False
        self._logged[event] = summary
        self._log.info(event, **summary)
        return True

    def _say(self, text: str) -> None:
        print(redact_text(f"qx-actors: {text}"), file=sys.stderr, flush=True)

    def _apply(self, update: SyncUpdate) -> None:
        match update:
            case StatusUpdate(status=status):
                self._status = status
                if self._echo:
                    self._say(f"status {status.text}")
            case PriceHistoryStateUpdate(state=state):
                self._history = state
                if not self._interactive:
                    summary = state.summary()
                    if self._log_state("price_history_state", summary) and self._echo:
                        self._say(
                            f"candles {state.coverage_ratio:.2%} of the reach stored, "
                            f"{state.missing_minutes:,} minute(s) missing, "
                            f"{len(state.gaps)} gap(s)"
                        )
            case FundingSettlementsStateUpdate(state=state):
                self._funding = state
                if not self._interactive:
                    summary = state.summary()
                    if self._log_state("funding_settlements_state", summary) and self._echo:
                        self._say(
                            f"settlements {summary['earliest']} .. {summary['latest']}, "
                            f"missing {summary['missing']}"
                        )
            case PriceTickUpdate(tick=tick):
                self._ticks += 1
                self._last_price = tick.last_price
                self._tick_times.append(time.monotonic())
            case Lagged(missed=missed):
                self._lagged += missed

    def ticks_per_second(self) -> float:
        """Ticks per second over the last five seconds."""
        now = time.monotonic()
        recent = [t for t in self._tick_times if now - t <= 5.0]
        return len(recent) / 5.0

    def render(self) -> Table:
        """The dashboard as a rich table."""
        table = Table(title=f"qx-actors {self._mode}", show_header=False, expand=False)
        table.add_column("what", style="bold")
        table.add_column("value")
        table.add_row("status", self._status.text)
        history = self._history
        if history is not None:
            summary = history.summary()
            table.add_row("candles reach", f"{summary['reach']} .. now")
            table.add_row("stored", f"{summary['earliest']} .. {summary['latest']}")
            table.add_row("covered", f"{history.coverage_ratio:.2%}")
            table.add_row("missing minutes", f"{history.missing_minutes:,}")
            table.add_row("gaps left", str(len(history.gaps)))
            rate = self._config.sync.rest_rate_limit_per_s
            requests = -(-history.missing_minutes // _CANDLES_PER_REQUEST)
            table.add_row("ETA at rate limit", str(timedelta(seconds=round(requests / rate))))
        if self._funding is not None:
            funding = self._funding.summary()
            table.add_row(
                "settlements",
                f"{funding['earliest']} .. {funding['latest']}, missing {funding['missing']}",
            )
        if self._mode.live_feed_active:
            price = "-" if self._last_price is None else f"{self._last_price:,.1f}"
            table.add_row("last price", price)
            table.add_row("ticks", f"{self._ticks:,} ({self.ticks_per_second():.1f}/s)")
        if self._lagged:
            table.add_row("updates missed", str(self._lagged))
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
                self._log.info(
                    "live_ticks",
                    last_price=self._last_price,
                    ticks=self._ticks,
                    ticks_per_s=self.ticks_per_second(),
                    status=self._status.text,
                )
                if self._echo:
                    price = "-" if self._last_price is None else f"{self._last_price:,.1f}"
                    self._say(
                        f"ticks {self._ticks:,} ({self.ticks_per_second():.1f}/s), "
                        f"last price {price}"
                    )

    def _drain(self) -> None:
        """Apply every update still queued (the shutdown's statuses among them)."""
        while (update := self._receiver.get_nowait()) is not None:
            self._apply(update)

    def finish(self, status: SyncStatus) -> None:
        """Show how the run ended (the dashboard's last frame too) and say it."""
        self._drain()
        self._status = status
        self.close()
        print(f"qx-actors: run ended: {status.text}", file=sys.stderr)

    def close(self) -> None:
        """Take the dashboard down, showing the current state as its last frame (idempotent)."""
        live, self._live = self._live, None
        if live is not None:
            live.update(self.render(), refresh=True)
            live.stop()


def print_database_status(config: QxConfig) -> int:
    """Print the price-history and funding state of the configured database; exit code."""
    from qx_actors.storage import Database

    now = utc_now()
    sync = config.sync
    with Database(config.database) as database:
        facts = database.price_history_facts(
            scan_from=sync.price_history_flag_gap_from(now, sync.price_history_reach_at(now))
        )
        scan_from = now - timedelta(hours=sync.funding_settlement_flag_missing_range_h)
        funding_facts = database.funding_facts(scan_from=scan_from)
    history = PriceHistoryState.evaluate(
        facts, reach=sync.price_history_reach_at(now), now=now, recheck_verified_empty=False
    )
    funding = FundingSettlementsState.evaluate(
        funding_facts, reach=sync.funding_settlement_reach_at(now), now=now, scan_from=scan_from
    )
    console = _stdout_console()
    console.print(_summary_table("price history", history.summary()))
    if history.gaps:
        console.print("gaps: " + ", ".join(str(g) for g in history.gaps[:10]))
    if history.verified_empty:
        console.print(
            "verified empty (exchange downtime): "
            + ", ".join(str(r) for r in history.verified_empty[:10])
        )
    console.print(_summary_table("funding settlements", funding.summary()))
    return 0


def print_plan(config: QxConfig) -> int:
    """Dry run: the ranges a backfill would fetch now, requests and ETA; writes nothing."""
    from qx_actors.domain.funding import FundingSettlementsFacts
    from qx_actors.domain.history import PriceHistoryFacts
    from qx_actors.errors import StorageError
    from qx_actors.storage import Database

    now = utc_now()
    sync = config.sync
    history_scan = sync.price_history_flag_gap_from(now, sync.price_history_reach_at(now))
    funding_scan = now - timedelta(hours=sync.funding_settlement_flag_missing_range_h)
    try:
        with Database(config.database) as database:
            facts = database.price_history_facts(scan_from=history_scan)
            funding_facts = database.funding_facts(scan_from=funding_scan)
    except StorageError:  # no database yet: everything is to be fetched
        facts = PriceHistoryFacts(None, None, (), (), None)
        funding_facts = FundingSettlementsFacts(None, None, ())
    history = PriceHistoryState.evaluate(
        facts, reach=sync.price_history_reach_at(now), now=now, recheck_verified_empty=True
    )
    funding = FundingSettlementsState.evaluate(
        funding_facts, reach=sync.funding_settlement_reach_at(now), now=now, scan_from=funding_scan
    )
    batch = sync.price_history_batch_size
    table = Table(title="plan (dry run: nothing is written)")
    for column in ("what", "kind", "from", "to", "items", "requests"):
        table.add_column(column)
    requests = 0
    for download in history.downloads(newest_gap_first=False):
        count = download.requests(batch)
        requests += count
        table.add_row(
            "candles", download.kind.value, format_utc(download.start),
            format_utc(download.end),
            f"{download.minutes:,}", f"{count:,}",
        )  # fmt: skip
    for settlement_download in funding.downloads():
        items = len(settlement_download.times())
        count = max(1, -(-items // _CANDLES_PER_REQUEST))
        requests += count
        table.add_row(
            "settlements", settlement_download.kind.value,
            format_utc(settlement_download.start), format_utc(settlement_download.end),
            f"{items:,}", f"{count:,}",
        )  # fmt: skip
    console = _stdout_console()
    console.print(f"database: {redact_url(config.database)}", markup=False)
    console.print(table)
    eta = timedelta(seconds=round(requests / sync.rest_rate_limit_per_s))
    console.print(
        f"{requests:,} requests; ETA {eta} at {sync.rest_rate_limit_per_s:g} request(s)/s "
        "(sync.rest_rate_limit_per_s)"
    )
    return 0


def _stdout_console() -> Console:
    """The console for tables on stdout: the terminal's width on a terminal; piped, wide
    enough that no table is cut or wrapped (rich would assume 80 columns)."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=_PIPED_WIDTH, no_color=True, highlight=False)


def _summary_table(title: str, summary: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in summary.items():
        table.add_row(key, str(value))
    return table
