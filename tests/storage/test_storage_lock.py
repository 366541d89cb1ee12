"""The single-writer lock, the schema version, and driver errors mapped into the error tree."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from storage_helpers import advisory_lock_pids, candle, other_sessions, run_sql

from qx_actors.errors import DatabaseInUseError, SchemaError
from qx_actors.storage import SCHEMA_VERSION, Database, open_storage, writer_holder
from tests.helpers import locking_child

_CHILD = """
import sys
from qx_actors.storage import open_storage
storage = open_storage(sys.argv[1])
storage.acquire_writer_lock(sys.argv[2])
print("locked", flush=True)
sys.stdin.read()
"""


def test_second_writer_is_refused_naming_the_holder(storage_url: str) -> None:
    """A second storage can't take the lock while the first holds it, and can after release."""
    holder = writer_holder("run-1")
    with open_storage(storage_url) as first, open_storage(storage_url) as second:
        first.acquire_writer_lock(holder)
        with pytest.raises(DatabaseInUseError, match=r"run run-1 \(pid"):
            second.acquire_writer_lock(writer_holder("run-2"))
        first.release_writer_lock()
        second.acquire_writer_lock(writer_holder("run-2"))
        with pytest.raises(DatabaseInUseError, match="run-2"):
            first.acquire_writer_lock(holder)
    with open_storage(storage_url) as third:
        third.acquire_writer_lock("after close")
        assert third.writer_lock_holder == "after close"


def test_lock_is_freed_when_the_holder_process_is_killed(storage_url: str) -> None:
    """SIGKILL of the holding process frees the lock."""
    holder = "run child-run (child process)"
    with locking_child(_CHILD, storage_url, holder) as child, open_storage(storage_url) as storage:
        with pytest.raises(DatabaseInUseError, match="child-run"):
            storage.acquire_writer_lock("parent")
        child.kill()
        child.wait(timeout=30)
        # the server may need a moment to notice the dead connection: wait on the lock
        storage.acquire_writer_lock("parent", wait_s=20)
        assert storage.writer_lock_holder == "parent"


def test_schema_version_is_stored(storage_url: str) -> None:
    """Opening creates the schema and records its version."""
    with open_storage(storage_url) as storage:
        assert storage.schema_version() == SCHEMA_VERSION
    assert [(SCHEMA_VERSION,)] == run_sql(storage_url, "SELECT version FROM qx_schema")
    with open_storage(storage_url) as again:
        assert again.schema_version() == SCHEMA_VERSION


def test_newer_schema_version_is_refused(storage_url: str) -> None:
    """A database written by a newer qx_actors is refused by writer and reader."""
    open_storage(storage_url).close()
    newer = SCHEMA_VERSION + 1
    run_sql(
        storage_url,
        "INSERT INTO qx_schema (version, applied_at) VALUES (?, ?)",
        (
            newer,
            "2030-01-01T00:00:00.000000Z"
            if storage_url.startswith("sqlite")
            else datetime.now(UTC),
        ),
    )
    with pytest.raises(SchemaError, match=f"schema version {newer}"):
        open_storage(storage_url)
    with pytest.raises(SchemaError, match=f"schema version {newer}"):
        Database(storage_url)


def test_reader_refuses_a_database_without_schema(storage_url: str) -> None:
    """The read API does not create a schema; it says there is none."""
    if storage_url.startswith("sqlite"):
        run_sql(storage_url, "CREATE TABLE other (x INTEGER)")
    with pytest.raises(SchemaError, match="no qx_actors schema"):
        Database(storage_url)


@pytest.mark.postgres
def test_postgres_lock_is_held_by_the_writing_session(postgres_db_url: str) -> None:
    """The advisory lock lives on the session that writes (no second connection): it exists
    exactly as long as the writing session (its loss: test_storage_faults.py). Release frees it
    and the session stays usable."""
    with open_storage(postgres_db_url) as storage:
        storage.acquire_writer_lock("the writer")
        storage.upsert_candles([candle(0)], now=datetime.now(UTC))
        ((writer, name),) = other_sessions(postgres_db_url)
        assert "qx_actors" == name
        assert [writer] == advisory_lock_pids(postgres_db_url)
        assert [("the writer",)] == run_sql(postgres_db_url, "SELECT holder FROM qx_writer")
        storage.release_writer_lock()
        assert [] == advisory_lock_pids(postgres_db_url)
        assert 1 == storage.upsert_candles([candle(1)], now=datetime.now(UTC))
        assert [(writer, name)] == other_sessions(postgres_db_url)
    assert [] == other_sessions(postgres_db_url)
