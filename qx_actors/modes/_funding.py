"""One pass of funding-settlement sync (``yield from sync_funding_settlements(...)``).

Evaluate the stored settlements, publish the state, fetch the next planned range, repeat until
the plan is empty for this pass. A range is fetched at most once per pass: a settlement the
exchange does not have (yet) is asked for again next pass, not in a loop.

Settlements missing between the oldest and the newest stored one are looked for from
``funding_settlement_flag_missing_range_h`` ago (or the reach: ``reach``) and fetched as
``MISSING`` repairs. With the key ``null`` the scan is off, as quantoxide's ``None``: no
missing settlement is looked for nor fetched; the newest (``LATEST``/``UPPER_BOUND``) and the
older ones down to the reach (``LOWER_BOUND``) still are.

The pass fails as quantoxide's backfill does (``sync_funding_settlements_task``) instead of
ending quietly: ``UnreachableMissingSettlement`` (from the evaluation) for a hole older than
the reach, ``SettlementsBeforeHistoryStart`` when the exchange has nothing below the stored
settlements down to the reach, nor in the page just below the reach.
"""

from __future__ import annotations

from qx_actors.actors._engine import RunContext
from qx_actors.actors._program import Steps, call
from qx_actors.actors._wiring import DB, REST
from qx_actors.actors.messages import FetchSettlementRange, Publish, QueryFunding
from qx_actors.domain.funding import (
    FundingSettlementsState,
    SettlementDownload,
    settlements_before_history_start,
)
from qx_actors.domain.passes import resolve_pass
from qx_actors.domain.values import EXCHANGE_PAGE_LIMIT
from qx_actors.updates import FundingSettlementsStateUpdate


def sync_funding_settlements(ctx: RunContext) -> Steps[FundingSettlementsState]:
    """Fetch the settlements missing from ``[reach, now]``; ranges fetched once per pass."""
    clock = ctx.clock
    sync = ctx.config.sync
    fetched: list[SettlementDownload] = []
    while True:
        window = resolve_pass(sync, ctx.mode, clock())
        # None: the scan is off (the facts' stored times are then not read)
        scan_from = window.funding_scan_from
        facts = yield from call(DB, QueryFunding(window.funding_query_from))
        state = FundingSettlementsState.evaluate(
            facts, reach=window.funding_reach, now=window.now, scan_from=scan_from
        )
        yield Publish(FundingSettlementsStateUpdate(state))
        lower = state.unanswered_lower_bound(fetched)
        if lower is not None:
            # The exchange answered for [reach, earliest) and has none of it. quantoxide's
            # open-ended lower page would step over downtime at the reach to older settlements;
            # ask for one page below the reach before calling this the history start.
            probe = state.probe_below_reach(EXCHANGE_PAGE_LIMIT)
            if probe is None or any(old.covers(probe) for old in fetched):
                raise settlements_before_history_start(state, lower, probe)
            probed = yield from call(
                REST, FetchSettlementRange(probe.start, probe.end, EXCHANGE_PAGE_LIMIT)
            )
            fetched.append(probe)
            if probed.received_count == 0:
                raise settlements_before_history_start(state, lower, probe)
            continue  # older ones stored: [reach, earliest) is downtime, a hole as any other
        download = state.next_download(fetched=fetched)
        if download is None:
            return state
        yield from call(
            REST, FetchSettlementRange(download.start, download.end, EXCHANGE_PAGE_LIMIT)
        )
        fetched.append(download)
