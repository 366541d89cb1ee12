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

import asyncio
import sys

from _setup import build_engine, parse_arguments, shut_down

from qx_actors import State, SyncController, SyncEngine, SyncMode, SyncUpdate


async def shutdown(controller: SyncController) -> None:
    """Shut the run down without blocking the event loop (``shutdown()`` blocks)."""
    await asyncio.to_thread(shut_down, controller)


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
    args = parse_arguments("Backfill, following the run with async for.", ticks=False)
    engine = build_engine(args, SyncMode.backfill())
    if engine is None:
        return 2
    return 0 if asyncio.run(follow(engine, args.timeout)) else 1


if __name__ == "__main__":
    sys.exit(main())
