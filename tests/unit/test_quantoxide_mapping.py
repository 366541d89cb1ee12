"""The README's quantoxide → YAML key mapping stays in step with ``qx-actors config``.

Every key ``qx-actors config`` prints is in the table, every key the table names exists, and
every ``SyncConfig`` builder method of quantoxide 0.5.4 and 0.6.0 has its row (the method
names are facts read from quantoxide's ``src/sync/config.rs`` at those tags).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from qx_actors.app import cli

README = Path(__file__).resolve().parents[2] / "README.md"
DEMO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "demo.yaml"

#: ``SyncConfig::with_*`` of quantoxide 0.5.4 and 0.6.0 (0.6.0 renamed the two ``ws`` ones).
QUANTOXIDE_METHODS = {
    "with_rest_api_timeout",
    "with_rest_api_rate_limit_unauth_requests_per_second",
    "with_ws_enabled",
    "with_stream_enabled",
    "with_ws_api_disconnect_timeout",
    "with_stream_api_disconnect_timeout",
    "with_rest_api_error_cooldown",
    "with_rest_api_error_max_trials",
    "with_price_history_batch_size",
    "with_price_history_reach",
    "with_price_history_reach_max",
    "with_funding_settlement_reach",
    "with_funding_settlement_reach_max",
    "with_price_history_re_sync_interval",
    "with_price_history_re_backfill_interval",
    "with_price_history_flag_gap_range",
    "with_funding_settlement_flag_missing_range",
    "with_live_price_tick_max_interval",
    "with_funding_settlement_retry_interval",
    "with_restart_interval",
    "with_shutdown_timeout",
}


def mapping_rows() -> list[tuple[str, str]]:
    """(quantoxide cell, qx_actors key cell) of each row of the README's mapping table."""
    text = README.read_text()
    section = text.split("### Configuration: builder method → YAML key", 1)[1]
    section = section.split("\n### ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and not set(cells[0]) <= set("-") and "qx_actors key" not in cells:
            rows.append((cells[0], cells[1]))
    return rows


def printed_keys(capsys: pytest.CaptureFixture[str]) -> set[str]:
    """Every key path ``qx-actors config`` prints, dotted (``sync.rest_timeout_s``)."""
    assert 0 == cli.main(["config", "--config", str(DEMO_CONFIG)])
    data = yaml.safe_load(capsys.readouterr().out)

    def walk(node: dict[str, Any], prefix: str) -> set[str]:
        keys = set()
        for key, value in node.items():
            if isinstance(value, dict):
                keys |= walk(value, f"{prefix}{key}.")
            else:
                keys.add(f"{prefix}{key}")
        return keys

    return walk(data, "")


def test_every_printed_key_is_mapped_and_every_mapped_key_exists(
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = printed_keys(capsys)
    named: set[str] = set()
    for _, cell in mapping_rows():
        named.update(re.findall(r"`([a-z_.]+)`", cell))
    assert named - keys == set(), "the README maps keys that qx-actors config does not print"
    assert keys - named == set(), "keys qx-actors config prints are missing from the mapping"


def test_every_quantoxide_builder_method_has_a_row() -> None:
    methods: set[str] = set()
    for cell, _ in mapping_rows():
        methods.update(re.findall(r"`(with_[a-z_]+)\(", cell))
    assert QUANTOXIDE_METHODS - methods == set()
    assert methods - QUANTOXIDE_METHODS == set()
