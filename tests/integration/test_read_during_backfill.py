"""Reads never block the writer: the read API in a loop (and a snapshot held open the whole
time) while an engine backfills into the same database, on both backends.

SQLite readers read a WAL snapshot, PostgreSQL readers an MVCC one: the backfill completes
while they read, each read sees one consistent state (the 1m rows and the 1h rollups of the
same moment agree), and a long-held snapshot keeps seeing the state it started with.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

from qx_actors.status import State
from qx_actors.storage import Database, NoDatabaseError
from tests.integration.conftest import Harness


def open_when_created(url: str, timeout: float = 20.0) -> Database:
    """A reader, as soon as the engine has created the schema."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return Database(url)
        except NoDatabaseError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def counts(db: Database, start: datetime, end: datetime) -> tuple[int, int, int]:
    """In one snapshot: 1m rows, minutes summed over the 1h rollups, over the 1d rollups."""
    with db.snapshot():
        minutes = len(db.candles(start, end))
        hours = sum(row.minutes for row in db.candles(start, end, "1h"))
        days = sum(row.minutes for row in db.candles(start, end, "1d"))
    return minutes, hours, days


def test_reads_never_block_the_backfill(harness: Harness) -> None:
    """A read loop (1m, 1h, 1d, facts) and a snapshot held open from the start run beside a
    backfill of two days in pages of 100: the backfill completes, the loop saw the history
    grow, every read agreed with itself, and the held snapshot never moved."""
    url = harness.database_url
    sim = harness.simulator()
    run = harness.start(harness.config(sim, price_history_reach="2d", price_history_batch_size=100))
    # whole days around the reach: the 1d rollups cover exactly the same minutes
    today = harness.now().replace(hour=0, minute=0, second=0, microsecond=0)
    start, end = today - timedelta(days=3), today + timedelta(days=1)

    held = open_when_created(url)
    seen: list[tuple[int, int, int]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read_loop() -> None:
        try:
            with Database(url) as db:
                while not stop.is_set():
                    seen.append(counts(db, start, end))
                    db.price_history_facts()
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    reader = threading.Thread(target=read_loop, name="test-read-loop")
    try:
        with held.snapshot():
            first = counts(held, start, end)
            reader.start()
            status = run.wait(State.BACKFILLED, timeout=60)
            # the writer committed everything while this snapshot stayed open
            assert first == counts(held, start, end)
    finally:
        stop.set()
        reader.join(30)
        held.close()
    assert State.BACKFILLED == status.state, status
    assert [] == errors
    with Database(url) as db:
        final = counts(db, start, end)
    # two days of minutes (a few may fall after ``end`` when the test runs across midnight)
    assert final[0] >= 2 * 1440 - 5 and final[0] == final[1] == final[2]
    assert len(seen) >= 3
    assert all(m == h == d for m, h, d in seen), [s for s in seen if len(set(s)) > 1][:3]
    grown = [m for m, _, _ in seen]
    assert grown == sorted(grown)
    assert len(set(grown)) >= 2, "the reads never saw the backfill progress"
    run.shutdown()
