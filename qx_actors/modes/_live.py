"""Live and full modes: catch up on candles, then follow live prices.

* ``live(lookback)``: make sure the newest ``lookback`` of candles is present and gap-free
  (without a lookback, the last hour, i.e. the candles that may still change), then follow
  ticks over the Stream API, re-syncing the head of the candle table every
  ``price_history_re_sync_interval_s``. Each re-sync fetches the head again from the oldest
  unstable candle of the last 66 minutes (whatever the lookback), and any older unstable
  candles in the reach once, so every stored candle ends with the exchange's final values.
* ``full``: backfill everything (candles and funding settlements) first, then live as above,
  plus a whole-history pass every ``price_history_re_backfill_interval_s`` and funding
  settlements at each settlement time (or every ``funding_settlement_retry_interval_s`` while
  not caught up).

With ``exchange.stream_enabled: false`` the head re-sync over REST *is* the live feed (each
re-sync fetches the forming minute and the young ones again), and the run reports ``Synced``
after the first catch-up (quantoxide's REST mode). With the stream enabled, ``Synced`` comes
with the first committed tick. While the stream is down (refused, dropped) the run is
*degraded*: the feed reconnects with backoff by itself, the head is polled over REST every
``price_history_re_sync_interval_s``, and the run is ``Synced`` (degraded) as soon as a poll
has brought the head up to date — restarting the mode would help nothing. Only a stream that is
connected but silent for ``live_price_tick_max_interval_s`` is stale
(:class:`~qx_actors.errors.StaleFeedError`, the mode restarts); half-way there the run is
degraded and polls too.

The program keeps no state shared with anyone: the WS feed watches its own stream and the
Engine resumes the program's ``Sleep`` with the :class:`FeedState` it last heard of (early, as
soon as that state changes); the Engine reports ``Synced`` at the first committed tick.
"""

from __future__ import annotations

import time
from datetime import timedelta

from qx_actors.actors._engine import Program, RunContext
from qx_actors.actors.messages import (
    FeedState,
    Report,
    Sleep,
    StartStream,
    Tell,
)
from qx_actors.domain.lookback import ModeKind
from qx_actors.domain.settlements import next_settlement_time
from qx_actors.modes._candles import prune_covered_ticks, sync_price_history
from qx_actors.modes._funding import sync_funding_settlements
from qx_actors.status import Trigger

WS = "ws"


def live_program(ctx: RunContext) -> Program:
    """Catch up, go live, and keep everything current until stopped."""
    sync = ctx.config.sync
    full = ctx.mode.kind is ModeKind.FULL
    stream = ctx.config.exchange.stream_enabled
    yield Report(Trigger.PROGRESS)

    next_funding = time.monotonic()
    if full:
        state = yield from sync_price_history(
            ctx, newest_gap_first=False, recheck_verified_empty=True
        )
        yield from prune_covered_ticks(ctx, state)
        funding = yield from sync_funding_settlements(ctx)
        next_funding = _next_funding_at(ctx, funding.is_caught_up)
    else:
        yield from sync_price_history(ctx, newest_gap_first=True, recheck_verified_empty=False)

    if stream:
        yield Tell(WS, StartStream())
    else:
        yield Report(Trigger.SYNCED)  # current over REST alone (quantoxide's REST mode)

    feed = FeedState()
    was_quiet = False
    now = time.monotonic()
    next_resync = now + sync.price_history_re_sync_interval_s
    next_backfill = now + sync.price_history_re_backfill_interval_s
    while True:
        deadlines = [next_resync]
        if full:
            deadlines += [next_backfill, next_funding]
        feed = yield Sleep(max(min(deadlines) - time.monotonic(), 0.0), until_feed_changes=stream)
        now = time.monotonic()
        if feed.quiet and not was_quiet:
            # Half-way to stale (the feed said so, the Engine flagged the run degraded): keep
            # the head current over REST while the stream gets the rest of the interval.
            next_resync = now
        was_quiet = feed.quiet
        if now >= next_resync:
            # The pass fetches the young candles again (the forming one included): that is
            # also the REST poll of the head when the stream is off, down or quiet.
            yield from sync_price_history(ctx, newest_gap_first=True, recheck_verified_empty=False)
            if feed.down:
                # Current over REST with the stream down: Synced, degraded (reported once per
                # attempt by the Engine, whichever comes first: this or a committed tick).
                yield Report(Trigger.SYNCED)
            next_resync = time.monotonic() + sync.price_history_re_sync_interval_s
        if full and now >= next_backfill:
            state = yield from sync_price_history(
                ctx, newest_gap_first=False, recheck_verified_empty=False
            )
            yield from prune_covered_ticks(ctx, state)
            next_backfill = time.monotonic() + sync.price_history_re_backfill_interval_s
        if full and now >= next_funding:
            funding = yield from sync_funding_settlements(ctx)
            next_funding = _next_funding_at(ctx, funding.is_caught_up)


def _next_funding_at(ctx: RunContext, caught_up: bool) -> float:
    """Monotonic time of the next settlement refresh."""
    retry = ctx.config.sync.funding_settlement_retry_interval_s
    if not caught_up:
        return time.monotonic() + retry
    now = ctx.clock()
    until_next = (next_settlement_time(now) - now) + timedelta(seconds=1)
    return time.monotonic() + until_next.total_seconds()
