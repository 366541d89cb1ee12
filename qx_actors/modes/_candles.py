"""One pass of price-history sync, as a sub-program (``yield from sync_price_history(...)``).

Evaluate the stored history, publish the state, flag new gaps, fetch the next planned range,
and repeat until the plan is empty for this pass. Ranges fetched in the pass are not planned
again in it (the exchange would answer the same), which makes every pass terminate; the one
exception is a hole a bulk fetch left, asked about once more as a gap in the same pass, so
that downtime is confirmed before the pass ends. What is still missing (young candles, holes
the exchange has not filled yet) is retried next pass.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from qx_actors.actors._engine import RunContext
from qx_actors.actors._program import Steps, call
from qx_actors.actors._wiring import DB, REST
from qx_actors.actors.messages import (
    CandleRangeStored,
    FetchCandleRange,
    FlagHoles,
    PruneTicks,
    Publish,
    QueryPriceHistory,
    RecordVerifiedEmpty,
)
from qx_actors.domain.history import (
    DownloadKind,
    DownloadRange,
    PriceHistoryState,
    check_reach_covered,
    last_stable_minute,
)
from qx_actors.domain.passes import resolve_pass
from qx_actors.domain.spans import Span
from qx_actors.domain.timeutil import floor_minute
from qx_actors.updates import PriceHistoryStateUpdate

#: Exchange downtime right at the reach is not "reach before the exchange's history".
REACH_TOLERANCE = timedelta(hours=6)


def confirmed_missing(
    result: CandleRangeStored, *, now: datetime, scan_from: datetime | None
) -> tuple[Span, ...]:
    """The minutes of a fetch that the exchange confirmed empty, to record as verified-empty.

    Only stable minutes (older than an hour) count: a young minute may still appear. A gap
    fetch confirms all of them. A bulk fetch confirms holes older than the gap-flag range
    (``price_history_flag_gap_range``: older history is not expected to be revised, so one
    answer is enough) and the part below its oldest candle (below the stored candles, for a
    ``LOWER_BOUND`` fetch that got nothing) once the caller has checked that this is within
    :data:`REACH_TOLERANCE` of the reach; holes inside the range are left as gaps, asked about
    once more before they are recorded. With gap flagging off (``scan_from`` None) no range
    counts as recent: a bulk fetch confirms every stable hole it leaves. A ``REVISION`` fetch
    (stored candles fetched again) confirms nothing.
    """
    stable_end = last_stable_minute(now)
    download = result.download
    if download.kind is DownloadKind.REVISION:
        return ()
    recent_from = floor_minute(now) if scan_from is None else scan_from
    confirmed: list[Span] = []
    for start, end in result.missing:
        end = min(end, stable_end)
        if end < start:
            continue
        if download.kind is DownloadKind.GAP:
            confirmed.append((start, end))
        elif start == download.start and (
            result.received_oldest is not None or download.kind is DownloadKind.LOWER_BOUND
        ):
            confirmed.append((start, end))  # below the oldest candle, near the reach
        elif end < recent_from:
            confirmed.append((start, end))
    return tuple(confirmed)


def sync_price_history(
    ctx: RunContext,
    *,
    newest_gap_first: bool,
    recheck_verified_empty: bool,
) -> Steps[PriceHistoryState]:
    """Fetch what is missing of ``[reach, now]`` in one pass (live mode: of the lookback)."""
    clock = ctx.clock
    sync = ctx.config.sync
    fetched: list[DownloadRange] = []
    flagged: set[Span] = set()
    while True:
        window = resolve_pass(sync, ctx.mode, clock())
        now, reach = window.now, window.price_history_reach
        # price_history_flag_gap_range keeps quantoxide's meaning: the recent range in which
        # holes are flagged (their neighbours re-fetched for revisions) and exchange-confirmed
        # holes are asked about again; None (null) turns both off, as quantoxide's None.
        # Holes are *found* everywhere in the reach: storage reports them all.
        scan_from = window.price_history_flag_gap_from
        facts = yield from call(DB, QueryPriceHistory())
        state = PriceHistoryState.evaluate(
            facts,
            reach=reach,
            now=now,
            recheck_verified_empty=recheck_verified_empty and scan_from is not None,
            recheck_from=scan_from,
        )
        yield Publish(PriceHistoryStateUpdate(state))
        # Only holes this pass repairs are flagged: a hole below a live lookback is not
        # fetched, so flagging its neighbours would only have them fetched again each pass.
        flag_from = None if scan_from is None else max(scan_from, window.lookback_start or reach)
        new_gaps = tuple(
            (gap.start, gap.end)
            for gap in state.gaps
            if flag_from is not None
            and gap.end >= flag_from
            and (gap.start, gap.end) not in flagged
        )
        if new_gaps:
            yield from call(DB, FlagHoles(new_gaps))
            flagged.update(new_gaps)
            continue  # the flags changed which candles are unstable: evaluate again
        download = _next_download(
            state,
            newest_gap_first=newest_gap_first,
            lookback_start=window.lookback_start,
            fetched=fetched,
        )
        if download is None:
            if recheck_verified_empty:
                # Every hole was asked about again; what the exchange confirmed empty is
                # downtime, not a gap: report (and prune by) the state as it now stands.
                state = PriceHistoryState.evaluate(facts, reach=reach, now=now)
                yield Publish(PriceHistoryStateUpdate(state))
            return state
        result = yield from call(REST, FetchCandleRange(download, sync.price_history_batch_size))
        fetched.append(download)
        oldest = result.received_oldest
        if oldest is None and download.kind is DownloadKind.LOWER_BOUND:
            # Nothing below the stored candles: the exchange's history starts at the oldest
            # stored one (e.g. downtime at the reach, asked again after a restart).
            oldest = state.earliest
        check_reach_covered(download, oldest, reach, tolerance=REACH_TOLERANCE)
        confirmed = confirmed_missing(result, now=clock(), scan_from=scan_from)
        if confirmed:
            yield from call(DB, RecordVerifiedEmpty(confirmed))


def _next_download(
    state: PriceHistoryState,
    *,
    newest_gap_first: bool,
    lookback_start: datetime | None,
    fetched: list[DownloadRange],
) -> DownloadRange | None:
    """The next range of the pass: one not fetched yet in it.

    A gap is skipped only when a *gap* fetch of this pass covered it: a hole that a bulk fetch
    left is asked about once more, as a gap, in the same pass (so that exchange downtime is
    confirmed and recorded before the pass reports ``Backfilled``, not one pass later).
    """
    skip = [old for old in fetched if old.kind is DownloadKind.GAP]
    while True:
        if lookback_start is not None:
            download = state.next_download_within(
                lookback_start, newest_gap_first=newest_gap_first, fetched=skip
            )
        else:
            download = state.next_download(newest_gap_first=newest_gap_first, fetched=skip)
        if download is None or download.kind is DownloadKind.GAP:
            return download
        if not any(old.covers(download) for old in fetched):
            return download
        skip.append(download)


def prune_covered_ticks(ctx: RunContext, state: PriceHistoryState) -> Steps[None]:
    """With ``tick_retention: prune``, drop ticks covered by stable candles after a clean pass."""
    if ctx.config.sync.tick_retention != "prune" or state.gaps or state.latest is None:
        return
    newest_stable = min(state.latest, last_stable_minute(state.now))
    yield from call(DB, PruneTicks(newest_stable))
