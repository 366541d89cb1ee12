"""Chaos: the stream outlives database outages (issue 23).

The simulator publishes ticks whether or not anyone listens, as the real exchange does, at
:data:`TICK_RATE` ticks/s; the database fails under a live run for as long as the issue's
replays say, measured in ticks published (:data:`TICK_RATE` x seconds):

* PostgreSQL stopped for 20 s (:data:`PG_OUTAGE_TICKS` ticks at 50/s);
* SQLite held by another process (``BEGIN EXCLUSIVE``) for 12 s (:data:`SQLITE_LOCK_TICKS`),
  past the product's busy timeout, with a stale limit of 5 s (the stuck writer once made the
  feed "stale");
* a writer stuck longer than the stale limit (a busy timeout longer than it): the feed names
  the writer (``DatabaseBusyError``), never the stream.

Each time: ``Running.Recovering`` with the database error and ``degraded`` while the ticks are
held in memory, then ``Synced``; at most :data:`MAX_MISSING` of the ticks published during the
outage are missing from the database afterwards; no ``StaleFeedError``; one WS feed for the whole
run and no reconnect of its stream; every tick received is stored once.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from qx_actors.config import config_from_mapping
from qx_actors.domain.timeutil import to_epoch_ms, utc_now
from qx_actors.simulator import Simulator
from qx_actors.status import State, SyncStatus
from qx_actors.storage import _open
from qx_actors.testing import RunProbe
from qx_actors.testing.postgres import PgServer
from tests.chaos.chaos_helpers import (
    EngineFactory,
    Logs,
    SimFactory,
    assert_every_received_tick_stored,
    feed_counters,
    is_recovering,
    sim_config,
    sqlite_locker,
    stored_ticks,
)

#: ``QX_CHAOS_AS_WRITTEN=1``: the issue's replays to the letter, 50 ticks/s (the outages last
#: 20 s and 12 s). By default the same numbers of ticks are published five times as fast: the
#: same outages in ticks, in a fifth of the time (the SQLite lock is still held until the
#: writer reported the busy timeout, 5 s, whatever the rate).
AS_WRITTEN = os.environ.get("QX_CHAOS_AS_WRITTEN") == "1"
#: Ticks per second the simulator publishes.
TICK_RATE = 50 if AS_WRITTEN else 250
#: The PostgreSQL outage, in ticks published (20 s at the issue's 50 ticks/s).
PG_OUTAGE_TICKS = 1000
#: The SQLite lock, in ticks published (12 s at the issue's 50 ticks/s).
SQLITE_LOCK_TICKS = 600
#: The share of the ticks published during an outage that may be missing afterwards.
MAX_MISSING = 0.01


def _published_between(sim: Simulator, start: datetime, end: datetime) -> set[int]:
    """Epoch-ms times of the distinct ticks the simulator published in ``[start, end]``."""
    lo, hi = to_epoch_ms(start), to_epoch_ms(end)
    return {ms for t in sim.published_ticks() if lo <= (ms := to_epoch_ms(t.time)) <= hi}


def _wait_published(watch: RunProbe, sim: Simulator, since: datetime, count: int) -> None:
    """Read the run's updates until ``count`` ticks were published since ``since`` (the outage
    lasts that many ticks: ``count / TICK_RATE`` seconds)."""
    watch.wait_until(
        lambda: len(_published_between(sim, since, utc_now())) >= count,
        3 * count / TICK_RATE + 30,
        what=f"{count} ticks published since {since:%H:%M:%S.%f}",
    )


def _outage_figures(url: str, sim: Simulator, start: datetime, end: datetime) -> dict[str, int]:
    """Published and stored ticks of ``[start, end]``, and how many of those are missing."""
    published = _published_between(sim, start, end)
    stored = {to_epoch_ms(t.time) for t in stored_ticks(url)}
    missing = published - stored
    figures = {"published": len(published), "stored": len(published & stored)}
    figures["missing"] = len(missing)
    return figures


def _assert_stream_outlived_it(
    watch: RunProbe, logs: Logs, figures: dict[str, int], counters: dict[str, int]
) -> None:
    print(f"during the outage: {figures}; feed: {counters}")
    assert figures["published"] > 0
    assert figures["missing"] <= MAX_MISSING * figures["published"], figures
    stale = [s.text for s in watch.statuses if "StaleFeedError" in s.text]
    stale += [str(e) for e in logs if "StaleFeedError" in str(e.get("error", ""))]
    assert [] == stale
    # one feed for the whole run, its stream never dropped nor redone
    assert 1 == counters["feeds"], counters
    assert 0 == counters.get("reconnects", 0), counters


def _degraded_while_recovering(status: SyncStatus) -> bool:
    return status.state is State.RECOVERING and status.degraded


def _assert_synced_again_and_nothing_lost(
    watch: RunProbe, url: str, sim: Simulator, logs: Logs, start: datetime, end: datetime
) -> None:
    """After an outage ``[start, end]``: Synced again with ticks after it, a clean shutdown
    (not degraded), every tick received stored once, and the stream outlived the outage."""
    watch.wait_for_state(State.SYNCED, 60)
    watch.wait_until(
        lambda: bool(watch.ticks) and watch.ticks[-1].time > end, 60, what="ticks after it"
    )
    final = watch.shutdown()
    assert State.SHUTDOWN is final.state, str(final)
    assert not final.degraded
    counters = assert_every_received_tick_stored(url, sim, logs, watch.run_id)
    figures = _outage_figures(url, sim, start, end)
    _assert_stream_outlived_it(watch, logs, figures, feed_counters(logs, watch.run_id) | counters)


def _live_config(url: str, sim: Simulator, **sync: Any) -> Any:
    return config_from_mapping(sim_config(url, sim, mode="live", stream=True, **sync))


@pytest.mark.postgres
def test_postgres_stopped_20_s_under_a_live_run_loses_no_tick(
    pg: tuple[PgServer, str], sim: SimFactory, engines: EngineFactory, logs: Logs
) -> None:
    """PostgreSQL stopped for 1000 ticks (20 s at 50/s) under a live run: Recovering
    (DatabaseUnavailable, degraded, ticks waiting), Synced again; at most 1% of the ticks
    published during the outage missing; no stale feed, no stream reconnect."""
    server, url = pg
    simulator = sim(tick_rate_per_s=TICK_RATE, publish_without_subscribers=True)
    watch = engines(_live_config(url, simulator))
    watch.wait_for_state(State.SYNCED, 60)
    watch.wait_for_ticks(TICK_RATE, 30)

    down_at = utc_now()
    server.halt("fast")
    try:
        watch.wait_for(is_recovering("DatabaseUnavailable"), 40, what="Recovering (down)")
        watch.wait_for(_degraded_while_recovering, 20, what="degraded: ticks in memory")
        engine = watch.engine
        assert engine is not None
        watch.wait_until(lambda: engine.ticks_waiting() > 0, 20, what="ticks waiting")
        _wait_published(watch, simulator, down_at, PG_OUTAGE_TICKS)
        print(f"ticks waiting at the end of the outage: {engine.ticks_waiting()}")
    finally:
        server.start()
        up_at = utc_now()
    _assert_synced_again_and_nothing_lost(watch, url, simulator, logs, down_at, up_at)


def test_sqlite_locked_12_s_under_a_live_run_loses_no_tick(
    sim: SimFactory, engines: EngineFactory, tmp_path: Path, logs: Logs
) -> None:
    """Another process holds BEGIN EXCLUSIVE for 600 ticks (12 s at 50/s), past the busy
    timeout (the product's), with a stale limit of 5 s: Recovering (DatabaseBusyError), Synced
    again; at most 1% of the ticks published during the lock missing; no StaleFeedError (the
    writer was stuck, not the stream), no stream reconnect."""
    simulator = sim(tick_rate_per_s=TICK_RATE, publish_without_subscribers=True)
    path = tmp_path / "qx.db"
    url = f"sqlite:///{path}"
    watch = engines(_live_config(url, simulator, live_price_tick_max_interval_s=5.0))
    watch.wait_for_state(State.SYNCED, 60)
    with sqlite_locker(str(path)) as locker:
        watch.wait_for_ticks(TICK_RATE, 30)
        locked_at = utc_now()
        locker.lock()
        watch.wait_for(is_recovering("DatabaseBusyError"), 40, what="Recovering (busy)")
        _wait_published(watch, simulator, locked_at, SQLITE_LOCK_TICKS)
        held = locker.release()
        released_at = utc_now()
    print(f"lock held {held:.1f} s")
    _assert_synced_again_and_nothing_lost(watch, url, simulator, logs, locked_at, released_at)


def test_a_writer_that_does_not_acknowledge_is_not_a_stale_stream(
    sim: SimFactory,
    engines: EngineFactory,
    tmp_path: Path,
    logs: Logs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SQLite locked while the writer waits up to 60 s for locks and the stale limit is 2 s:
    the feed reports the writer that does not acknowledge (DatabaseBusyError), not a stale
    stream; once released, Synced, every tick received stored, no stream reconnect."""
    monkeypatch.setattr(_open, "SQLITE_BUSY_TIMEOUT_S", 60.0)
    simulator = sim(tick_rate_per_s=TICK_RATE, publish_without_subscribers=True)
    path = tmp_path / "qx.db"
    url = f"sqlite:///{path}"
    watch = engines(_live_config(url, simulator, live_price_tick_max_interval_s=2.0))
    watch.wait_for_state(State.SYNCED, 60)
    with sqlite_locker(str(path)) as locker:
        watch.wait_for_ticks(TICK_RATE, 30)
        locked_at = utc_now()
        locker.lock()
        stuck = watch.wait_for(
            is_recovering("DatabaseBusyError", "acknowledged no tick batch"),
            40,
            what="Recovering (the writer does not acknowledge)",
        )
        released_at = utc_now()
        locker.release()
    print(stuck.text)
    _assert_synced_again_and_nothing_lost(watch, url, simulator, logs, locked_at, released_at)
