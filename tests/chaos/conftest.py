"""Fixtures of the chaos suite: simulators, engines, captured logs, a small filesystem and a
private PostgreSQL server that the tests may stop and start (never the shared test server).

Every fixture undoes what it did: engines are shut down, simulators stopped, the tmpfs is
unmounted, the private server is stopped and its directory deleted.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from qx_actors.config import QxConfig
from qx_actors.simulator import Simulator, SimulatorConfig
from tests import pg_server
from tests.chaos.chaos_helpers import (
    EngineFactory,
    Logs,
    MountTmpfs,
    SimFactory,
    Watch,
    pg_running,
    pg_start,
)
from tests.small_fs import mount_small_fs, unmount_small_fs


@pytest.fixture
def sim() -> Iterator[SimFactory]:
    """Start simulators (rate limit off, 20 ticks/s unless told); all stopped after the test."""
    started: list[Simulator] = []

    def start(**options: Any) -> Simulator:
        options.setdefault("rate_limit_per_s", None)
        options.setdefault("tick_rate_per_s", 20.0)
        simulator = Simulator(SimulatorConfig(**options)).start()
        started.append(simulator)
        return simulator

    try:
        yield start
    finally:
        for simulator in started:
            simulator.stop()


@pytest.fixture
def engines() -> Iterator[EngineFactory]:
    """Start in-process engines; each is shut down (if still running) after the test."""
    watches: list[Watch] = []

    def start(config: QxConfig) -> Watch:
        watch = Watch.start(config)
        watches.append(watch)
        return watch

    try:
        yield start
    finally:
        for watch in watches:
            watch.stop_quietly()


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
def private_pg() -> Iterator[pg_server.PgServer]:
    """A throwaway PostgreSQL server of this module's own, that tests may stop and start.

    Skipped when PostgreSQL can't be started here, except under CI (env ``CI``): a failure.
    """
    try:
        server = pg_server.start_server()
    except pg_server.PgServerUnavailable as exc:
        reason = f"PostgreSQL unavailable for the chaos suite: {exc}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg(private_pg: pg_server.PgServer) -> Iterator[tuple[pg_server.PgServer, str]]:
    """The private server (running) and the URL of a fresh database on it (dropped after)."""
    if not pg_running(private_pg):
        pg_start(private_pg)
    name = f"qx_chaos_{uuid.uuid4().hex[:12]}"
    pg_server.create_database(private_pg.url_for("postgres"), name)
    try:
        yield private_pg, private_pg.url_for(name)
    finally:
        if not pg_running(private_pg):
            pg_start(private_pg)
        with contextlib.suppress(Exception):
            pg_server.drop_database(private_pg.url_for("postgres"), name)
