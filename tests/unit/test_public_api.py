"""The public surface: one sorted __all__, everything importable from qx_actors."""

from __future__ import annotations

import qx_actors


def test_all_is_sorted_and_importable() -> None:
    """qx_actors.__all__ is sorted and every name resolves."""
    assert sorted(qx_actors.__all__) == qx_actors.__all__
    for name in qx_actors.__all__:
        assert getattr(qx_actors, name) is not None


def test_update_variants_are_reachable_from_sync_update() -> None:
    """SyncUpdate.Status / PriceTick / PriceHistoryState / FundingSettlementsState / Lagged."""
    variants = ["Status", "PriceTick", "PriceHistoryState", "FundingSettlementsState", "Lagged"]
    for variant in variants:
        assert issubclass(getattr(qx_actors.SyncUpdate, variant), qx_actors.SyncUpdate)
