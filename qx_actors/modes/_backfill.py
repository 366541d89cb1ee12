"""Backfill mode: cover ``[reach, now]`` with candles, then settlements; report, sleep, repeat."""

from __future__ import annotations

from qx_actors.actors._engine import Program, RunContext
from qx_actors.actors._program import sleep
from qx_actors.actors.messages import Report
from qx_actors.modes._candles import prune_covered_ticks, sync_price_history
from qx_actors.modes._funding import sync_funding_settlements
from qx_actors.status import Trigger


def backfill_program(ctx: RunContext) -> Program:
    """Passes of price-history sync separated by ``price_history_re_backfill_interval_s``."""
    first_pass = True
    while True:
        yield Report(Trigger.PROGRESS)
        # Exchange-confirmed holes are asked about once more on the first pass after a
        # (re)start: candles that appear later are repaired, and no hole is asked about in a loop.
        state = yield from sync_price_history(
            ctx, newest_gap_first=False, recheck_verified_empty=first_pass
        )
        yield from prune_covered_ticks(ctx, state)
        yield from sync_funding_settlements(ctx)
        yield Report(Trigger.BACKFILLED)
        first_pass = False
        yield from sleep(ctx.config.sync.price_history_re_backfill_interval_s)
