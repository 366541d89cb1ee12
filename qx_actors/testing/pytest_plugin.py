"""pytest fixtures for tests of an application that embeds qx_actors.

Enable them in your ``conftest.py``::

    pytest_plugins = ["qx_actors.testing.pytest_plugin"]

* ``qx_simulator``: a started simulator (no rate limit), stopped after the test;
* ``qx_harness``: a :class:`~qx_actors.testing.Harness` writing to ``qx_database_url``; every
  run it started is stopped after the test and its status timeline checked;
* ``qx_database_url``: the URL of a SQLite file in the test's ``tmp_path``;
* ``qx_postgres``: a throwaway PostgreSQL server for the session (the test is skipped when
  none can be started, or fails under CI, i.e. with the environment variable ``CI`` set).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from qx_actors.simulator import Simulator
from qx_actors.testing._harness import Harness, running_simulator
from qx_actors.testing.postgres import PgServer, PgServerUnavailable, start_server

__all__ = [
    "qx_database_url",
    "qx_harness",
    "qx_postgres",
    "qx_simulator",
    "skip_unless_ci",
    "start_server_or_skip",
]


def skip_unless_ci(reason: str) -> None:
    """Skip the test with ``reason``; under CI (env ``CI`` set) fail it instead, so that a
    missing service does not pass unnoticed."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def start_server_or_skip(what: str = "PostgreSQL unavailable") -> PgServer:
    """:func:`~qx_actors.testing.postgres.start_server`, or skip (fail under CI) with why."""
    try:
        return start_server()
    except PgServerUnavailable as exc:
        skip_unless_ci(f"{what}: {exc}")
        raise  # not reached: skip and fail raise


@pytest.fixture
def qx_simulator() -> Iterator[Simulator]:
    """A started simulator with no rate limit (stopped after the test)."""
    with running_simulator() as simulator:
        yield simulator


@pytest.fixture
def qx_database_url(tmp_path: Path) -> str:
    """The URL of a SQLite file in the test's temporary directory."""
    return f"sqlite:///{tmp_path / 'qx.db'}"


@pytest.fixture
def qx_harness(qx_database_url: str) -> Iterator[Harness]:
    """Simulators and runs for one test, all stopped afterwards (timelines checked)."""
    with Harness(qx_database_url) as harness:
        yield harness


@pytest.fixture(scope="session")
def qx_postgres() -> Iterator[PgServer]:
    """A throwaway PostgreSQL server for the session (skipped when unavailable)."""
    server = start_server_or_skip("PostgreSQL unavailable (install its server binaries)")
    try:
        yield server
    finally:
        server.stop()
