"""Fixtures of the end-to-end tests: a database URL, simulators and engines that always stop.

``database_url`` is an empty database, once per backend (SQLite and PostgreSQL).
``harness`` is a :class:`qx_actors.testing.Harness` for backfill runs: it starts simulators and
sync engines for a test, each run watched by a :class:`~qx_actors.testing.RunProbe`, and at
teardown shuts every engine down, stops every simulator, and checks that every status change
and every logged status transition is an edge of the status graph.

The harness has one clock, ``harness.clock`` / ``harness.now()``, that its simulators and
engines share by default: the wall clock, or, with ``QX_TEST_CLOCK=HH:MM`` (or
``--qx-clock``; see ``tests/conftest.py``), an :class:`~qx_actors.simulator.OffsetClock`
starting at that UTC instant when the test starts and ticking with real time. Tests read the
time from ``harness.now()``, never from the wall clock, so they hold at any pinned instant.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from qx_actors import testing
from qx_actors.config import QxConfig
from qx_actors.logs import STATUS_TRANSITION
from qx_actors.simulator import Simulator
from qx_actors.status import State, SyncStatus

#: On top of :data:`qx_actors.testing.FAST_SYNC`: a short reach, and re-backfill passes close
#: enough together that recovery and second passes happen within a test.
BACKFILL_SYNC: dict[str, Any] = {
    "price_history_reach": "6h",
    # generous: a loaded machine must not turn a slow simulator page into a retry
    "rest_timeout_s": 10.0,
    "rest_error_max_trials": 2,
    "price_history_re_backfill_interval_s": 0.1,
    "shutdown_timeout_s": 3.0,
}


@pytest.fixture
def database_url(storage_url: str) -> str:
    """The URL of an empty database, once per backend (SQLite file, fresh PostgreSQL database)."""
    return storage_url


class Run(testing.RunProbe):
    """The probe under the names ``test_funding_fidelity.py`` and ``test_read_during_backfill.py``
    use (a shim: new tests call the :class:`~qx_actors.testing.RunProbe` methods)."""

    def passes(self) -> int:
        """How many times the run reported ``Backfilled`` so far."""
        return self.state_count(State.BACKFILLED)

    def wait(self, state: State, timeout: float = 10.0) -> SyncStatus:
        """The first status in ``state`` (or a terminal one) from now on."""
        return self.wait_for(lambda s: s.state is state or s.is_stopped, timeout)

    def wait_passes(self, n: int, timeout: float = 10.0) -> SyncStatus:
        """Wait until the run has reported ``Backfilled`` ``n`` times in all."""
        return self.wait_for_count(State.BACKFILLED, n, timeout)

    def funding_states(self) -> list[Any]:
        """Every published funding-settlement state."""
        return self.funding_settlement_states


class Harness(testing.Harness):
    """Backfill runs (stream off, :data:`BACKFILL_SYNC`) writing to the test's database, with
    the structlog events of the test in ``logs``."""

    probe_class = Run

    def __init__(
        self, database_url: str, logs: list[dict[str, Any]], clock_start: datetime | None = None
    ) -> None:
        super().__init__(database_url, clock_start=clock_start)
        self.logs = logs

    def config(self, simulator: Simulator, **sync: Any) -> QxConfig:
        """A backfill config against ``simulator`` with :data:`BACKFILL_SYNC` (overridden by
        ``sync``)."""
        return super().config(simulator, stream=False, **{**BACKFILL_SYNC, **sync})

    def start(self, config: QxConfig, **engine_args: Any) -> Run:
        """Start an engine for ``config`` on the harness clock (unless ``clock=`` is given)."""
        run = super().start(config, **engine_args)
        assert isinstance(run, Run)
        return run

    def transitions(self) -> list[tuple[str, str, str]]:
        """Every logged status transition so far: ``(trigger, src, dst)``."""
        return testing.logged_transitions(self.logs)


@pytest.fixture
def harness(database_url: str, clock_start: datetime | None) -> Iterator[Harness]:
    """Simulators and engines that are always stopped; the status changes and the logged
    transitions are checked. Their clock starts at the pinned instant (``QX_TEST_CLOCK``)
    when one is set."""
    with capture_logs() as logs, Harness(database_url, logs, clock_start) as h:
        yield h
    for run_id in {e["run_id"] for e in logs if e["event"] == STATUS_TRANSITION}:
        testing.assert_transitions_follow_graph(logs, run_id)
