"""One pass of funding-settlement sync (``yield from sync_funding_settlements(...)``)."""

from __future__ import annotations

from collections.abc import Generator
from datetime import timedelta
from typing import Any

from qx_actors.actors.engine import RunContext
from qx_actors.actors.messages import (
    Call,
    FetchSettlementRange,
    Publish,
    QueryFunding,
    SettlementRangeStored,
)
from qx_actors.domain.funding import (
    FundingSettlementsFacts,
    FundingSettlementsState,
    SettlementDownload,
)
from qx_actors.modes.candles import DB, REST
from qx_actors.updates import FundingSettlementsStateUpdate

#: Settlement pages are small; the exchange's maximum page size.
SETTLEMENT_PAGE_SIZE = 1000


def sync_funding_settlements(ctx: RunContext) -> Generator[Any, Any, FundingSettlementsState]:
    """Fetch the settlements missing from ``[reach, now]``; ranges fetched once per pass."""
    clock = ctx.clock
    sync = ctx.config.sync
    fetched: list[SettlementDownload] = []
    while True:
        now = clock()
        scan_from = now - timedelta(hours=sync.funding_settlement_flag_missing_range_h)
        facts: FundingSettlementsFacts = yield Call(DB, QueryFunding(scan_from))
        state = FundingSettlementsState.evaluate(
            facts, reach=sync.funding_settlement_reach_at(now), now=now, scan_from=scan_from
        )
        yield Publish(FundingSettlementsStateUpdate(state))
        download = state.next_download(fetched=fetched)
        if download is None:
            return state
        _: SettlementRangeStored = yield Call(
            REST, FetchSettlementRange(download.start, download.end, SETTLEMENT_PAGE_SIZE)
        )
        fetched.append(download)
