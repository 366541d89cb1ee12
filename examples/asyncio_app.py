"""An asyncio application reading the engine's updates with ``async for``.

``engine.updates()`` is the asyncio receiver: bounded like ``update_receiver()``, ``Lagged``
arrives as an item, and the loop ends by itself once the run has ended and every update was
read. This program runs a backfill, prints the statuses and the price-history state, and shuts
the run down once it reports ``Running.Backfilled`` (``shutdown()`` blocks, so it runs in a
worker thread; the event loop never blocks).

Start the simulator in another terminal (``qx-actors simulate``), then::

    python examples/asyncio_app.py [--rest-url URL] [--database URL]

The base config is ``config/demo.yaml`` (``--config`` or ``QX_CONFIG``); ``--rest-url``,
``--stream-url`` and ``--database`` (or ``QX_REST_URL``, ``QX_STREAM_URL``, ``QX_DATABASE``)
override its values. Exit code 0 once the run ended in ``Shutdown``, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from qx_actors import (
    QxConfig,
    QxError,
    State,
    SyncController,
    SyncEngine,
    SyncError,
    SyncMode,
    SyncUpdate,
    configure_logging,
    load_config,
)
from qx_actors.config import config_from_mapping

DEMO_YAML = Path(__file__).resolve().parent.parent / "config" / "demo.yaml"


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


async def shutdown(controller: SyncController) -> None:
    """Shut the run down without blocking the event loop."""
    if controller.status_snapshot().is_stopped:
        return
    try:
        await asyncio.to_thread(controller.shutdown)
    except SyncError as exc:  # it ended by itself meanwhile, or did not stop cleanly
        print(f"shutdown: {exc}", file=sys.stderr)


async def follow(engine: SyncEngine, timeout: float) -> bool:
    """Run until Backfilled, then shut down; whether Backfilled was reached in time."""
    updates = engine.updates()  # taken before start: it misses nothing
    controller = engine.start()
    backfilled = False
    try:
        async with asyncio.timeout(timeout):
            async for update in updates:  # ends once the run has ended and all was read
                match update:
                    case SyncUpdate.Status(status=status):
                        print(f"status {status.name}", flush=True)
                        if status.state is State.BACKFILLED and not backfilled:
                            backfilled = True
                            await shutdown(controller)
                    case SyncUpdate.PriceHistoryState(state=state) if state.earliest:
                        span = f"{state.earliest:%Y-%m-%d %H:%M} .. {state.latest:%Y-%m-%d %H:%M}"
                        print(f"history {span}, {len(state.gaps)} gaps", flush=True)
                    case SyncUpdate.Lagged(missed=missed):
                        print(f"lagged: {missed} updates dropped", flush=True)
    except TimeoutError:
        print(f"not backfilled within {timeout} s", file=sys.stderr)
    finally:  # also on Ctrl-C (the task is cancelled)
        await shutdown(controller)
    final = controller.status_snapshot()
    print(f"final {final.name}", flush=True)
    return backfilled and final.state is State.SHUTDOWN


def main() -> int:
    parser = argparse.ArgumentParser(description="Backfill, following the run with async for.")
    parser.add_argument("--config", default=os.environ.get("QX_CONFIG", str(DEMO_YAML)))
    parser.add_argument("--rest-url", default=os.environ.get("QX_REST_URL"))
    parser.add_argument("--stream-url", default=os.environ.get("QX_STREAM_URL"))
    parser.add_argument("--database", default=os.environ.get("QX_DATABASE"))
    parser.add_argument("--timeout", type=float, default=60.0, help="give up after this long")
    args = parser.parse_args()

    try:
        config = build_config(args)
        engine = SyncEngine.from_config(config, SyncMode.backfill())
    except QxError as exc:  # e.g. a config error naming the key
        print(f"asyncio_app.py: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.logging)  # the engine's own log lines, on stderr
    return 0 if asyncio.run(follow(engine, args.timeout)) else 1


if __name__ == "__main__":
    sys.exit(main())
