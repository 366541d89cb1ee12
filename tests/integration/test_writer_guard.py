"""One writer per database: a second engine is refused; the lock frees on stop and on SIGKILL."""

from __future__ import annotations

import textwrap

from qx_actors.config import QxConfig, config_from_mapping
from qx_actors.errors import DatabaseInUseError
from qx_actors.simulator import Simulator
from qx_actors.status import State
from qx_actors.sync_engine import SyncEngine
from tests.helpers import locking_child, until_state


def backfill_config(sim: Simulator, database_url: str) -> QxConfig:
    """A short backfill against ``sim`` into ``database_url``."""
    return config_from_mapping(
        {
            "mode": "backfill",
            "database": database_url,
            "exchange": {"rest_url": sim.rest_url},
            "sync": {
                "price_history_reach": "3h",
                "funding_settlement_reach": "1d",
                "rest_rate_limit_per_s": 1000,
                "shutdown_timeout_s": 5,
            },
        }
    )


def assert_backfills(engine: SyncEngine) -> None:
    """``engine``, started, reaches Backfilled (within 30 s); then it is shut down."""
    receiver = engine.update_receiver()
    controller = engine.start()
    try:
        assert State.BACKFILLED == until_state(receiver, State.BACKFILLED, timeout=30)[-1].state
    finally:
        controller.shutdown()


def test_second_engine_is_refused_then_allowed_after_stop(
    simulator: Simulator, storage_url: str
) -> None:
    """While one engine writes, another fails naming the holder; after shutdown it may start."""
    config = backfill_config(simulator, storage_url)
    first = SyncEngine(config)
    receiver = first.update_receiver()
    controller = first.start()
    try:
        until_state(receiver, State.BACKFILLED, timeout=30)
        second = SyncEngine(config).start()
        final = second.until_stopped(timeout=30)
        assert State.FAILED == final.state
        assert isinstance(final.error, DatabaseInUseError)
        assert f"run {first.run_id}" in str(final.error)
    finally:
        controller.shutdown()
    assert_backfills(SyncEngine(config))


HOLDER = textwrap.dedent(
    """
    import sys
    from qx_actors.storage import open_storage, writer_holder
    storage = open_storage(sys.argv[1])
    storage.acquire_writer_lock(writer_holder("killed-holder"))
    print("locked", flush=True)
    sys.stdin.read()
    """
)


def test_lock_is_free_after_the_holder_is_killed(simulator: Simulator, storage_url: str) -> None:
    """An engine starts once the process that held the lock was killed with SIGKILL."""
    with locking_child(HOLDER, storage_url) as holder:
        refused = SyncEngine(backfill_config(simulator, storage_url)).start()
        final = refused.until_stopped(timeout=30)
        assert isinstance(final.error, DatabaseInUseError)
        assert "killed-holder" in str(final.error)
        holder.kill()
        holder.wait()
    assert_backfills(SyncEngine(backfill_config(simulator, storage_url)))
