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

import sys
import threading
from typing import Any

import pykka
from _setup import build_engine, parse_arguments, shut_down

from qx_actors import State, SyncMode, SyncUpdate


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
    args = parse_arguments("Print a live sync's updates from an actor.", ticks=True)
    engine = build_engine(args, SyncMode.live())
    if engine is None:
        return 2
    enough = threading.Event()
    printer = TickPrinter.start(args.ticks, enough)
    controller = engine.start()
    controller.subscribe(printer)  # every update from now on is told to the actor
    try:
        if not enough.wait(args.timeout):
            print(f"no {args.ticks} ticks within {args.timeout} s", file=sys.stderr)
    finally:  # also on Ctrl-C
        shut_down(controller)  # blocks until Shutdown
        printer.stop()  # after the updates already in its mailbox
    final = controller.status_snapshot()
    print(f"final {final.name}", flush=True)
    return 0 if final.state is State.SHUTDOWN and enough.is_set() else 1


if __name__ == "__main__":
    sys.exit(main())
