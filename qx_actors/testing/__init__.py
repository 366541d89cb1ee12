"""Helpers for testing an application that embeds qx_actors (and for qx_actors' own tests).

Everything runs on 127.0.0.1 against the bundled LN Markets simulator; nothing here needs
pytest, except :mod:`qx_actors.testing.pytest_plugin` (fixtures) which you enable with
``pytest_plugins = ["qx_actors.testing.pytest_plugin"]``.

::

    from qx_actors import SyncEngine
    from qx_actors.status import State
    from qx_actors.testing import RunProbe, fast_config, running_simulator

    with running_simulator(tick_rate_per_s=20) as sim:
        config = fast_config("sqlite:///qx.db", sim, mode="live")
        with RunProbe.start(SyncEngine(config)) as run:   # stopped at the end of the block
            run.wait_for_state(State.SYNCED, timeout=30)
            run.wait_for_ticks(5)
            final = run.shutdown()                        # every status change checked

* :class:`RunProbe` — a started engine read through its update receiver: waits on statuses,
  ticks or any condition with a deadline, records every update, checks that each change of
  status is an edge of the status graph, and stops the run at the end;
* :class:`Harness` — simulators and runs of one test on one shared (optionally pinned) clock,
  all stopped by ``stop()`` or at the end of a ``with`` block;
* :func:`running_simulator` — a simulator serving from a background thread, as a context
  manager;
* :func:`fast_config` / :func:`fast_config_data` / :data:`FAST_SYNC` — a config against the
  simulator with intervals short enough for a test;
* :func:`assert_transitions_follow_graph` / :func:`logged_transitions` — the same check on
  the ``status_transition`` log events (``structlog.testing.capture_logs``);
* :class:`RunEnded` — what a wait raises when the run stopped before it came true;
* :mod:`qx_actors.testing.postgres` — a throwaway PostgreSQL server and scratch databases;
* :mod:`qx_actors.testing.pytest_plugin` — the same as pytest fixtures.
"""

from qx_actors.testing._config import FAST_SYNC, fast_config, fast_config_data
from qx_actors.testing._harness import Harness, running_simulator
from qx_actors.testing._probe import (
    RunEnded,
    RunProbe,
    assert_transitions_follow_graph,
    logged_transitions,
)

__all__ = [
    "FAST_SYNC",
    "Harness",
    "RunEnded",
    "RunProbe",
    "assert_transitions_follow_graph",
    "fast_config",
    "fast_config_data",
    "logged_transitions",
    "running_simulator",
]
