"""Simulators and runs of one test, sharing one clock, all stopped at the end."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from qx_actors.config import QxConfig
from qx_actors.domain.timeutil import utc_now
from qx_actors.simulator import OffsetClock, Simulator, SimulatorConfig
from qx_actors.sync_engine import SyncEngine
from qx_actors.testing._config import fast_config
from qx_actors.testing._probe import RunProbe, StopsOnExit


@contextlib.contextmanager
def running_simulator(
    clock: Callable[[], datetime] | None = None, **options: Any
) -> Iterator[Simulator]:
    """A simulator serving on 127.0.0.1 from a background thread (no rate limit unless
    ``rate_limit_per_s`` is given; other :class:`SimulatorConfig` fields as keywords); stopped
    afterwards."""
    options.setdefault("rate_limit_per_s", None)
    simulator = Simulator(SimulatorConfig(**options), clock=clock).start()
    try:
        yield simulator
    finally:
        simulator.stop()


class Harness(StopsOnExit):
    """Starts simulators and runs for one test; :meth:`stop` stops every one of them.

    The simulators and engines share one clock (``clock`` / :meth:`now`): the wall clock, or,
    given ``clock_start``, an :class:`~qx_actors.simulator.OffsetClock` starting there and
    ticking with real time, so that a test can run "at" any hour. ``simulator_defaults`` are
    :class:`SimulatorConfig` fields every simulator starts with unless told otherwise.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        clock_start: datetime | None = None,
        **simulator_defaults: Any,
    ) -> None:
        self.database_url = database_url
        self.clock: Callable[[], datetime] = (
            utc_now if clock_start is None else OffsetClock(clock_start)
        )
        self.simulator_defaults = simulator_defaults
        self.runs: list[RunProbe] = []
        self._stack = contextlib.ExitStack()

    def now(self) -> datetime:
        """The current time of this harness's simulators and engines."""
        return self.clock()

    def simulator(self, clock: Callable[[], datetime] | None = None, **options: Any) -> Simulator:
        """A started simulator (see :func:`running_simulator`) on ``clock`` (default: the
        harness clock)."""
        return self._stack.enter_context(
            running_simulator(clock or self.clock, **{**self.simulator_defaults, **options})
        )

    def config(self, simulator: Simulator, **options: Any) -> QxConfig:
        """:func:`fast_config` against ``simulator`` writing to the harness's database."""
        if self.database_url is None:
            raise ValueError("this Harness has no database_url")
        return fast_config(self.database_url, simulator, **options)

    def start(self, config: QxConfig, **engine_args: Any) -> RunProbe:
        """Start an engine for ``config`` (``SyncEngine`` keywords as ``engine_args``; on the
        harness clock unless ``clock=`` is given), watched by a :class:`RunProbe`."""
        engine_args.setdefault("clock", self.clock)
        return self.watch(SyncEngine(config, **engine_args))

    def watch(self, engine: SyncEngine) -> RunProbe:
        """Start ``engine`` under a :class:`RunProbe` that :meth:`stop` stops."""
        probe = self.probe_class(engine)
        self.runs.append(probe)
        probe.start_run()
        return probe

    #: The probe type of :meth:`start` (a subclass may add helpers).
    probe_class: type[RunProbe] = RunProbe

    def stop(self) -> None:
        """Stop every run still running (checking its status timeline), then every simulator."""
        with self._stack:
            errors: list[AssertionError] = []
            for probe in self.runs:
                try:
                    probe.stop()
                except AssertionError as exc:
                    errors.append(exc)
            if errors:
                raise errors[0]
