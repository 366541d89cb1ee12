"""Live and full modes: catch up on candles, then follow live prices.

* ``live(lookback)``: make sure the newest ``lookback`` of candles is present and gap-free
  (only what is missing near the head is fetched; without a lookback, the last hour, i.e. the
  candles that may still change), then follow ticks over the Stream API, re-syncing the head of
  the candle table every ``price_history_re_sync_interval_s``.
* ``full``: backfill everything (candles and funding settlements) first, then live as above,
  plus a whole-history pass every ``price_history_re_backfill_interval_s`` and funding
  settlements at each settlement time (or every ``funding_settlement_retry_interval_s`` while
  not caught up).

With ``exchange.stream_enabled: false`` the head re-sync over REST *is* the live feed (each
re-sync fetches the previous and the forming minute again), and the run reports ``Synced``
after the first catch-up (quantoxide's REST mode). With the stream enabled, ``Synced`` comes
with the first committed tick. While the stream is down (refused, dropped) the run is
*degraded*: the feed reconnects with backoff by itself, the head is polled over REST every
``price_history_re_sync_interval_s``, and the run is ``Synced`` (degraded) as soon as a poll
has brought the head up to date — restarting the mode would help nothing. Only a stream that is
connected but silent for ``live_price_tick_max_interval_s`` is stale
(:class:`~qx_actors.errors.StaleFeedError`, the mode restarts); half-way there the run is
degraded and polls too.

Ticks reach the Engine as out-of-band messages (:func:`on_live_message`); the program and that
handler share a :class:`LiveTracker`, both on the Engine's thread.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from qx_actors.actors.engine import EngineActor, Program, RunContext
from qx_actors.actors.messages import (
    Call,
    DegradedChanged,
    FetchCandleRange,
    Report,
    SetDegraded,
    Sleep,
    StreamDown,
    StreamUp,
    Tell,
    TicksCommitted,
)
from qx_actors.actors.ws_feed import StartStream
from qx_actors.domain.history import DownloadKind, DownloadRange
from qx_actors.domain.lookback import ModeKind
from qx_actors.domain.settlements import next_settlement_time
from qx_actors.domain.timeutil import MINUTE, UNSTABLE_AGE, floor_minute
from qx_actors.errors import StaleFeedError
from qx_actors.modes.candles import REST, prune_covered_ticks, sync_price_history
from qx_actors.modes.funding import sync_funding_settlements
from qx_actors.status import Trigger
from qx_actors.updates import PriceTickUpdate

WS = "ws"


@dataclass
class LiveTracker:
    """What the live program and the tick handler share (Engine thread only)."""

    live: bool = False
    synced_reported: bool = False
    stream_started_at: float | None = None
    #: When the stream last (re)connected: a silence is measured from here at the earliest.
    stream_up_at: float | None = None
    last_tick_at: float | None = None
    ticks_committed: int = 0
    #: The stream is down (degraded): the head is polled over REST until it is back.
    stream_down: bool = False
    #: The stream is up but no tick came for half the stale limit (degraded, polled too).
    stream_quiet: bool = False

    def reset(self) -> None:
        """Forget the previous attempt (the program restarted)."""
        self.live = False
        self.synced_reported = False
        self.stream_started_at = None
        self.stream_up_at = None
        self.last_tick_at = None
        self.stream_quiet = False
        # the feed is a fresh actor after a restart: it says StreamDown again if it must
        self.stream_down = False


def on_live_message(tracker: LiveTracker, engine: EngineActor, message: Any) -> None:
    """Handle the WS feed's and DB writer's messages that answer no request."""
    match message:
        case TicksCommitted(ticks=ticks):
            tracker.last_tick_at = time.monotonic()
            tracker.ticks_committed += len(ticks)
            engine.publish(*(PriceTickUpdate(tick) for tick in ticks))
            if tracker.stream_quiet:
                tracker.stream_quiet = False
                if not tracker.stream_down:
                    engine.notify_controller(DegradedChanged(False, "ticks flow again"))
            if tracker.live and not tracker.synced_reported:
                tracker.synced_reported = True
                engine.report(Trigger.SYNCED)
        case StreamUp():
            tracker.stream_down = False
            tracker.stream_up_at = time.monotonic()
            engine.notify_controller(DegradedChanged(False, "stream subscribed"))
        case StreamDown(error=error):
            tracker.stream_down = True
            if tracker.live:
                engine.notify_controller(DegradedChanged(True, str(error)))
        case _:
            raise TypeError(f"unexpected message for the live mode: {message!r}")


def _window_start(ctx: RunContext, now: datetime) -> datetime:
    lookback = ctx.mode.lookback
    span = lookback.duration if lookback is not None else UNSTABLE_AGE
    return floor_minute(now - span)


def live_program(ctx: RunContext, tracker: LiveTracker) -> Program:
    """Catch up, go live, and keep everything current until stopped."""
    try:
        yield from _live(ctx, tracker)
    finally:
        # Closed (restart, stop) or failed: until the next attempt catches up, a tick that
        # still arrives must not report Synced (e.g. from Running.Recovering).
        tracker.live = False


def _live(ctx: RunContext, tracker: LiveTracker) -> Program:
    sync = ctx.config.sync
    full = ctx.mode.kind is ModeKind.FULL
    stream = ctx.config.exchange.stream_enabled
    tracker.reset()
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
        yield from sync_price_history(
            ctx,
            newest_gap_first=True,
            recheck_verified_empty=False,
            lookback_start=_window_start(ctx, ctx.clock()),
        )

    tracker.live = True
    if stream:
        yield Tell(WS, StartStream())
        tracker.stream_started_at = time.monotonic()
    else:
        tracker.synced_reported = True
        yield Report(Trigger.SYNCED)

    now = time.monotonic()
    next_resync = now + sync.price_history_re_sync_interval_s
    next_backfill = now + sync.price_history_re_backfill_interval_s
    while True:
        deadlines = [next_resync]
        if full:
            deadlines += [next_backfill, next_funding]
        quiet_after = sync.live_price_tick_max_interval_s / 2
        # Silence only counts while the stream is connected: a stream that is down is being
        # reconnected by the feed already, and REST polling keeps the head current meanwhile.
        watch_silence = stream and not tracker.stream_down
        if watch_silence:
            deadlines.append(_stale_at(tracker, sync.live_price_tick_max_interval_s))
            if not tracker.stream_quiet:
                deadlines.append(_stale_at(tracker, quiet_after))
        yield Sleep(max(min(deadlines) - time.monotonic(), 0.0))

        now = time.monotonic()
        watch_silence = stream and not tracker.stream_down
        if watch_silence and now >= _stale_at(tracker, sync.live_price_tick_max_interval_s):
            raise StaleFeedError(
                f"no tick for {sync.live_price_tick_max_interval_s:g} s "
                "(sync.live_price_tick_max_interval_s)"
            )
        if watch_silence and not tracker.stream_quiet and now >= _stale_at(tracker, quiet_after):
            # Half-way to stale: keep the head current over REST and say so, while the
            # stream gets the rest of the interval to deliver.
            tracker.stream_quiet = True
            if not tracker.stream_down:
                yield SetDegraded(True, f"no tick for {quiet_after:g} s")
            next_resync = now
        if now >= next_resync:
            polled = not stream or tracker.stream_down or tracker.stream_quiet
            if polled:
                yield from _poll_head(ctx)
            yield from sync_price_history(
                ctx,
                newest_gap_first=True,
                recheck_verified_empty=False,
                lookback_start=_window_start(ctx, ctx.clock()),
            )
            if (not stream or tracker.stream_down) and not tracker.synced_reported:
                # Current over REST alone (quantoxide's REST mode); with the stream down that
                # is Synced, degraded. A connected but silent stream is on its way to stale.
                tracker.synced_reported = True
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


def _poll_head(ctx: RunContext) -> Generator[Any, Any, None]:
    """REST polling of the head: fetch the previous and the still-forming minute again.

    A re-sync pass fetches only what is missing, so within one minute it would not ask the
    exchange at all and the forming candle would stay as first seen; without the stream
    (disabled, or down: degraded) this request is what keeps live data flowing every
    ``price_history_re_sync_interval_s``.
    """
    head = floor_minute(ctx.clock())
    download = DownloadRange(DownloadKind.UPPER_BOUND, head - MINUTE, head)
    yield Call(REST, FetchCandleRange(download, ctx.config.sync.price_history_batch_size))


def _stale_at(tracker: LiveTracker, max_interval_s: float) -> float:
    marks = [tracker.last_tick_at, tracker.stream_started_at, tracker.stream_up_at]
    known = [mark for mark in marks if mark is not None]
    return (max(known) if known else time.monotonic()) + max_interval_s


def _next_funding_at(ctx: RunContext, caught_up: bool) -> float:
    """Monotonic time of the next settlement refresh."""
    retry = ctx.config.sync.funding_settlement_retry_interval_s
    if not caught_up:
        return time.monotonic() + retry
    now = ctx.clock()
    until_next = (next_settlement_time(now) - now) + timedelta(seconds=1)
    return time.monotonic() + until_next.total_seconds()
