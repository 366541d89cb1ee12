"""Database faults with the real parts: every failure has a defined, recoverable-or-fatal outcome.

SQLite: another process holding ``BEGIN EXCLUSIVE``, a full filesystem (a small tmpfs), a
read-only one. PostgreSQL: down at open, a wrong password, the writer's session terminated, the
server restarted (a private server of this module, so that restarting it disturbs no one else).
And a constraint violation, which stays fatal. A batch is always written whole or not at all.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import peewee as pw
import psycopg2
import pytest
from storage_helpers import advisory_lock_pids, candle, minute, other_sessions, run_sql

from qx_actors.domain.values import PriceTick
from qx_actors.errors import (
    DatabaseBusyError,
    DatabaseInUseError,
    DatabaseUnavailable,
    StorageError,
    is_recoverable,
)
from qx_actors.storage import Database, open_storage
from qx_actors.storage._errors import map_error
from tests import pg_server
from tests.helpers import locking_child
from tests.small_fs import mount_small_fs, unmount_small_fs

NOW = datetime(2026, 1, 2, tzinfo=UTC)

#: holds ``BEGIN EXCLUSIVE`` on the SQLite file argv[1] until its stdin closes
_LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
conn.close()
"""


def _chain(error: BaseException) -> str:
    """The text of an error and of everything it was raised from or during."""
    texts: list[str] = []
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        node = pending.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        texts.append(f"{node!r} {node}")
        pending.extend([node.__cause__, node.__context__])
    return "\n".join(texts)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s} s: {what}")
        time.sleep(0.02)


def _candle_count(url: str) -> int:
    return int(run_sql(url, "SELECT count(*) FROM ohlc_candles")[0][0])


# --- SQLite: locked by another process ------------------------------------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file URL in a fresh directory."""
    return f"sqlite:///{tmp_path / 'qx.db'}"


@contextlib.contextmanager
def _exclusive_lock(path: str) -> Iterator[None]:
    """Another process holds ``BEGIN EXCLUSIVE`` on ``path`` inside the block."""
    with locking_child(_LOCKER, path) as child:
        try:
            yield
        finally:
            if child.stdin is not None:
                child.stdin.close()  # the locker rolls back and ends
            child.wait(timeout=30)


def test_sqlite_locked_by_another_process_is_busy_and_stores_nothing(sqlite_url: str) -> None:
    """A file locked past the busy timeout: DatabaseBusyError (recoverable), at open and on a
    write; nothing of the batch is stored, and the same storage writes once the lock is gone."""
    path = sqlite_url[len("sqlite:///") :]
    with open_storage(sqlite_url, busy_timeout_s=0.2) as storage:
        storage.upsert_candles([candle(0)], now=NOW)
        with _exclusive_lock(path):
            with pytest.raises(DatabaseBusyError, match="database is locked") as busy:
                storage.upsert_candles([candle(n) for n in range(1, 50)], now=NOW)
            assert is_recoverable(busy.value)
            assert str(busy.value).startswith("upsert 49 candles: ")
            with pytest.raises(DatabaseBusyError, match="database is locked"):
                storage.insert_new_ticks([PriceTick(minute(1), 100.0)])
            with pytest.raises(DatabaseBusyError, match="database is locked"):
                open_storage(sqlite_url, busy_timeout_s=0.2)
        assert 1 == _candle_count(sqlite_url)
        assert 49 == storage.upsert_candles([candle(n) for n in range(1, 50)], now=NOW)
    assert 50 == _candle_count(sqlite_url)


# --- SQLite: a small filesystem -------------------------------------------------------------


@dataclass
class SmallFs:
    """A mounted tmpfs."""

    path: Path

    def remount(self, mode: str) -> None:
        """Remount ``ro`` or ``rw``."""
        subprocess.run(
            ["mount", "-o", f"remount,{mode}", str(self.path)], check=True, capture_output=True
        )

    def fill(self) -> Path:
        """Write a filler file until the filesystem has no space left; returns it."""
        filler = self.path / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            # big chunks, then single bytes: the last partial page is taken too
            for chunk in (b"\0" * 65536, b"\0"):
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, chunk)
        finally:
            os.close(fd)
        return filler


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[SmallFs]:
    """A 4 MiB tmpfs (needs root: see tests/small_fs.py); unmounted after. (Room for a
    10,000-candle batch with its WAL and its rollups once the filler is gone.)"""
    where = tmp_path / "small-fs"
    where.mkdir()
    mount_small_fs(where, "4m")
    try:
        yield SmallFs(where)
    finally:
        unmount_small_fs(where)


def test_sqlite_full_disk_is_unavailable_not_a_rollback_error(small_fs: SmallFs) -> None:
    """A full filesystem: DatabaseUnavailable naming "database or disk is full" (not the failed
    rollback's "no transaction is active"), nothing of the batch stored; once space is freed a
    new storage on the same file writes the batch."""
    url = f"sqlite:///{small_fs.path / 'qx.db'}"
    batch = [candle(n) for n in range(100, 10_100)]
    with open_storage(url) as storage:
        storage.upsert_candles([candle(n) for n in range(10)], now=NOW)
        filler = small_fs.fill()
        with pytest.raises(DatabaseUnavailable, match="database or disk is full") as full:
            storage.upsert_candles(batch, now=NOW)
    assert is_recoverable(full.value)
    assert "rollback" not in str(full.value)
    assert str(full.value).startswith("upsert 10000 candles: ")
    assert 10 == _candle_count(url)
    filler.unlink()
    with open_storage(url) as again:
        assert 10_000 == again.upsert_candles(batch, now=NOW)
    assert 10_010 == _candle_count(url)


def test_sqlite_read_only_file_is_unavailable(small_fs: SmallFs) -> None:
    """A database on a read-only filesystem: DatabaseUnavailable (recoverable) at open."""
    url = f"sqlite:///{small_fs.path / 'qx.db'}"
    with open_storage(url) as storage:
        storage.upsert_candles([candle(0)], now=NOW)
    small_fs.remount("ro")
    try:
        # WAL mode needs its -shm file, which can't be created: SQLite can't open the file
        with pytest.raises(DatabaseUnavailable, match="unable to open database file") as denied:
            open_storage(url)
        assert is_recoverable(denied.value)
        assert str(denied.value).startswith(f"open {url}: ")
    finally:
        small_fs.remount("rw")
    assert 1 == _candle_count(url)


# --- any backend: constraint violations stay fatal ------------------------------------------


def test_constraint_violation_is_fatal_and_stores_nothing(storage_url: str) -> None:
    """A NOT NULL violation is a plain StorageError (fatal); the batch is not stored and the
    storage keeps working (the connection was not lost)."""
    good = [PriceTick(minute(n), 100.0 + n) for n in range(3)]
    bad = PriceTick(minute(3), None)  # type: ignore[arg-type]
    with open_storage(storage_url) as storage:
        storage.acquire_writer_lock("constraint test")
        with pytest.raises(StorageError) as violation:
            storage.insert_new_ticks([*good, bad])
        assert not isinstance(violation.value, DatabaseUnavailable)
        assert not is_recoverable(violation.value)
        assert "null" in str(violation.value).lower()
        assert [(0,)] == run_sql(storage_url, "SELECT count(*) FROM price_ticks")
        assert good == storage.insert_new_ticks(good)
        assert "constraint test" == storage.writer_lock_holder


# --- error mapping --------------------------------------------------------------------------


def test_the_driver_cause_is_found_however_deep_it_is_wrapped() -> None:
    """A refused connection wrapped by peewee, then masked by a failed rollback (also wrapped)
    and re-raised from a StorageError: mapped to DatabaseUnavailable with the refusal's text."""
    url = f"postgresql://qx:pw-not-shown@127.0.0.1:{_free_port()}/qx"
    outer: StorageError | None = None
    try:
        pw.PostgresqlDatabase(url, connect_timeout=5).connect()
    except pw.PeeweeException:
        # what a failed rollback does inside peewee's except: its error hides the first one
        try:
            pw.SqliteDatabase(":memory:").rollback()
        except pw.PeeweeException as rollback:
            outer = StorageError("while writing")
            outer.__cause__ = rollback
    assert outer is not None
    mapped = map_error(outer, "upsert 5 candles", url)
    assert isinstance(mapped, DatabaseUnavailable)
    assert str(mapped).startswith("upsert 5 candles: ")
    assert "refused" in str(mapped)
    assert "rollback" not in str(mapped)


# --- PostgreSQL -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "password"), [("Sekr1t-down", "Sekr1t-down"), ("p%40ss%2Fw0rd", "p@ss/w0rd")]
)
def test_postgres_down_at_open_is_unavailable_without_the_password(
    written: str, password: str
) -> None:
    """Nothing listening: DatabaseUnavailable naming the refusal; the password (as written
    and percent-decoded) never shown."""
    port = _free_port()
    url = f"postgresql://qx:{written}@127.0.0.1:{port}/qx"
    with pytest.raises(DatabaseUnavailable) as down:
        open_storage(url)
    assert is_recoverable(down.value)
    assert "refused" in str(down.value)
    assert f"postgresql://qx:***@127.0.0.1:{port}/qx" in str(down.value)
    assert written not in _chain(down.value)
    assert password not in _chain(down.value)


PASSWORD = "right-Pa55"


@dataclass
class PrivateServer:
    """A module-private server with password authentication over TCP."""

    server: pg_server.PgServer

    def url(self, dbname: str, password: str = PASSWORD) -> str:
        """URL of ``dbname`` with ``password``."""
        return (
            f"postgresql://{pg_server.SUPERUSER}:{password}@127.0.0.1:{self.server.port}/{dbname}"
        )

    def restart(self) -> None:
        """Restart the server (fast: every session is disconnected)."""
        self.server.restart()


@pytest.fixture(scope="module")
def private_server() -> Iterator[PrivateServer]:
    """A throwaway server of this module's own (restarting it disturbs no other test) that
    asks TCP clients for a password; skipped without PostgreSQL, except under CI."""
    try:
        server = pg_server.start_server()
    except pg_server.PgServerUnavailable as exc:
        reason = f"PostgreSQL unavailable: {exc}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        conn = psycopg2.connect(server.url)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"ALTER ROLE {pg_server.SUPERUSER} PASSWORD %s", (PASSWORD,))
                # the unix socket stays trusted; TCP (what the tests use) needs the password
                with open(os.path.join(server.data_dir, "pg_hba.conf"), "w") as hba:
                    hba.write(
                        "local all all trust\n"
                        "host all all 127.0.0.1/32 scram-sha-256\n"
                        "host all all ::1/128 scram-sha-256\n"
                    )
                cur.execute("SELECT pg_reload_conf()")
        finally:
            conn.close()
        private = PrivateServer(server)
        # the reload is asynchronous: wait until TCP asks for the password
        _until(lambda: _refused(private.url("qx", "wrong")), 30, "password authentication on")
        yield private
    finally:
        server.stop()


def _refused(url: str) -> bool:
    try:
        psycopg2.connect(url).close()
    except psycopg2.OperationalError:
        return True
    return False


@pytest.fixture
def private_db(private_server: PrivateServer) -> Iterator[str]:
    """URL (with the password) of a fresh database on the private server; dropped after."""
    name = f"qx_faults_{uuid.uuid4().hex[:12]}"
    admin = private_server.url("postgres")
    pg_server.create_database(admin, name)
    try:
        yield private_server.url(name)
    finally:
        pg_server.drop_database(admin, name)


@pytest.mark.postgres
def test_postgres_wrong_password_at_open_is_unavailable(
    private_server: PrivateServer, private_db: str
) -> None:
    """A wrong password: DatabaseUnavailable keeping the driver's cause; no password shown."""
    dbname = private_db.rsplit("/", 1)[1]
    url = private_server.url(dbname, "Wr0ng-pass")
    with pytest.raises(DatabaseUnavailable, match="password authentication failed") as denied:
        open_storage(url)
    assert is_recoverable(denied.value)
    assert f"qx:***@127.0.0.1:{private_server.server.port}/{dbname}" in str(denied.value)
    assert "Wr0ng-pass" not in _chain(denied.value)
    with open_storage(private_db) as storage:  # the right one works
        assert 1 == storage.upsert_candles([candle(0)], now=NOW)


def _sessions(url: str) -> list[int]:
    """Pids of the other sessions on the database of ``url``."""
    return [pid for pid, _ in other_sessions(url)]


@pytest.mark.postgres
def test_terminated_writer_session_is_unavailable_for_good(postgres_db_url: str) -> None:
    """``pg_terminate_backend`` of the writer's session: every later use raises
    DatabaseUnavailable (no silent reconnect without the lock); the lock is free and a new
    storage takes it and writes."""
    url = postgres_db_url
    with open_storage(url) as first:
        first.acquire_writer_lock("engine one")
        first.upsert_candles([candle(0)], now=NOW)
        (writer,) = _sessions(url)
        assert [writer] == advisory_lock_pids(url)
        run_sql(url, "SELECT pg_terminate_backend(?)", (writer,))
        _until(lambda: writer not in _sessions(url), 30, "the writer's session ended")

        with pytest.raises(DatabaseUnavailable) as lost:
            first.upsert_candles([candle(1)], now=NOW)
        assert is_recoverable(lost.value)
        for attempt in (
            lambda: first.upsert_candles([candle(1)], now=NOW),
            lambda: first.insert_new_ticks([PriceTick(minute(1), 1.0)]),
            lambda: first.acquire_writer_lock("engine one"),
        ):
            with pytest.raises(DatabaseUnavailable, match="open the database again"):
                attempt()
        assert first.writer_lock_holder is None
        assert [] == _sessions(url)  # it did not reconnect
        assert [] == advisory_lock_pids(url)

        with open_storage(url) as second:
            second.acquire_writer_lock("engine two", wait_s=10)
            assert 1 == second.upsert_candles([candle(1)], now=NOW)
    assert 2 == _candle_count(url)


@pytest.mark.postgres
def test_read_api_reconnects_after_its_session_is_terminated(postgres_db_url: str) -> None:
    """The read API (not a writer) may reconnect: after a lost session, the next call works."""
    url = postgres_db_url
    with open_storage(url) as storage:
        storage.upsert_candles([candle(0)], now=NOW)
    with Database(url) as reader:
        assert 1 == len(reader.candles(minute(0), minute(1), now=NOW))
        (session,) = _sessions(url)
        run_sql(url, "SELECT pg_terminate_backend(?)", (session,))
        _until(lambda: session not in _sessions(url), 30, "the reader's session ended")
        with pytest.raises(DatabaseUnavailable):
            reader.candles(minute(0), minute(1), now=NOW)
        assert 1 == len(reader.candles(minute(0), minute(1), now=NOW))


@pytest.mark.postgres
def test_postgres_restart_loses_the_writer_and_the_lock_is_checked_on_reopen(
    private_server: PrivateServer, private_db: str
) -> None:
    """Server restarted: the writer's next use is DatabaseUnavailable for good; if another
    engine took the lock meanwhile the re-open is refused (DatabaseInUseError naming it); once
    it is free the re-opened storage takes it and writes."""
    url = private_db
    first = open_storage(url)
    try:
        first.acquire_writer_lock("engine one")
        first.upsert_candles([candle(0)], now=NOW)
        private_server.restart()
        with pytest.raises(DatabaseUnavailable) as lost:
            first.upsert_candles([candle(1)], now=NOW)
        assert is_recoverable(lost.value)
        assert PASSWORD not in _chain(lost.value)
        with pytest.raises(DatabaseUnavailable):
            first.upsert_candles([candle(1)], now=NOW)
    finally:
        first.close()

    with open_storage(url) as other:
        other.acquire_writer_lock("engine two")
        with open_storage(url) as reopened:
            with pytest.raises(DatabaseInUseError, match="engine two") as refused:
                reopened.acquire_writer_lock("engine one")
            assert not is_recoverable(refused.value)
            assert PASSWORD not in str(refused.value)
            other.release_writer_lock()
            reopened.acquire_writer_lock("engine one")
            assert "engine one" == reopened.writer_lock_holder
            assert 1 == reopened.upsert_candles([candle(1)], now=NOW)
    assert 2 == _candle_count(url)
