"""The windows of one sync pass: reach, lookback and scan ranges, resolved against a clock.

Pure: the settings come in as :class:`PassSettings` (``qx_actors.config.SyncConfig`` is one),
the time as an argument. ``qx_actors.config`` re-exports both names.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from qx_actors.domain.lookback import ModeKind, SyncMode
from qx_actors.domain.timeutil import UNSTABLE_AGE, floor_minute

__all__ = ["PassSettings", "PassWindow", "resolve_pass"]


class PassSettings(Protocol):
    """What a pass needs from the sync settings (``SyncConfig`` provides it)."""

    def price_history_reach_at(self, now: datetime) -> datetime: ...

    def price_history_flag_gap_from(self, now: datetime, reach: datetime) -> datetime | None: ...

    def funding_settlement_reach_at(self, now: datetime) -> datetime: ...

    def funding_scan_from(self, now: datetime) -> datetime | None: ...


@dataclass(frozen=True)
class PassWindow:
    """Everything one sync pass needs from the config, resolved against the run's clock once
    (:func:`resolve_pass`)."""

    now: datetime
    #: The oldest candle to keep (``sync.price_history_reach_at(now)``).
    price_history_reach: datetime
    #: Where holes are flagged from (``sync.price_history_flag_gap_from(now, reach)``);
    #: ``None``: flagging is off (flag no hole, ask about no confirmed hole again).
    price_history_flag_gap_from: datetime | None
    #: Live only: the start of the recent candles to make sure of (the lookback, else the
    #: candles that may still change), never before the reach; ``None`` for backfill and full.
    lookback_start: datetime | None
    #: The oldest funding settlement to keep (``sync.funding_settlement_reach_at(now)``).
    funding_reach: datetime
    #: Where missing settlements are looked for (``sync.funding_scan_from(now)``); ``None``:
    #: the scan is off (no missing settlement is looked for nor fetched).
    funding_scan_from: datetime | None

    @property
    def funding_query_from(self) -> datetime:
        """Where to read the stored settlement times from (``QueryFunding``,
        ``funding_facts``): the scan start, or ``now`` when the scan is off (nothing to read)."""
        return self.now if self.funding_scan_from is None else self.funding_scan_from


def resolve_pass(sync: PassSettings, mode: SyncMode, now: datetime) -> PassWindow:
    """The reach, lookback and scan windows of one pass at ``now``."""
    reach = sync.price_history_reach_at(now)
    lookback_start = None
    if mode.kind is ModeKind.LIVE:
        span = mode.lookback.duration if mode.lookback is not None else UNSTABLE_AGE
        lookback_start = max(floor_minute(now - span), reach)
    return PassWindow(
        now=now,
        price_history_reach=reach,
        price_history_flag_gap_from=sync.price_history_flag_gap_from(now, reach),
        lookback_start=lookback_start,
        funding_reach=sync.funding_settlement_reach_at(now),
        funding_scan_from=sync.funding_scan_from(now),
    )
