"""Fixtures of the chaos suite: simulators, engines, captured logs, a small filesystem and a
private PostgreSQL server that the tests may stop and start (never the shared test server).

Every fixture undoes what it did: engines are shut down (their status timelines checked),
simulators stopped, the tmpfs is unmounted, the private server is stopped and its directory
deleted.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from qx_actors.testing import Harness
from qx_actors.testing.postgres import PgServer, create_database, database_url, drop_database
from qx_actors.testing.pytest_plugin import start_server_or_skip
from tests.chaos.chaos_helpers import EngineFactory, Logs, MountTmpfs, SimFactory
from tests.small_fs import mount_small_fs, unmount_small_fs


@pytest.fixture
def chaos_harness() -> Iterator[Harness]:
    """The simulators (rate limit off, 20 ticks/s unless told) and in-process engines of one
    test, all stopped after it."""
    with Harness(tick_rate_per_s=20.0) as harness:
        yield harness


@pytest.fixture
def sim(chaos_harness: Harness) -> SimFactory:
    """Start simulators (``sim(**SimulatorConfig options)``); all stopped after the test."""
    return chaos_harness.simulator


@pytest.fixture
def engines(chaos_harness: Harness) -> EngineFactory:
    """Start in-process engines; each is shut down (if still running) after the test."""
    return chaos_harness.start


@pytest.fixture
def logs() -> Iterator[Logs]:
    """Every structlog event of the in-process engines of the test."""
    with capture_logs() as captured:
        yield captured


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[MountTmpfs]:
    """Mount a small tmpfs (``mount(size_bytes)`` -> its directory); unmounted afterwards.

    Needs root (``mount -t tmpfs``): see tests/small_fs.py.
    """
    mounted: list[Path] = []

    def mount(size_bytes: int) -> Path:
        where = tmp_path / f"small-fs-{len(mounted)}"
        where.mkdir()
        mount_small_fs(where, str(size_bytes))
        mounted.append(where)
        return where

    try:
        yield mount
    finally:
        for where in reversed(mounted):
            unmount_small_fs(where)


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PgServer]:
    """A throwaway PostgreSQL server of this module's own, that tests may stop and start.

    Skipped when PostgreSQL can't be started here, except under CI (env ``CI``): a failure.
    """
    server = start_server_or_skip("PostgreSQL unavailable for the chaos suite")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg(private_pg: PgServer) -> Iterator[tuple[PgServer, str]]:
    """The private server (running) and the URL of a fresh database on it (dropped after)."""
    if not private_pg.is_running:
        private_pg.start()
    admin_url = private_pg.url_for("postgres")
    name = f"qx_chaos_{uuid.uuid4().hex[:12]}"
    create_database(admin_url, name)
    try:
        yield private_pg, database_url(admin_url, name)
    finally:
        if not private_pg.is_running:
            private_pg.start()
        with contextlib.suppress(Exception):
            drop_database(admin_url, name)
