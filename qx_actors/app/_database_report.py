"""``qx-actors status`` and ``qx-actors plan``: the database's state and what a backfill would
fetch, as rich tables on stdout.

Piped, the tables are as wide as their content (never cut at 80 columns). The database URL is
shown without its password (:mod:`qx_actors.redact`).
"""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Any

from rich.console import Console
from rich.table import Table

from qx_actors.config import QxConfig
from qx_actors.domain.funding import FundingSettlementsFacts, FundingSettlementsState
from qx_actors.domain.history import PriceHistoryFacts, PriceHistoryState
from qx_actors.domain.passes import PassWindow, resolve_pass
from qx_actors.domain.timeutil import format_utc, utc_now
from qx_actors.domain.values import EXCHANGE_PAGE_LIMIT
from qx_actors.errors import StorageError
from qx_actors.redact import redact_url
from qx_actors.storage import Database

#: Piped output: tables are as wide as their content, up to this many columns.
_PIPED_WIDTH = 1000


def _read_facts(
    config: QxConfig, window: PassWindow
) -> tuple[PriceHistoryFacts, FundingSettlementsFacts]:
    with Database(config.database, catalog_dir=config.catalog_dir) as database:
        facts = database.price_history_facts()
        funding_facts = database.funding_facts(scan_from=window.funding_query_from)
    return facts, funding_facts


def _evaluate(
    window: PassWindow,
    facts: PriceHistoryFacts,
    funding_facts: FundingSettlementsFacts,
    *,
    recheck_verified_empty: bool,
) -> tuple[PriceHistoryState, FundingSettlementsState]:
    history = PriceHistoryState.evaluate(
        facts,
        reach=window.price_history_reach,
        now=window.now,
        recheck_verified_empty=recheck_verified_empty,
    )
    funding = FundingSettlementsState.evaluate(
        funding_facts,
        reach=window.funding_reach,
        now=window.now,
        scan_from=window.funding_scan_from,
    )
    return history, funding


def print_database_status(config: QxConfig) -> int:
    """Print the price-history and funding state of the configured database; exit code."""
    window = resolve_pass(config.sync, config.sync_mode, utc_now())
    facts, funding_facts = _read_facts(config, window)
    history, funding = _evaluate(window, facts, funding_facts, recheck_verified_empty=False)
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
    window = resolve_pass(config.sync, config.sync_mode, utc_now())
    try:
        facts, funding_facts = _read_facts(config, window)
    except StorageError:  # no database yet: everything is to be fetched
        facts = PriceHistoryFacts(None, None, (), (), None)
        funding_facts = FundingSettlementsFacts(None, None, ())
    history, funding = _evaluate(window, facts, funding_facts, recheck_verified_empty=True)
    sync = config.sync
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
        count = max(1, -(-items // EXCHANGE_PAGE_LIMIT))
        requests += count
        table.add_row(
            "settlements", settlement_download.kind.value,
            format_utc(settlement_download.start), format_utc(settlement_download.end),
            f"{items:,}", f"{count:,}",
        )  # fmt: skip
    console = _stdout_console()
    console.print(f"database: {redact_url(config.database)}", markup=False)
    if table.row_count:
        console.print(table)
    else:
        console.print(
            "nothing to fetch: the database covers the reach (dry run: nothing is written)"
        )
    eta = timedelta(seconds=round(requests / sync.rest_rate_limit_per_s))
    console.print(
        f"{requests:,} requests; ETA {eta} at {sync.rest_rate_limit_per_s:g} request(s)/s "
        "(sync.rest_rate_limit_per_s)"
    )
    return 0


class _PipeConsole(Console):
    """A rich console whose closed pipe is a ``BrokenPipeError`` for the command to end on
    (exit 141, as every other command), not rich's own ``SystemExit(1)``."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def _stdout_console() -> Console:
    """The console for tables on stdout: the terminal's width on a terminal; piped, wide
    enough that no table is cut or wrapped (rich would assume 80 columns)."""
    if sys.stdout.isatty():
        return _PipeConsole()
    return _PipeConsole(width=_PIPED_WIDTH, no_color=True, highlight=False)


def _summary_table(title: str, summary: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in summary.items():
        table.add_row(key, _shown(value))
    return table


def _shown(value: Any) -> str:
    """A summary's value as a person reads it: yes/no, none, items joined (no Python repr)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "—"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(_shown(item) for item in value) if value else "none"
    return str(value)
