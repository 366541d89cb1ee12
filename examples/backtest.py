"""One strategy, unchanged, over a live run and over a replay of what that run recorded.

``strategy`` reads the update stream (``SyncUpdate.PriceTick``) and decides; it does not know
whether the updates are live or replayed. The program syncs live prices from the bundled
simulator into a SQLite file for ``--ticks`` ticks, then replays those ticks from the file
(``SyncMode.replay``, at max speed) through the same ``update_receiver()``, and prints the
decisions of both runs and whether they match::

    python examples/backtest.py --ticks 200
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path

from qx_actors import SyncAlreadyShutdown, SyncEngine, SyncMode, SyncUpdate
from qx_actors.testing import fast_config, running_simulator


def strategy(updates: Iterable[SyncUpdate], step: float = 0.5) -> Iterator[str]:
    """Follow the trend: buy when the price has risen ``step`` USD since the last decision,
    sell when it has fallen as much; one decision line each."""
    anchor: float | None = None
    for update in updates:
        if not isinstance(update, SyncUpdate.PriceTick):
            continue
        tick = update.tick
        if anchor is None:
            anchor = tick.last_price
        elif abs(tick.last_price - anchor) >= step:
            side = "buy" if tick.last_price > anchor else "sell"
            yield f"{tick.time:%H:%M:%S.%f} {side} at {tick.last_price:.1f}"
            anchor = tick.last_price


def first_ticks(engine: SyncEngine, count: int) -> Iterator[SyncUpdate]:
    """The run's updates until ``count`` ticks were seen (then the run is shut down)."""
    receiver = engine.update_receiver()
    controller = engine.start()
    seen = 0
    for update in receiver:
        yield update
        if isinstance(update, SyncUpdate.PriceTick):
            seen += 1
            if seen == count:
                break
    # a replay ends itself at the end of its window: it may already be shutting down
    with contextlib.suppress(SyncAlreadyShutdown):
        controller.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=200, help="live ticks to record")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory, running_simulator(tick_rate_per_s=50) as sim:
        url = f"sqlite:///{Path(directory) / 'backtest.db'}"
        live_engine = SyncEngine(fast_config(url, sim, mode="live"))
        live_ticks: list[SyncUpdate] = []

        def recording(updates: Iterable[SyncUpdate]) -> Iterator[SyncUpdate]:
            for update in updates:
                if isinstance(update, SyncUpdate.PriceTick):
                    live_ticks.append(update)
                yield update

        live = list(strategy(recording(first_ticks(live_engine, args.ticks))))
        first = live_ticks[0].tick.time  # type: ignore[attr-defined]
        last = live_ticks[-1].tick.time  # type: ignore[attr-defined]
        replay_engine = SyncEngine(
            fast_config(url, sim), SyncMode.replay(first, last + timedelta(microseconds=1))
        )
        replayed = list(strategy(first_ticks(replay_engine, len(live_ticks))))
    print(f"live:   {len(live_ticks)} ticks, {len(live)} decisions")
    for line in live:
        print(f"  live   {line}")
    for line in replayed:
        print(f"  replay {line}")
    print(f"replay: {len(replayed)} decisions")
    print(f"same decisions: {live == replayed}")


if __name__ == "__main__":
    main()
