"""``qx-actors demo``: the bundled simulator plus a full sync into a local SQLite file.

The zero-setup way to see the whole system work: history is backfilled over REST, settlements
synced, then live ticks follow over the Stream API until Ctrl-C (or ``--duration``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from qx_actors.app._service import check_sqlite_directory, run_until_signal
from qx_actors.config import QxConfig, config_from_mapping, load_config
from qx_actors.logs import configure_logging
from qx_actors.redact import redact_url
from qx_actors.simulator import Simulator, SimulatorConfig

__all__ = [
    "DEMO_CONFIG",
    "DEMO_SIMULATOR_RATE_LIMIT",
    "demo_config",
    "run_demo",
]

#: The demo's defaults; ``config/demo.yaml`` in the repository mirrors them.
DEMO_CONFIG: dict[str, Any] = {
    "mode": "full",
    "database": "sqlite:///data/demo.db",
    "exchange": {
        "rest_url": "http://127.0.0.1:7357",
        "stream_url": "ws://127.0.0.1:7358/v1",
        "stream_enabled": True,
    },
    "sync": {
        "rest_rate_limit_per_s": 20,
        "rest_error_cooldown_s": 1,
        "price_history_reach": "3d",
        "funding_settlement_reach": "30d",
        "restart_interval_s": 2,
    },
    "logging": {"format": "console", "level": "info"},
}

#: The simulator allows the demo's rate; the real exchange allows 1 request/s.
DEMO_SIMULATOR_RATE_LIMIT = 25.0


def demo_config(config_path: str | None, database: str | None) -> QxConfig:
    """The demo config (from ``config_path`` if given), with its database overridden."""
    config = load_config(config_path) if config_path else config_from_mapping(DEMO_CONFIG)
    if database is not None:
        data = config.to_dict()
        data["database"] = database
        config = config_from_mapping(data)
    return config


def run_demo(
    *,
    config_path: str | None = None,
    database: str | None = None,
    duration_s: float | None = None,
    tui: bool = False,
) -> int:
    """Start the simulator, sync into SQLite until Ctrl-C or ``duration_s`` (``q`` in the TUI);
    exit code."""
    config = demo_config(config_path, database)
    if database is None and config_path is None:
        # the demo's own data/ directory; a database the user names is created only where
        # its directory exists (a mistyped path is an error, not a new tree)
        Path(DEMO_CONFIG["database"].removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
    check_sqlite_directory(config.database)
    with Simulator(SimulatorConfig(rate_limit_per_s=DEMO_SIMULATOR_RATE_LIMIT)) as simulator:
        data = config.to_dict()
        data["exchange"]["rest_url"] = simulator.rest_url
        data["exchange"]["stream_url"] = simulator.stream_url
        config = config_from_mapping(data)
        configure_logging(config.logging)
        print(
            f"qx-actors demo: simulator REST {simulator.rest_url}, stream {simulator.stream_url}; "
            f"syncing mode {config.mode} into {redact_url(config.database)} (Ctrl-C to stop)",
            file=sys.stderr,
        )
        return run_until_signal(
            config,
            config.sync_mode,
            progress=sys.stderr.isatty(),
            tui=tui,
            duration_s=duration_s,
            where="qx-actors demo",
        )
