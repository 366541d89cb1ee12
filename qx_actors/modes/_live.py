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
soon as that state changes); the Engine reports ``Synced`` at the first committed tick. Its
timers (re-sync, whole-history pass, funding) are a :class:`Schedule` on the run's monotonic
clock (``RunContext.monotonic``).
"""

from __future__ import annotations

from datetime import timedelta

from qx_actors.actors._engine import Program, RunContext
from qx_actors.actors._program import Steps, sleep
from qx_actors.actors._wiring import WS
from qx_actors.actors.messages import FeedState, Report, StartStream, Tell
from qx_actors.domain.lookback import ModeKind
from qx_actors.domain.settlements import next_settlement_time
from qx_actors.modes._candles import prune_covered_ticks, sync_price_history
from qx_actors.modes._funding import sync_funding_settlements
from qx_actors.modes._schedule import Schedule
from qx_actors.status import Trigger

#: The timers of a live program: the head re-sync (every mode), the whole-history pass and
#: the funding refresh (full mode only).
RESYNC = "re_sync"
BACKFILL = "re_backfill"
FUNDING = "funding"


def live_program(ctx: RunContext) -> Program:
    """Catch up, go live, and keep everything current until stopped."""
    stream = ctx.config.exchange.stream_enabled
    yield Report(Trigger.PROGRESS)
    schedule = Schedule()
    yield from _catch_up(ctx, schedule)
    if stream:
        yield Tell(WS, StartStream())
    else:
        yield Report(Trigger.SYNCED)  # current over REST alone (quantoxide's REST mode)
    _start_timers(ctx, schedule)
    was_quiet = False
    while True:
        feed = yield from sleep(schedule.next_wake(ctx.monotonic()), until_feed_changes=stream)
        now = ctx.monotonic()
        if feed.quiet and not was_quiet:
            # Half-way to stale (the feed said so, the Engine flagged the run degraded): keep
            # the head current over REST while the stream gets the rest of the interval.
            schedule.set(RESYNC, now)
        was_quiet = feed.quiet
        due = schedule.due(now)
        if RESYNC in due:
            yield from _resync(ctx, feed, schedule)
        if BACKFILL in due:
            yield from _rebackfill(ctx, schedule)
        if FUNDING in due:
            yield from _refresh_funding(ctx, schedule)


def _is_full(ctx: RunContext) -> bool:
    return ctx.mode.kind is ModeKind.FULL


def _catch_up(ctx: RunContext, schedule: Schedule) -> Steps[None]:
    """Live: the lookback, newest gap first. Full: the whole history (verified-empty holes
    asked about once more), then the funding settlements (which sets the funding timer)."""
    if not _is_full(ctx):
        yield from sync_price_history(ctx, newest_gap_first=True, recheck_verified_empty=False)
        return
    state = yield from sync_price_history(ctx, newest_gap_first=False, recheck_verified_empty=True)
    yield from prune_covered_ticks(ctx, state)
    yield from _refresh_funding(ctx, schedule)


def _start_timers(ctx: RunContext, schedule: Schedule) -> None:
    """Once live: the first re-sync (and, full mode, whole-history pass) an interval from now."""
    sync = ctx.config.sync
    now = ctx.monotonic()
    schedule.set(RESYNC, now + sync.price_history_re_sync_interval_s)
    if _is_full(ctx):
        schedule.set(BACKFILL, now + sync.price_history_re_backfill_interval_s)


def _resync(ctx: RunContext, feed: FeedState, schedule: Schedule) -> Steps[None]:
    """A pass over the head (the lookback first, newest gap first), then the next re-sync.

    The pass fetches the young candles again (the forming one included): that is also the REST
    poll of the head when the stream is off, down or quiet.
    """
    yield from sync_price_history(ctx, newest_gap_first=True, recheck_verified_empty=False)
    if feed.down:
        # Current over REST with the stream down: Synced, degraded (reported once per
        # attempt by the Engine, whichever comes first: this or a committed tick).
        yield Report(Trigger.SYNCED)
    schedule.set(RESYNC, ctx.monotonic() + ctx.config.sync.price_history_re_sync_interval_s)


def _rebackfill(ctx: RunContext, schedule: Schedule) -> Steps[None]:
    """Full mode: a whole-history pass (oldest gap first), then the next one."""
    state = yield from sync_price_history(ctx, newest_gap_first=False, recheck_verified_empty=False)
    yield from prune_covered_ticks(ctx, state)
    interval = ctx.config.sync.price_history_re_backfill_interval_s
    schedule.set(BACKFILL, ctx.monotonic() + interval)


def _refresh_funding(ctx: RunContext, schedule: Schedule) -> Steps[None]:
    """Full mode: a funding-settlement pass, then the next one (at the next settlement time,
    or after ``funding_settlement_retry_interval_s`` while not caught up)."""
    funding = yield from sync_funding_settlements(ctx)
    schedule.set(FUNDING, _next_funding_at(ctx, funding.is_caught_up))


def _next_funding_at(ctx: RunContext, caught_up: bool) -> float:
    """Monotonic time of the next settlement refresh."""
    retry = ctx.config.sync.funding_settlement_retry_interval_s
    if not caught_up:
        return ctx.monotonic() + retry
    now = ctx.clock()
    until_next = (next_settlement_time(now) - now) + timedelta(seconds=1)
    return ctx.monotonic() + until_next.total_seconds()
