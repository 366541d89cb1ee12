"""Fixtures for the simulator tests: started simulators, always stopped after each test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sim_helpers import NOW, SimFactory

from qx_actors.simulator import ManualClock, Simulator, SimulatorConfig


@pytest.fixture
def make_sim() -> Iterator[SimFactory]:
    """Start simulators (no rate limit, manual ticks, fixed clock unless told); stop them all."""
    started: list[Simulator] = []

    def make(clock: Any = "fixed", **overrides: Any) -> Simulator:
        options: dict[str, Any] = {"rate_limit_per_s": None, "tick_rate_per_s": 0.0}
        options.update(overrides)
        if clock == "fixed":
            clock = ManualClock(NOW)
        sim = Simulator(SimulatorConfig(**options), clock=clock)
        started.append(sim)
        return sim.start()

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim: SimFactory) -> Simulator:
    """A started simulator with a fixed clock at :data:`NOW`."""
    return make_sim()
