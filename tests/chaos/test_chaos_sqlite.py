"""Chaos: the SQLite file locked by another process, and the disk under it full.

* another process holds ``BEGIN EXCLUSIVE`` past the busy timeout during a backfill and
  during a live run: ``Running.Recovering`` (``DatabaseBusyError``), then ``Backfilled`` /
  ``Synced`` again once released, nothing received lost;
* a tick write that fails once (a lock just past the busy timeout): ticks keep flowing;
* the database on a small filesystem that a filler file fills up during a backfill: a clear
  ``DatabaseUnavailable: ... database or disk is full``, then ``Backfilled`` with an exact
  database once the space is back.

The engines of the lock tests wait :data:`BUSY_TIMEOUT_S` for a lock, not the product's 5 s
(``SQLITE_BUSY_TIMEOUT_S``): the same fault, shown sooner.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from qx_actors.config import config_from_mapping
from qx_actors.status import State
from qx_actors.storage import _open
from qx_actors.testing import RunProbe
from tests.chaos.chaos_helpers import (
    EngineFactory,
    Logs,
    MountTmpfs,
    SimFactory,
    assert_every_received_tick_stored,
    assert_history_exact,
    chaos_rng,
    fill_up,
    is_recovering,
    poll,
    sim_config,
    sqlite_locker,
    utc_now,
    writing_or_backfilled,
)

#: How long the engines of the lock tests wait for another connection's lock.
BUSY_TIMEOUT_S = 1.0


@pytest.fixture
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite connections opened during the test wait :data:`BUSY_TIMEOUT_S` for a lock."""
    monkeypatch.setattr(_open, "SQLITE_BUSY_TIMEOUT_S", BUSY_TIMEOUT_S)


@pytest.mark.usefixtures("short_busy_timeout")
def test_sqlite_locked_past_the_busy_timeout_during_a_backfill(
    sim: SimFactory, engines: EngineFactory, tmp_path: Path
) -> None:
    """BEGIN EXCLUSIVE by another process at a random moment of a backfill, held until the run
    reports Recovering (DatabaseBusyError, past the busy timeout): once released, Backfilled,
    exact."""
    rng = chaos_rng("sqlite-lock-backfill")
    simulator = sim(tick_rate_per_s=0)
    path = tmp_path / "qx.db"
    url = f"sqlite:///{path}"
    reach = "10d"
    started_at = utc_now()
    # paced at 10 requests/s: the ~15 pages take long enough for the lock to meet candle writes
    config = sim_config(url, simulator, price_history_reach=reach, rest_rate_limit_per_s=10)
    watch = engines(config_from_mapping(config))
    target = rng.randint(1, 10 * 1440)
    print(f"lock once {target} candles are stored")
    poll(partial(writing_or_backfilled, watch, url, 1), 60, "the first stored candles")
    with sqlite_locker(str(path)) as locker:
        poll(partial(writing_or_backfilled, watch, url, target), 60, f"{target} stored candles")
        locker.lock()
        busy = watch.wait_for(
            is_recovering("DatabaseBusyError", "locked"), 40, what="Recovering (busy)"
        )
        held = locker.release()
    print(f"lock held {held:.1f} s; {busy}")
    backfilled = watch.wait_for_state(State.BACKFILLED, 60)
    assert State.BACKFILLED is backfilled.state, watch.names()
    watch.shutdown()
    assert_history_exact(
        url, simulator, reach=reach, started_at=started_at, backfilled_at=backfilled.since
    )


@pytest.mark.usefixtures("short_busy_timeout")
def test_sqlite_locked_past_the_busy_timeout_during_a_live_run(
    sim: SimFactory, engines: EngineFactory, tmp_path: Path, logs: Logs
) -> None:
    """BEGIN EXCLUSIVE at a random moment of a live run, held until Recovering
    (DatabaseBusyError): once released, Synced again, every received tick stored."""
    rng = chaos_rng("sqlite-lock-live")
    simulator = sim(tick_rate_per_s=20)
    path = tmp_path / "qx.db"
    url = f"sqlite:///{path}"
    config = config_from_mapping(sim_config(url, simulator, mode="live", stream=True))
    watch = engines(config)
    watch.wait_for_state(State.SYNCED, 60)
    target = rng.randint(1, 40)
    print(f"lock once {target} ticks are committed")
    with sqlite_locker(str(path)) as locker:
        watch.wait_for_ticks(target, 30)
        locker.lock()
        busy = watch.wait_for(
            is_recovering("DatabaseBusyError", "locked"), 40, what="Recovering (busy)"
        )
        held = locker.release()
    print(f"lock held {held:.1f} s; {busy}")
    watch.wait_for_state(State.SYNCED, 60)
    committed = len(watch.ticks)
    watch.wait_for_ticks(committed + 20, 30)
    final = watch.shutdown()
    assert State.SHUTDOWN is final.state, str(final)
    assert_every_received_tick_stored(url, simulator, logs, watch.run_id)


def _write_failed(watch: RunProbe, logs: Logs) -> bool:
    """Whether the DB writer has reported a failed write (log, or a status carrying it)."""
    if any(s.state is State.RECOVERING for s in watch.statuses):
        return True
    return any(
        e.get("actor") == "db_writer" and e.get("log_level") in ("warning", "error")
        for e in list(logs)
    )


@pytest.mark.usefixtures("short_busy_timeout")
def test_a_tick_write_that_fails_once_loses_nothing(
    sim: SimFactory, engines: EngineFactory, tmp_path: Path, logs: Logs
) -> None:
    """A lock held just past the busy timeout makes one tick write fail: released as soon as
    the failure shows, the ticks keep flowing (Synced, new ticks committed), none lost."""
    rng = chaos_rng("tick-write-fails-once")
    simulator = sim(tick_rate_per_s=20)
    path = tmp_path / "qx.db"
    url = f"sqlite:///{path}"
    # the head is re-synced rarely: the write that meets the lock is a tick batch
    config = config_from_mapping(
        sim_config(url, simulator, mode="live", stream=True, price_history_re_sync_interval_s=60)
    )
    watch = engines(config)
    watch.wait_for_state(State.SYNCED, 60)
    with sqlite_locker(str(path)) as locker:
        watch.wait_for_ticks(rng.randint(1, 30), 30)
        locker.lock()
        watch.wait_until(partial(_write_failed, watch, logs), 40, what="a failed tick write")
        held = locker.release()
    print(f"lock held {held:.1f} s; statuses {watch.names()}")
    committed = len(watch.ticks)

    def flowing() -> bool:
        synced = watch.controller.status_snapshot().state is State.SYNCED
        return synced and len(watch.ticks) >= committed + 20

    watch.wait_until(flowing, 60, what="Synced with 20 more committed ticks")
    final = watch.shutdown()
    assert State.SHUTDOWN is final.state, str(final)
    assert_every_received_tick_stored(url, simulator, logs, watch.run_id)


def test_sqlite_on_a_full_disk_recovers_once_space_is_freed(
    sim: SimFactory, tmpfs: MountTmpfs, engines: EngineFactory
) -> None:
    """A 20-day backfill into a small filesystem that a filler file leaves 1.5 MiB of: the
    disk fills during the backfill (DatabaseUnavailable: ... database or disk is full, not a
    failed rollback); once the filler is deleted, Backfilled with an exact database."""
    simulator = sim(tick_rate_per_s=0)
    small = tmpfs(24 << 20)
    filler = fill_up(small, 3 << 19)
    url = f"sqlite:///{small / 'qx.db'}"
    reach = "20d"
    started_at = utc_now()
    watch = engines(config_from_mapping(sim_config(url, simulator, price_history_reach=reach)))

    disk_full = is_recovering("DatabaseUnavailable", "database or disk is full")
    full = watch.wait_for(disk_full, 40, what="Recovering (disk full)")
    assert "rollback" not in full.text, full.text
    assert "Running.Recovering: DatabaseUnavailable: " in full.text, full.text
    # still full at the next attempt: retried, not given up
    watch.wait_for(
        lambda s: s.state is State.RESTARTING, 20, what="Restarting while the disk is full"
    )
    watch.wait_for(disk_full, 40, what="Recovering (disk full) again")
    filler.unlink()
    backfilled = watch.wait_for_state(State.BACKFILLED, 60)
    assert State.BACKFILLED is backfilled.state, watch.names()
    watch.shutdown()
    assert_history_exact(
        url, simulator, reach=reach, started_at=started_at, backfilled_at=backfilled.since
    )
