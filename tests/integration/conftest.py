"""Fixtures of the end-to-end tests: a database URL, simulators and engines that always stop.

``database_url`` is an empty database, once per backend (SQLite and PostgreSQL).
``harness`` starts simulators and sync engines for a test, waits on their update receivers
with a bounded total time, and at teardown shuts every engine down, stops every simulator and
checks that every logged status transition is an edge of the SPEC §4 graph.

The harness has one clock, ``harness.clock`` / ``harness.now()``, that its simulators and
engines share by default: the wall clock, or, with ``QX_TEST_CLOCK=HH:MM`` (or
``--qx-clock``; see ``tests/conftest.py``), an :class:`~qx_actors.simulator.OffsetClock`
starting at that UTC instant when the test starts and ticking with real time. Tests read the
time from ``harness.now()``, never from the wall clock, so they hold at any pinned instant.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from qx_actors.config import QxConfig, config_from_mapping
from qx_actors.domain.timeutil import utc_now
from qx_actors.errors import SyncError
from qx_actors.logs import STATUS_TRANSITION
from qx_actors.simulator import OffsetClock, Simulator, SimulatorConfig
from qx_actors.status import TRANSITIONS, State, SyncStatus, Trigger
from qx_actors.sync_engine import SyncController, SyncEngine
from qx_actors.updates import (
    FundingSettlementsStateUpdate,
    PriceHistoryStateUpdate,
    StatusUpdate,
    SyncUpdate,
    UpdateReceiver,
)

#: Short intervals so that recovery and second passes happen within a test.
FAST_SYNC: dict[str, Any] = {
    "price_history_reach": "6h",
    "funding_settlement_reach": "2d",
    "rest_rate_limit_per_s": 1000,
    # generous: a loaded machine must not turn a slow simulator page into a retry
    "rest_timeout_s": 10.0,
    "rest_error_cooldown_s": 0.05,
    "rest_error_max_trials": 2,
    "price_history_re_backfill_interval_s": 0.2,
    "restart_interval_s": 0.1,
    "shutdown_timeout_s": 3.0,
}


@pytest.fixture
def database_url(storage_url: str) -> str:
    """The URL of an empty database, once per backend (SQLite file, fresh PostgreSQL database)."""
    return storage_url


@dataclass
class Run:
    """One started engine, its controller and everything its receiver delivered."""

    engine: SyncEngine
    controller: SyncController
    receiver: UpdateReceiver
    updates: list[SyncUpdate] = field(default_factory=list)

    @property
    def statuses(self) -> list[SyncStatus]:
        """Every status delivered so far, in order."""
        return [u.status for u in self.updates if isinstance(u, StatusUpdate)]

    def passes(self) -> int:
        """How many times the run reported ``Backfilled`` so far."""
        return sum(1 for s in self.statuses if s.state is State.BACKFILLED)

    def read_until(self, stop: Callable[[SyncStatus], bool], timeout: float) -> SyncStatus:
        """Read updates until a status satisfies ``stop`` (or a terminal one); bounded in total."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no matching status within {timeout} s; seen {[s.name for s in self.statuses]}"
                )
            try:
                update = self.receiver.get(left)
            except TimeoutError:
                continue
            self.updates.append(update)
            if isinstance(update, StatusUpdate):
                status = update.status
                if stop(status) or status.is_stopped:
                    return status

    def wait(self, state: State, timeout: float = 10.0) -> SyncStatus:
        """The first status in ``state`` (or a terminal one) from now on."""
        return self.read_until(lambda s: s.state is state, timeout)

    def wait_passes(self, n: int, timeout: float = 10.0) -> SyncStatus:
        """Wait until the run has reported ``Backfilled`` ``n`` times in all."""
        if self.passes() >= n:
            return self.statuses[-1]
        return self.read_until(
            lambda s: s.state is State.BACKFILLED and self.passes() >= n, timeout
        )

    def history_states(self) -> list[Any]:
        """Every published price-history state."""
        return [u.state for u in self.updates if isinstance(u, PriceHistoryStateUpdate)]

    def funding_states(self) -> list[Any]:
        """Every published funding-settlement state."""
        return [u.state for u in self.updates if isinstance(u, FundingSettlementsStateUpdate)]

    def shutdown(self) -> None:
        """Shut the run down and read the remaining updates."""
        self.controller.shutdown()
        self.read_until(lambda s: False, 5.0)


class Harness:
    """Starts simulators and engines for one test; :meth:`close` stops them all.

    ``clock_start``: where the shared clock starts (``None``: the wall clock).
    """

    def __init__(
        self, database_url: str, logs: list[dict[str, Any]], clock_start: datetime | None = None
    ) -> None:
        self.database_url = database_url
        self.logs = logs
        self.clock: Callable[[], datetime] = (
            utc_now if clock_start is None else OffsetClock(clock_start)
        )
        self._sims: list[Simulator] = []
        self._runs: list[Run] = []

    def now(self) -> datetime:
        """The current time of this test's simulators and engines."""
        return self.clock()

    def simulator(self, clock: Any = None, **options: Any) -> Simulator:
        """A started simulator (rate limit off unless given) on ``clock`` (default: the
        harness clock)."""
        options.setdefault("rate_limit_per_s", None)
        sim = Simulator(SimulatorConfig(**options), clock=clock or self.clock)
        self._sims.append(sim)
        return sim.start()

    def config(self, sim: Simulator, **sync: Any) -> QxConfig:
        """A backfill config against ``sim`` with :data:`FAST_SYNC` (overridden by ``sync``)."""
        return config_from_mapping(
            {
                "mode": "backfill",
                "database": self.database_url,
                "exchange": {"rest_url": sim.rest_url, "stream_enabled": False},
                "sync": {**FAST_SYNC, **sync},
            }
        )

    def start(self, config: QxConfig, **engine_args: Any) -> Run:
        """Start an engine for ``config`` (receiver taken before start: every update seen), on
        the harness clock unless ``clock=`` is given."""
        engine_args.setdefault("clock", self.clock)
        engine = SyncEngine(config, **engine_args)
        receiver = engine.update_receiver()
        run = Run(engine, engine.start(), receiver)
        self._runs.append(run)
        return run

    def transitions(self) -> list[tuple[str, str, str]]:
        """Every logged status transition so far: ``(trigger, src, dst)``."""
        return [
            (e["trigger"], e["src"], e["dst"]) for e in self.logs if e["event"] == STATUS_TRANSITION
        ]

    def close(self) -> None:
        """Shut down every engine still running, then stop every simulator."""
        try:
            for run in self._runs:
                if not run.controller.status_snapshot().is_stopped:
                    with contextlib.suppress(SyncError):
                        run.controller.shutdown()
                run.controller.until_stopped(timeout=10)
        finally:
            for sim in self._sims:
                sim.stop()


def assert_in_graph(transitions: list[tuple[str, str, str]]) -> None:
    """Every ``(trigger, src, dst)`` is an edge of the status graph, and they chain."""
    edges = {(t.value, s.value, d.value) for t, sources, d in TRANSITIONS for s in sources}
    off_graph = [edge for edge in transitions if edge not in edges]
    assert [] == off_graph
    for before, after in itertools.pairwise(transitions):
        assert before[2] == after[1], f"{before} then {after}"
    if transitions:
        assert (Trigger.START.value, State.NOT_INITIATED.value) == transitions[0][:2]


@pytest.fixture
def harness(database_url: str, clock_start: datetime | None) -> Iterator[Harness]:
    """Simulators and engines that are always stopped; the logged transitions are checked.
    Their clock starts at the pinned instant (``QX_TEST_CLOCK``) when one is set."""
    with capture_logs() as logs:
        h = Harness(database_url, logs, clock_start)
        try:
            yield h
        finally:
            h.close()
    runs = {e["run_id"] for e in logs if e["event"] == STATUS_TRANSITION}
    for run_id in runs:
        assert_in_graph(
            [
                (e["trigger"], e["src"], e["dst"])
                for e in logs
                if e["event"] == STATUS_TRANSITION and e["run_id"] == run_id
            ]
        )
