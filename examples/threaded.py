"""A threaded application reading the engine's updates with ``update_receiver()``.

A reader thread prints every status and tick of a live sync; after ``--ticks`` ticks the main
thread shuts the run down, and the reader's loop ends by itself once ``Shutdown`` was read.

Start the simulator in another terminal (``qx-actors simulate``), then::

    python examples/threaded.py [--ticks 10] [--rest-url URL] [--stream-url URL] [--database URL]

The base config is ``config/demo.yaml`` (``--config`` or ``QX_CONFIG``); ``--rest-url``,
``--stream-url`` and ``--database`` (or ``QX_REST_URL``, ``QX_STREAM_URL``, ``QX_DATABASE``)
override its values. Exit code 0 once the run ended in ``Shutdown``, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

from qx_actors import (
    QxConfig,
    QxError,
    State,
    SyncEngine,
    SyncError,
    SyncMode,
    SyncUpdate,
    UpdateReceiver,
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


def read_updates(receiver: UpdateReceiver, ticks_wanted: int, enough: threading.Event) -> None:
    """Print every update until the run ends; set ``enough`` after ``ticks_wanted`` ticks."""
    ticks = 0
    for update in receiver:  # ends once the run has ended and every update was read
        match update:
            case SyncUpdate.Status(status=status):
                print(f"status {status.name}", flush=True)
                if status.is_stopped:
                    enough.set()  # the run ended by itself (e.g. Failed)
            case SyncUpdate.PriceTick(tick=tick):
                ticks += 1
                print(f"tick {ticks} {tick.time.isoformat()} {tick.last_price}", flush=True)
                if ticks == ticks_wanted:
                    enough.set()
            case SyncUpdate.Lagged(missed=missed):
                print(f"lagged: {missed} updates dropped", flush=True)
    print("updates ended", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="Print a live sync's updates from a thread.")
    parser.add_argument("--config", default=os.environ.get("QX_CONFIG", str(DEMO_YAML)))
    parser.add_argument("--rest-url", default=os.environ.get("QX_REST_URL"))
    parser.add_argument("--stream-url", default=os.environ.get("QX_STREAM_URL"))
    parser.add_argument("--database", default=os.environ.get("QX_DATABASE"))
    parser.add_argument("--ticks", type=int, default=10, help="stop after this many ticks")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up after this long")
    args = parser.parse_args()

    try:
        config = build_config(args)
        engine = SyncEngine.from_config(config, SyncMode.live())
    except QxError as exc:  # e.g. a config error naming the key
        print(f"threaded.py: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.logging)  # the engine's own log lines, on stderr
    receiver = engine.update_receiver()  # taken before start: it misses nothing
    enough = threading.Event()
    reader = threading.Thread(target=read_updates, args=(receiver, args.ticks, enough))
    reader.start()
    controller = engine.start()
    try:
        if not enough.wait(args.timeout):
            print(f"no {args.ticks} ticks within {args.timeout} s", file=sys.stderr)
    finally:  # also on Ctrl-C
        if not controller.status_snapshot().is_stopped:
            try:
                controller.shutdown()  # blocks until Shutdown
            except SyncError as exc:  # it ended by itself meanwhile, or did not stop cleanly
                print(f"shutdown: {exc}", file=sys.stderr)
        reader.join()
    final = controller.status_snapshot()
    print(f"final {final.name}", flush=True)
    return 0 if final.state is State.SHUTDOWN and enough.is_set() else 1


if __name__ == "__main__":
    sys.exit(main())
