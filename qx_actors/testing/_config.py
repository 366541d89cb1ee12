"""A config for tests: the simulator's URLs, a database, and intervals short enough for a test."""

from __future__ import annotations

from typing import Any

from qx_actors.config import QxConfig, config_from_mapping
from qx_actors.simulator import Simulator

#: Sync settings that make retries and restarts happen within a test (any can be overridden).
FAST_SYNC: dict[str, Any] = {
    "rest_rate_limit_per_s": 1000,
    "rest_timeout_s": 5.0,
    "rest_error_cooldown_s": 0.05,
    "restart_interval_s": 0.1,
    "shutdown_timeout_s": 4.0,
    "price_history_reach": "1d",
    "funding_settlement_reach": "2d",
}


def fast_config_data(
    database: str,
    simulator: Simulator | None = None,
    *,
    mode: str = "backfill",
    rest_url: str | None = None,
    stream_url: str | None = None,
    stream: bool | None = None,
    lookback: str | None = None,
    exchange: dict[str, Any] | None = None,
    logging: dict[str, Any] | None = None,
    **sync: Any,
) -> dict[str, Any]:
    """The mapping :func:`fast_config` validates (e.g. to write a YAML file for the CLI)."""
    urls: dict[str, Any] = {}
    if simulator is not None:
        urls = {"rest_url": simulator.rest_url, "stream_url": simulator.stream_url}
    if rest_url is not None:
        urls["rest_url"] = rest_url
    if stream_url is not None:
        urls["stream_url"] = stream_url
    if stream is not None:
        urls["stream_enabled"] = stream
    data: dict[str, Any] = {
        "mode": mode,
        "database": database,
        "exchange": {**urls, **(exchange or {})},
        "sync": {**FAST_SYNC, **sync},
    }
    if lookback is not None:
        data["lookback"] = lookback
    if logging is not None:
        data["logging"] = logging
    return data


def fast_config(database: str, simulator: Simulator | None = None, **options: Any) -> QxConfig:
    """A validated config against ``simulator`` (or ``rest_url``/``stream_url``) writing to
    ``database``, with :data:`FAST_SYNC` overridden by the sync settings given as keywords.

    Keywords (see :func:`fast_config_data`): ``mode`` (default ``backfill``), ``stream``
    (``exchange.stream_enabled``; ``None``: the default, on), ``lookback``, ``exchange`` and
    ``logging`` (merged into those sections), and any ``sync`` setting.
    """
    return config_from_mapping(fast_config_data(database, simulator, **options))
