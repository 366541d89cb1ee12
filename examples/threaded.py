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

import sys
import threading

from _setup import build_engine, parse_arguments, shut_down

from qx_actors import State, SyncMode, SyncUpdate, UpdateReceiver


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
    args = parse_arguments("Print a live sync's updates from a thread.", ticks=True)
    engine = build_engine(args, SyncMode.live())
    if engine is None:
        return 2
    receiver = engine.update_receiver()  # taken before start: it misses nothing
    enough = threading.Event()
    reader = threading.Thread(target=read_updates, args=(receiver, args.ticks, enough))
    reader.start()
    controller = engine.start()
    try:
        if not enough.wait(args.timeout):
            print(f"no {args.ticks} ticks within {args.timeout} s", file=sys.stderr)
    finally:  # also on Ctrl-C
        shut_down(controller)  # blocks until Shutdown
        reader.join()
    final = controller.status_snapshot()
    print(f"final {final.name}", flush=True)
    return 0 if final.state is State.SHUTDOWN and enough.is_set() else 1


if __name__ == "__main__":
    sys.exit(main())
