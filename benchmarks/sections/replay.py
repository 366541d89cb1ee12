"""Section ``replay``: how fast a recording comes back through the update stream.

A SQLite database is filled with a day of recording: one tick every 400 ms (216,000 ticks;
``--quick``: two hours, 18,000) and the day's 1m candles, stored the way the DB writer stores
them. ``SyncMode.replay(start, end, speed="max")`` then delivers them through
``update_receiver()`` to a consumer that only counts: *updates/s at max* is every data update
(ticks and ``CandleClosed``) over the wall time from ``start()`` to the receiver's end. The
consumer also checks that the ticks came in time order and that none was missing or repeated,
so the figure is of a replay that was exact. Information only (the issue sets no target).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import Report, Row, log

from qx_actors import SyncAlreadyShutdown, SyncEngine, SyncMode, SyncUpdate
from qx_actors.domain.values import Candle, PriceTick
from qx_actors.storage import open_storage
from qx_actors.testing import fast_config
from qx_actors.updates import ReceiverClosed

#: Where the recording starts (any whole minute in the past).
START = datetime(2026, 1, 5, tzinfo=UTC)
TICK_EVERY = timedelta(milliseconds=400)
#: Nowhere: a replay never talks to the exchange.
NOWHERE = {"rest_url": "http://127.0.0.1:9", "stream_url": "ws://127.0.0.1:9/v1"}


def record(url: str, span: timedelta) -> tuple[int, int]:
    """Fill ``url`` with ``span`` of ticks and 1m candles; (ticks, candles)."""
    count = int(span / TICK_EVERY)
    ticks = [
        PriceTick(time=START + i * TICK_EVERY, last_price=90_000.0 + (i % 1000) * 0.5)
        for i in range(count)
    ]
    minutes = int(span / timedelta(minutes=1))
    candles = [
        Candle(START + timedelta(minutes=m), 90_000.0, 90_010.0, 89_990.0, 90_005.0, 1.0)
        for m in range(minutes)
    ]
    storage = open_storage(url)
    try:
        # newest first, in pages: as the exchange sends candles and the writer stores them
        for first in range(0, minutes, 1000):
            storage.upsert_candles(candles[first : first + 1000][::-1], now=START + 2 * span)
        for first in range(0, count, 10_000):
            storage.insert_new_ticks(ticks[first : first + 10_000])
    finally:
        storage.close()
    return count, minutes


def run(report: Report, opts: argparse.Namespace, workdir: Path) -> None:
    """Replay a recording at max speed and count updates/s."""
    s = "replay"
    span = timedelta(hours=2) if opts.quick else timedelta(days=1)
    url = f"sqlite:///{workdir / 'replay.db'}"
    log(f"[replay] a recording of {span} at one tick per 400 ms, replayed at max speed")
    recorded_ticks, recorded_minutes = record(url, span)
    engine = SyncEngine(fast_config(url, **NOWHERE), SyncMode.replay(START, START + span, "max"))
    receiver = engine.update_receiver()
    ticks = minutes = 0
    last_tick: datetime | None = None
    in_order = True
    started = time.perf_counter()
    engine.start()
    try:
        while True:
            try:
                update = receiver.get(timeout=60)
            except ReceiverClosed:
                break
            if isinstance(update, SyncUpdate.PriceTick):
                if last_tick is not None and update.tick.time <= last_tick:
                    in_order = False
                last_tick = update.tick.time
                ticks += 1
            elif isinstance(update, SyncUpdate.CandleClosed):
                minutes += 1
    finally:
        elapsed = time.perf_counter() - started
        with contextlib.suppress(SyncAlreadyShutdown):  # it ends itself at the window's end
            engine.shutdown()
    exact = in_order and ticks == recorded_ticks and minutes == recorded_minutes
    rate = (ticks + minutes) / elapsed
    report.add(
        Row(
            s,
            "updates/s at max",
            rate,
            note=f"{ticks:,} ticks + {minutes:,} minutes in {elapsed:.2f} s (start to end of "
            f"the stream); exact and in order: {exact}",
        )
    )
    report.add(
        Row(
            s,
            "replay exact",
            1.0 if exact else 0.0,
            target="1",
            ok=exact,
            note=f"recorded {recorded_ticks:,} ticks, {recorded_minutes:,} minutes",
        )
    )
    report.figures["replay"] = {
        "ticks": ticks,
        "minutes": minutes,
        "elapsed_s": elapsed,
        "updates_per_s": rate,
        "exact": exact,
    }
