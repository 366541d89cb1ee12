"""Shared fixtures.

* every test ends with no actor and no qx thread left running;
* the test clock: ``QX_TEST_CLOCK`` (or ``--qx-clock``) pins the instant the integration tests
  run at — ``HH:MM`` (today, UTC), or an ISO date and time such as ``2026-03-01T23:59``. The
  harness then gives the simulator and the engine one clock starting there and ticking with
  real time (``qx_actors.simulator.OffsetClock``); unset, both use the wall clock;
* databases: ``storage_url`` is an empty database once per backend (SQLite file, and a fresh
  PostgreSQL database). PostgreSQL comes from ``QX_TEST_POSTGRES_URL`` (a role allowed to
  CREATE DATABASE; ``.ci/run`` starts a throwaway server and sets it) or from a throwaway server
  started with :mod:`qx_actors.testing.postgres`. Without either the PostgreSQL tests are skipped
  with the reason, except under CI (env ``CI`` set), where that is a failure.

The fixtures of :mod:`qx_actors.testing.pytest_plugin` (``qx_harness``, ``qx_simulator``, ...)
are enabled here too, so that the suite runs them as users would.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pykka
import pytest

from qx_actors.simulator import Simulator
from qx_actors.testing import running_simulator
from qx_actors.testing.postgres import PgServer, scratch_database
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


@pytest.fixture(scope="session")
def postgres_url(request: pytest.FixtureRequest) -> str:
    """URL of a PostgreSQL server's admin database: env QX_TEST_POSTGRES_URL, or the session's
    throwaway server (``qx_postgres``: skipped without PostgreSQL, a failure under CI)."""
    from_env = os.environ.get("QX_TEST_POSTGRES_URL")
    if from_env:
        return from_env
    server: PgServer = request.getfixturevalue("qx_postgres")
    return server.url


@pytest.fixture
def postgres_db_url(postgres_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (dropped afterwards)."""
    with scratch_database(postgres_url) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty database, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'qx.db'}"
    url: str = request.getfixturevalue("postgres_db_url")
    return url
