"""A pykka actor of the application, subscribed with ``controller.subscribe(actor_ref)``.

The engine tells every update to the actor (its ``on_receive`` runs on the actor's own thread);
the actor prints statuses and ticks and, after ``--ticks`` ticks, tells the main thread it has
seen enough. The main thread shuts the run down, then stops the actor: pykka handles the stop
after every update already told, so the actor prints the run's last status first.

Start the simulator in another terminal (``qx-actors simulate``), then::

    python examples/actor.py [--ticks 10] [--rest-url URL] [--stream-url URL] [--database URL]

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
from typing import Any

import pykka

from qx_actors import (
    QxConfig,
    QxError,
    State,
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


class TickPrinter(pykka.ThreadingActor):
    """Prints the updates it is told; sets ``enough`` after ``ticks_wanted`` ticks."""

    def __init__(self, ticks_wanted: int, enough: threading.Event) -> None:
        super().__init__()
        self.ticks_wanted = ticks_wanted
        self.enough = enough
        self.ticks = 0

    def on_receive(self, message: Any) -> None:
        match message:
            case SyncUpdate.Status(status=status):
                print(f"status {status.name}", flush=True)
                if status.is_stopped:
                    self.enough.set()  # the run ended by itself (e.g. Failed)
            case SyncUpdate.PriceTick(tick=tick):
                self.ticks += 1
                print(f"tick {self.ticks} {tick.time.isoformat()} {tick.last_price}", flush=True)
                if self.ticks == self.ticks_wanted:
                    self.enough.set()
            # An actor's mailbox is not bounded: actors are told every update, never Lagged.

    def on_stop(self) -> None:
        print(f"actor stopped after {self.ticks} ticks", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="Print a live sync's updates from an actor.")
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
        print(f"actor.py: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.logging)  # the engine's own log lines, on stderr
    enough = threading.Event()
    printer = TickPrinter.start(args.ticks, enough)
    controller = engine.start()
    controller.subscribe(printer)  # every update from now on is told to the actor
    try:
        if not enough.wait(args.timeout):
            print(f"no {args.ticks} ticks within {args.timeout} s", file=sys.stderr)
    finally:  # also on Ctrl-C
        if not controller.status_snapshot().is_stopped:
            try:
                controller.shutdown()  # blocks until Shutdown
            except SyncError as exc:  # it ended by itself meanwhile, or did not stop cleanly
                print(f"shutdown: {exc}", file=sys.stderr)
        printer.stop()  # after the updates already in its mailbox
    final = controller.status_snapshot()
    print(f"final {final.name}", flush=True)
    return 0 if final.state is State.SHUTDOWN and enough.is_set() else 1


if __name__ == "__main__":
    sys.exit(main())
