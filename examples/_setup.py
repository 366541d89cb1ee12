"""What the example programs share: their command line, their engine, and a quiet shutdown.

Each example keeps only what it shows (a thread, an actor, ``async for``); this module holds
the plumbing around it. The base config is ``config/demo.yaml`` (``--config`` or
``QX_CONFIG``); ``--rest-url``, ``--stream-url`` and ``--database`` (or ``QX_REST_URL``,
``QX_STREAM_URL``, ``QX_DATABASE``) override its values.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from qx_actors import (
    QxConfig,
    QxError,
    SyncController,
    SyncEngine,
    SyncError,
    SyncMode,
    configure_logging,
    load_config,
)
from qx_actors.config import config_from_mapping

DEMO_YAML = Path(__file__).resolve().parent.parent / "config" / "demo.yaml"


def parse_arguments(description: str, *, ticks: bool) -> argparse.Namespace:
    """The examples' command line (``--ticks`` only where the example counts ticks)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=os.environ.get("QX_CONFIG", str(DEMO_YAML)))
    parser.add_argument("--rest-url", default=os.environ.get("QX_REST_URL"))
    parser.add_argument("--stream-url", default=os.environ.get("QX_STREAM_URL"))
    parser.add_argument("--database", default=os.environ.get("QX_DATABASE"))
    if ticks:
        parser.add_argument("--ticks", type=int, default=10, help="stop after this many ticks")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up after this long")
    return parser.parse_args()


def build_config(args: argparse.Namespace) -> QxConfig:
    """The base config with the URLs and the database given on the command line or in env."""
    data = load_config(args.config).to_dict()
    if args.rest_url:
        data["exchange"]["rest_url"] = args.rest_url
    if args.stream_url:
        data["exchange"]["stream_url"] = args.stream_url
    if args.database:
        data["database"] = args.database
    return config_from_mapping(data)


def build_engine(args: argparse.Namespace, mode: SyncMode) -> SyncEngine | None:
    """The engine of the command line's config, its log lines on stderr; ``None`` once a
    config error was printed in one line (e.g. naming the key)."""
    try:
        config = build_config(args)
        engine = SyncEngine.from_config(config, mode)
    except QxError as exc:
        print(f"{Path(sys.argv[0]).name}: {exc}", file=sys.stderr)
        return None
    configure_logging(config.logging)  # the engine's own log lines, on stderr
    return engine


def shut_down(controller: SyncController) -> None:
    """Shut the run down (blocks until ``Shutdown``) unless it has ended already."""
    if controller.status_snapshot().is_stopped:
        return
    try:
        controller.shutdown()
    except SyncError as exc:  # it ended by itself meanwhile, or did not stop cleanly
        print(f"shutdown: {exc}", file=sys.stderr)
