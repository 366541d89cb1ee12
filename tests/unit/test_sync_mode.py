"""SyncMode: quantoxide's constructors and Display, our log names."""

from __future__ import annotations

import pytest

from qx_actors import Lookback, SyncMode


@pytest.mark.parametrize(
    ("mode", "display", "name", "feed"),
    [
        (SyncMode.backfill(), "Backfill", "backfill", False),
        (SyncMode.live_no_lookback(), "Live", "live", True),
        (
            SyncMode.live_with_lookback(Lookback(20, "5m")),
            "Live (lookback: 20 x 5m)",
            "live (lookback: 20 x 5m)",
            True,
        ),
        (SyncMode.full(), "Full", "full", True),
    ],
)
def test_display_name_and_feed(mode: SyncMode, display: str, name: str, feed: bool) -> None:
    assert display == str(mode)
    assert name == mode.name
    assert feed is mode.live_feed_active


def test_quantoxide_constructors_equal_ours() -> None:
    assert SyncMode.live() == SyncMode.live_no_lookback()
    assert SyncMode.live("20 x 5m") == SyncMode.live_with_lookback("20 x 5m")
    assert SyncMode.live(Lookback(3, "1h")) == SyncMode.live_with_lookback(Lookback(3, "1h"))
