"""What the sync TUI's panes say: pure functions from the run's states to ``rich`` text.

Nothing here touches Textual or the engine, so every pane's wording is testable on its own:
:func:`header_text` (run id, mode, status with degraded/recovering at a glance, uptime),
:func:`history_text` (reach, bounds, a coverage bar over the reach, gaps and verified-empty
ranges, ETA at the rate limit), :func:`funding_text` and :func:`live_text`. Every text the run
produced (a status's error above all) is scrubbed of secrets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from rich.text import Text

from qx_actors.domain.funding import FundingSettlementsState
from qx_actors.domain.history import PriceHistoryState, TimeRange
from qx_actors.domain.timeutil import MINUTE
from qx_actors.redact import redact_text
from qx_actors.status import State, SyncStatus

__all__ = [
    "GAP",
    "LISTED",
    "MISSING",
    "STORED",
    "VERIFIED",
    "coverage_bar",
    "coverage_cells",
    "coverage_percent",
    "eta_seconds",
    "format_duration",
    "format_span",
    "funding_text",
    "header_text",
    "history_text",
    "live_text",
    "status_style",
]

#: How many gaps / verified-empty ranges / missing settlements are listed by name.
LISTED = 5

#: Status -> (label style). Recovering, restarting and failed stand out in reverse video.
_STATE_STYLE: dict[State, str] = {
    State.NOT_INITIATED: "dim",
    State.STARTING: "bold cyan",
    State.IN_PROGRESS: "bold yellow",
    State.SYNCED: "bold green",
    State.BACKFILLED: "bold green",
    State.RECOVERING: "bold white on dark_orange3",
    State.RESTARTING: "bold white on dark_orange3",
    State.SHUTDOWN_INITIATED: "bold magenta",
    State.SHUTDOWN: "bold blue",
    State.FAILED: "bold white on red",
}

#: Coverage bar cells: stored, verified empty (exchange downtime), gap to repair, not yet stored.
STORED, VERIFIED, GAP, MISSING = "█", "▒", "▓", "░"
_CELL_STYLE = {STORED: "green", VERIFIED: "cyan", GAP: "red", MISSING: "grey42"}


def format_span(seconds: float) -> str:
    """A span in words of days, hours and minutes: ``3d 21h 35m`` (``0m`` for less)."""
    minutes = max(0, round(seconds)) // 60
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m"]
    return " ".join(part for part in parts if part) if days or hours or minutes else "0m"


def format_duration(seconds: float) -> str:
    """``1:02:03`` style, whole seconds (``3 days, 1:02:03`` beyond a day)."""
    return str(timedelta(seconds=max(0, round(seconds))))


def _utc(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M")


def status_style(status: SyncStatus) -> str:
    """The style of a status label."""
    return _STATE_STYLE.get(status.state, "bold")


def header_text(
    *,
    run_id: str,
    mode: str,
    status: SyncStatus,
    uptime_s: float,
    note: str | None = None,
    lagged: int = 0,
    health_url: str | None = None,
) -> Text:
    """``qx-actors sync  run 1a2b  mode full  [Running.Synced] DEGRADED  up 0:01:02``."""
    text = Text()
    text.append("qx-actors sync", style="bold")
    text.append(f"  run {run_id}  mode {mode}  ")
    text.append(f" {status.name} ", style=status_style(status))
    if status.state in (State.RECOVERING, State.RESTARTING):
        text.append(" ⟳ recovering", style="bold dark_orange3")
    if status.degraded:
        text.append(" ")
        text.append(" DEGRADED: REST polling ", style="bold black on yellow")
    text.append(f"  up {format_duration(uptime_s)}")
    if lagged:
        text.append(f"  lagged {lagged:,} updates", style="yellow")
    if health_url:
        text.append(f"  health {health_url}/health", style="dim")
    if status.error is not None:
        text.append("\n")
        text.append(redact_text(f"{type(status.error).__name__}: {status.error}"), style="bold red")
    if note:
        text.append("\n")
        text.append(note, style="italic")
    return text


def coverage_percent(ratio: float) -> str:
    """The coverage as ``99.99 %``; rounded down, so ``100.00 %`` means every minute."""
    return f"{math.floor(ratio * 10_000) / 100:.2f} %"


def _overlaps(ranges: Sequence[TimeRange], start: datetime, end: datetime) -> bool:
    return any(r.start <= end and r.end >= start for r in ranges)


def coverage_cells(state: PriceHistoryState, width: int) -> list[str]:
    """The reach ``[reach, head]`` in ``width`` cells: each stored, verified empty, gap or missing.

    A cell shows a gap if any gap touches it (a one-minute hole must not vanish in a bar of a
    year), else verified empty if such a range touches it, else stored if all its minutes lie
    within the stored bounds, else missing.
    """
    reach, head = state.reach, state.head
    minutes = (head - reach) // MINUTE + 1
    width = max(1, min(width, minutes))
    cells: list[str] = []
    for index in range(width):
        first = reach + MINUTE * (index * minutes // width)
        last = reach + MINUTE * ((index + 1) * minutes // width - 1)
        if _overlaps(state.gaps, first, last):
            cells.append(GAP)
        elif _overlaps(state.verified_empty, first, last):
            cells.append(VERIFIED)
        elif (
            state.earliest is not None
            and state.latest is not None
            and state.earliest <= first
            and last <= state.latest
        ):
            cells.append(STORED)
        else:
            cells.append(MISSING)
    return cells


def coverage_bar(state: PriceHistoryState, width: int) -> Text:
    """:func:`coverage_cells` coloured."""
    text = Text()
    for cell in coverage_cells(state, width):
        text.append(cell, style=_CELL_STYLE[cell])
    return text


def eta_seconds(missing_minutes: int, rate_per_s: float, page_size: int) -> float:
    """Seconds to fetch ``missing_minutes`` candles in pages of ``page_size`` at the rate limit."""
    requests = -(-missing_minutes // page_size)
    return requests / rate_per_s


def _ranges(label: str, ranges: Sequence[TimeRange], style: str) -> Text:
    text = Text()
    total = sum(r.minutes for r in ranges)
    text.append(f"{label:<12}", style="bold")
    text.append(f"{len(ranges)} ({total:,} min)")
    for r in ranges[:LISTED]:
        text.append("\n  ")
        text.append(f"{_utc(r.start)} .. {_utc(r.end)}", style=style)
        text.append(f"  {r.minutes:,} min", style="dim")
    if len(ranges) > LISTED:
        text.append(f"\n  … {len(ranges) - LISTED} more", style="dim")
    return text


def history_text(
    state: PriceHistoryState | None, *, rate_per_s: float, page_size: int, bar_width: int
) -> Text:
    """The price-history pane."""
    if state is None:
        return Text("waiting for the first evaluation…", style="dim")
    text = Text()
    reach_span = format_span((state.head - state.reach).total_seconds())
    text.append(f"{'reach':<12}", style="bold")
    text.append(f"{_utc(state.reach)} .. now (the last {reach_span})\n")
    text.append(f"{'stored':<12}", style="bold")
    text.append(f"{_utc(state.earliest)} .. {_utc(state.latest)}\n")
    text.append(f"{'coverage':<12}", style="bold")
    text.append(coverage_percent(state.coverage_ratio))
    text.append("  complete" if state.is_complete else "", style="green")
    text.append("\n")
    text.append_text(coverage_bar(state, bar_width))
    text.append("\n")
    text.append(
        f"{STORED} stored {VERIFIED} verified empty {GAP} gap {MISSING} missing\n", style="dim"
    )
    missing = state.missing_minutes
    text.append(f"{'missing':<12}", style="bold")
    text.append(f"{missing:,} min")
    if missing:
        eta = format_duration(eta_seconds(missing, rate_per_s, page_size))
        text.append(f"  ETA {eta} at {rate_per_s:g} req/s")
    text.append("\n")
    text.append_text(_ranges("gaps", state.gaps, "red"))
    text.append("\n")
    text.append_text(_ranges("verified", state.verified_empty, "cyan"))
    if state.earliest_unstable is not None:
        text.append(f"\n{'unstable':<12}", style="bold")
        text.append(f"from {_utc(state.earliest_unstable)}")
    return text


def funding_text(state: FundingSettlementsState | None) -> Text:
    """The funding-settlements pane."""
    if state is None:
        return Text("waiting for the first evaluation…", style="dim")
    summary = state.summary()
    text = Text()
    text.append(f"{'reach':<12}", style="bold")
    text.append(f"{_utc(state.reach)} .. now\n")
    text.append(f"{'stored':<12}", style="bold")
    text.append(f"{_utc(state.earliest)} .. {_utc(state.latest)}\n")
    text.append(f"{'missing':<12}", style="bold")
    missing = len(state.missing)
    text.append(f"{missing:,}", style="red" if missing else "green")
    for time in state.missing[:LISTED]:
        text.append(f"\n  {_utc(time)}", style="red")
    if missing > LISTED:
        text.append(f"\n  … {missing - LISTED} more", style="dim")
    text.append(f"\n{'state':<12}", style="bold")
    if summary.get("complete"):
        text.append("complete", style="green")
    elif summary.get("caught_up"):
        text.append("caught up")
    else:
        text.append("behind", style="yellow")
    return text


def _number(value: Any) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:,.0f}"
    return str(value)


def live_text(
    *,
    active: bool,
    last_price: float | None,
    tick_time: datetime | None,
    tick_age_s: float | None,
    ticks: int,
    rate_per_s: float,
    counters: Mapping[str, Mapping[str, Any]] | None = None,
) -> Text:
    """The live pane (the sparkline is a widget of its own, under this text)."""
    if not active:
        return Text("backfill mode: no live feed", style="dim")
    text = Text()
    text.append(f"{'last price':<12}", style="bold")
    text.append("-" if last_price is None else f"{last_price:,.1f}")
    text.append("\n")
    text.append(f"{'tick time':<12}", style="bold")
    text.append("-" if tick_time is None else tick_time.strftime("%H:%M:%S.%f")[:-3])
    if tick_age_s is not None:
        text.append(f"  age {tick_age_s:.1f} s", style="yellow" if tick_age_s > 10 else "")
    text.append("\n")
    text.append(f"{'ticks':<12}", style="bold")
    text.append(f"{ticks:,}  {rate_per_s:.1f}/s")
    for source, values in sorted((counters or {}).items()):
        shown = " · ".join(f"{key} {_number(value)}" for key, value in values.items())
        text.append(f"\n{source:<12}", style="bold")
        text.append(redact_text(shown), style="dim")
    return text
