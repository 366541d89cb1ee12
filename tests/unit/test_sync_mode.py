"""SyncMode: quantoxide's constructors and Display, our log names."""

from __future__ import annotations

import re

import pytest

from qx_actors import DatabaseInUseError, DatabaseUnavailable, Lookback, State, SyncMode, SyncStatus


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


def test_a_lookback_beyond_the_reach_is_refused_from_code_as_from_yaml() -> None:
    """SyncEngine(config, SyncMode.live(...)) raises the ConfigError that YAML gives."""
    from qx_actors import ConfigError, SyncEngine
    from qx_actors.config import config_from_mapping

    base = {"database": "sqlite:///:memory:", "sync": {"price_history_reach": "3d"}}
    with pytest.raises(ConfigError) as from_yaml:
        config_from_mapping({**base, "mode": "live", "lookback": "100 x 1d"})
    with pytest.raises(ConfigError) as from_code:
        SyncEngine(config_from_mapping(base), SyncMode.live("100 x 1d"))
    assert "lookback" == from_code.value.path == from_yaml.value.path

    # the same text, but for the minute "now - lookback" falls on (each read the clock)
    def minute_free(text: str) -> str:
        return re.sub(r"reaches back to \S+ \S+Z", "reaches back to …", text)

    assert minute_free(str(from_yaml.value)) == minute_free(str(from_code.value))
    assert "100 x 1d" in str(from_code.value) and "price_history_reach" in str(from_code.value)
    # within the reach it builds
    SyncEngine(config_from_mapping(base), SyncMode.live("2 x 1d"))


@pytest.mark.parametrize(
    ("status", "display", "text"),
    [
        (SyncStatus(State.NOT_INITIATED), "Not synced (Not initiated)", "NotInitiated"),
        (SyncStatus(State.STARTING), "Not synced (Starting)", "Running.Starting"),
        (SyncStatus(State.IN_PROGRESS), "Not synced (In progress)", "Running.InProgress"),
        (SyncStatus(State.RESTARTING), "Not synced (Restarting)", "Running.Restarting"),
        (SyncStatus(State.SYNCED), "Synced", "Running.Synced"),
        (SyncStatus(State.SYNCED, degraded=True), "Synced (degraded)", "Running.Synced (degraded)"),
        (SyncStatus(State.BACKFILLED), "Backfilled", "Running.Backfilled"),
        (SyncStatus(State.SHUTDOWN_INITIATED), "Shutdown initiated", "ShutdownInitiated"),
        (SyncStatus(State.SHUTDOWN), "Shutdown", "Shutdown"),
        (
            SyncStatus(State.RECOVERING, DatabaseUnavailable("open: password authentication")),
            "Not synced (Failed: DatabaseUnavailable: open: password authentication)",
            "Running.Recovering: DatabaseUnavailable: open: password authentication",
        ),
        (
            SyncStatus(State.FAILED, DatabaseInUseError("held by run x")),
            "Terminated: DatabaseInUseError: held by run x",
            "Failed: DatabaseInUseError: held by run x",
        ),
    ],
)
def test_status_display_reads_like_quantoxide(status: SyncStatus, display: str, text: str) -> None:
    """str() is quantoxide's Display; .text and .name keep the dotted names of logs and API."""
    assert display == str(status)
    assert text == status.text
    assert status.text.startswith(status.name)
