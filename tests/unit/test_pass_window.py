"""resolve_pass: the windows of one pass, resolved once against a pinned clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from qx_actors.config import Reach, SyncConfig, config_from_mapping, resolve_pass
from qx_actors.domain.lookback import ModeKind, SyncMode
from qx_actors.domain.timeutil import (
    FIRST_CANDLE_TIME,
    FIRST_SETTLEMENT_TIME,
    UNSTABLE_AGE,
    floor_minute,
)

PINNED_NOWS = [
    datetime(2026, 6, 15, 13, 45, 30, 123000, tzinfo=UTC),
    datetime(2026, 1, 1, 0, 0, tzinfo=UTC),
    datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC),
    datetime(2021, 1, 12, 0, 30, tzinfo=UTC),
]

SYNC_SETTINGS = [
    {},
    {"price_history_reach": "36h", "funding_settlement_reach": "2w"},
    {"price_history_reach": "max", "funding_settlement_reach": "max"},
    {"price_history_reach": "2020-06-01", "funding_settlement_reach": "2021-02-01T08:00:00Z"},
    {"price_history_reach": "30m", "price_history_flag_gap_range_h": None},
    {"price_history_flag_gap_range_h": 2, "funding_settlement_flag_missing_range_h": 5},
]

MODES = [
    SyncMode.backfill(),
    SyncMode.full(),
    SyncMode.live(),
    SyncMode.live("20 x 5m"),
    SyncMode.live("3 x 1d"),
]


def _sync(settings: dict[str, object]) -> SyncConfig:
    return config_from_mapping({"sync": settings}).sync


def _valid_at(settings: dict[str, object], now: datetime) -> bool:
    """Whether no absolute reach of ``settings`` is after ``now`` (that is refused: tested
    below), so the combination is a pass that can happen."""
    sync = _sync(settings)
    absolute = [sync.price_history_reach_parsed.at, sync.funding_settlement_reach_parsed.at]
    return not any(at is not None and at > now for at in absolute)


@pytest.mark.parametrize(
    ("now", "settings"),
    [
        (now, settings)
        for now in PINNED_NOWS
        for settings in SYNC_SETTINGS
        if _valid_at(settings, now)
    ],
)
@pytest.mark.parametrize("mode", MODES, ids=str)
def test_resolve_pass_matches_the_config_methods(
    now: datetime, settings: dict[str, object], mode: SyncMode
) -> None:
    """Every field equals what the SyncConfig methods give at the same now."""
    sync = _sync(settings)
    window = resolve_pass(sync, mode, now)
    reach = sync.price_history_reach_at(now)
    assert now == window.now
    assert reach == window.price_history_reach
    assert sync.price_history_flag_gap_from(now, reach) == window.price_history_flag_gap_from
    assert sync.funding_settlement_reach_at(now) == window.funding_reach
    expected_scan = now - timedelta(hours=sync.funding_settlement_flag_missing_range_h)
    assert expected_scan == window.funding_scan_from
    if mode.kind is ModeKind.LIVE:
        span = mode.lookback.duration if mode.lookback is not None else UNSTABLE_AGE
        assert max(floor_minute(now - span), reach) == window.lookback_start
    else:
        assert window.lookback_start is None


def test_resolve_pass_pinned_values() -> None:
    """Defaults at a pinned now: 90 days floored to midnight, 672 h scans, the last hour live."""
    now = datetime(2026, 6, 15, 13, 45, 30, tzinfo=UTC)
    window = resolve_pass(SyncConfig(), SyncMode.live(), now)
    assert datetime(2026, 3, 17, tzinfo=UTC) == window.price_history_reach
    assert now - timedelta(hours=672) == window.price_history_flag_gap_from
    assert datetime(2026, 6, 15, 12, 45, tzinfo=UTC) == window.lookback_start
    assert now - timedelta(days=90) == window.funding_reach
    assert now - timedelta(hours=672) == window.funding_scan_from


def test_lookback_start_never_before_the_reach() -> None:
    """A live window wider than the reach starts at the reach."""
    now = datetime(2026, 6, 15, 0, 20, tzinfo=UTC)
    sync = _sync({"price_history_reach": "10m"})
    window = resolve_pass(sync, SyncMode.live(), now)
    assert datetime(2026, 6, 15, tzinfo=UTC) == window.lookback_start


def test_reach_is_parsed_once_at_load() -> None:
    """The parsed reaches are value objects: absolute, relative or max."""
    sync = _sync({"price_history_reach": "2w", "funding_settlement_reach": "2025-01-02"})
    assert Reach("2w", ago=timedelta(weeks=2)) == sync.price_history_reach_parsed
    assert Reach("2025-01-02", at=datetime(2025, 1, 2, tzinfo=UTC)) == (
        sync.funding_settlement_reach_parsed
    )
    assert sync.price_history_reach_parsed is sync.price_history_reach_parsed
    assert FIRST_CANDLE_TIME == Reach.parse("max").resolve(
        now=PINNED_NOWS[0], earliest=FIRST_CANDLE_TIME
    )


def test_absolute_reach_after_now_is_refused() -> None:
    """Resolving an absolute reach against an earlier clock is a ValueError, as before."""
    sync = _sync({"funding_settlement_reach": "2025-01-02"})
    with pytest.raises(ValueError, match="is in the future"):
        resolve_pass(sync, SyncMode.full(), datetime(2024, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="is in the future"):
        Reach.parse("2025-01-02").resolve(
            now=datetime(2024, 1, 1, tzinfo=UTC), earliest=FIRST_SETTLEMENT_TIME
        )
