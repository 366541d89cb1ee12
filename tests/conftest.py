"""Shared fixtures.

* every test ends with no actor and no qx thread left running;
* ``cli``: the command line run in this process (``tests/cli_helpers.py``); a test runs the
  real ``qx-actors`` process only for what needs one (signals, a closed pipe, a terminal);
* the test clock: ``QX_TEST_CLOCK`` (or ``--qx-clock``) pins the instant the integration tests
  run at — ``HH:MM`` (today, UTC), or an ISO date and time such as ``2026-03-01T23:59``. The
  harness then gives the simulator and the engine one clock starting there and ticking with
  real time (``qx_actors.simulator.OffsetClock``); unset, both use the wall clock;
* databases: ``storage_url`` is an empty database once per backend (SQLite file, and an empty
  PostgreSQL database). PostgreSQL comes from ``QX_TEST_POSTGRES_URL`` (a role allowed to
  CREATE DATABASE; ``.ci/run`` starts a throwaway server and sets it) or from a throwaway server
  started with :mod:`qx_actors.testing.postgres`. Without either the PostgreSQL tests are skipped
  with the reason, except under CI (env ``CI`` set), where that is a failure. A PostgreSQL
  database is created once and emptied for each next test (``_DatabasePool``: its sessions
  ended, every schema dropped, ``public`` as new), ten times cheaper than CREATE DATABASE;

The fixtures of :mod:`qx_actors.testing.pytest_plugin` (``qx_harness``, ``qx_simulator``, ...)
are enabled here too, so that the suite runs them as users would.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg2
import pykka
import pytest

from qx_actors.simulator import Simulator
from qx_actors.testing import running_simulator
from qx_actors.testing.postgres import (
    PgServer,
    create_database,
    database_url,
    drop_database,
    scratch_database,
)
from tests.cli_helpers import InProcessCli
from tests.helpers import pinned_start

pytest_plugins = ["qx_actors.testing.pytest_plugin"]

_OUR_THREADS = re.compile(r"^(qx-.*|\w+Actor-\d+)$")

#: The environment variable that pins the integration tests' clock (see the module docstring).
CLOCK_ENV = "QX_TEST_CLOCK"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--qx-clock",
        default=None,
        metavar="HH:MM|ISO",
        help=f"run the integration tests at this UTC instant (overrides ${CLOCK_ENV})",
    )


def _clock_text(config: pytest.Config) -> str:
    option = config.getoption("--qx-clock")
    return str(option if option is not None else os.environ.get(CLOCK_ENV, "")).strip()


def pytest_report_header(config: pytest.Config) -> str | None:
    text = _clock_text(config)
    return f"qx test clock pinned at {pinned_start(text).isoformat()}" if text else None


@pytest.fixture(scope="session")
def clock_start(pytestconfig: pytest.Config) -> datetime | None:
    """Where the integration tests' clock starts (``None``: the wall clock); fixed once per
    session, so every test of a run starts at the same instant."""
    text = _clock_text(pytestconfig)
    return pinned_start(text) if text else None


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    """A running LN Markets simulator with no rate limit (stopped after the test)."""
    with running_simulator(tick_rate_per_s=20) as sim:
        yield sim


@pytest.fixture(autouse=True)
def _stop_all_actors() -> Iterator[None]:
    """Stop every pykka actor after each test and fail if an actor or loop thread survives."""
    yield
    pykka.ActorRegistry.stop_all(block=True, timeout=10)
    lingering = [t for t in threading.enumerate() if _OUR_THREADS.match(t.name)]
    for thread in lingering:
        thread.join(5)
    still = [t.name for t in lingering if t.is_alive()]
    assert still == [], f"threads left running after the test: {still}"


@pytest.fixture
def cli(capfd: pytest.CaptureFixture[str]) -> InProcessCli:
    """``qx-actors`` run in this process: ``cli("status", "--config", path)`` is the
    :class:`~tests.cli_helpers.CliResult` of ``cli.main([...])``, its stdout and stderr captured;
    each call leaves no signal handler, excepthook or logging configuration behind."""
    return InProcessCli(capfd)


@pytest.fixture(scope="session")
def postgres_url(request: pytest.FixtureRequest) -> str:
    """URL of a PostgreSQL server's admin database: env QX_TEST_POSTGRES_URL, or the session's
    throwaway server (``qx_postgres``: skipped without PostgreSQL, a failure under CI)."""
    from_env = os.environ.get("QX_TEST_POSTGRES_URL")
    if from_env:
        return from_env
    server: PgServer = request.getfixturevalue("qx_postgres")
    return server.url


#: The statements that make a used database as empty as a new one: every session but ours
#: ended (``pg_terminate_backend`` waits until it is gone, so that no advisory lock, i.e. no
#: writer lock, survives), every schema of the tests dropped, ``public`` as ``CREATE DATABASE``
#: makes it (PostgreSQL 15: owned by pg_database_owner, USAGE for everyone).
_EMPTY_THE_DATABASE = """
SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> pg_backend_pid();
DO $$
DECLARE name text;
BEGIN
  FOR name IN SELECT nspname FROM pg_namespace
               WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', name);
  END LOOP;
END $$;
CREATE SCHEMA public AUTHORIZATION pg_database_owner;
GRANT USAGE ON SCHEMA public TO PUBLIC;
"""


class _DatabasePool:
    """Empty PostgreSQL databases, one per test at a time: a database a test is done with is
    emptied (:data:`_EMPTY_THE_DATABASE`) and handed to a later test instead of a new one
    (CREATE DATABASE copies a template: ~0.25 s; emptying a database: ~0.02 s). Every database
    is dropped at the end of the session."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.free: list[str] = []
        self.created: list[str] = []

    def acquire(self) -> str:
        """The URL of an empty database that no other test uses."""
        if not self.free:
            name = f"qx_test_{uuid.uuid4().hex[:16]}"
            create_database(self.admin_url, name)
            self.created.append(name)
            return database_url(self.admin_url, name)
        url = database_url(self.admin_url, self.free.pop())
        connection = psycopg2.connect(url)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(_EMPTY_THE_DATABASE)
        finally:
            connection.close()
        return url

    def release(self, url: str) -> None:
        """``url`` (of :meth:`acquire`) may be emptied for another test."""
        self.free.append(url.rsplit("/", 1)[-1])

    def drop_all(self) -> None:
        for name in self.created:
            with contextlib.suppress(psycopg2.Error):
                drop_database(self.admin_url, name)


@pytest.fixture(scope="session")
def _postgres_pool(postgres_url: str) -> Iterator[_DatabasePool | None]:
    """The session's pool of test databases (``None``: a server older than PostgreSQL 15,
    whose public schema differs and whose ``pg_terminate_backend`` can't wait: then each test
    gets a database of its own)."""
    connection = psycopg2.connect(postgres_url)
    try:
        version = connection.server_version
    finally:
        connection.close()
    if version < 150000:
        yield None
        return
    pool = _DatabasePool(postgres_url)
    try:
        yield pool
    finally:
        pool.drop_all()


@pytest.fixture
def postgres_db_url(postgres_url: str, _postgres_pool: _DatabasePool | None) -> Iterator[str]:
    """An empty PostgreSQL database for this test alone (a new one, or one emptied after an
    earlier test)."""
    if _postgres_pool is None:
        with scratch_database(postgres_url) as url:
            yield url
        return
    url = _postgres_pool.acquire()
    try:
        yield url
    finally:
        _postgres_pool.release(url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty database, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'qx.db'}"
    url: str = request.getfixturevalue("postgres_db_url")
    return url
