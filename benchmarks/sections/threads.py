"""Section 8, ``threads``: how many threads one live run starts.

A live run (stream on) in this process against the simulator (its own process) at 50
ticks/s: the threads it started (``threading.enumerate()`` against before ``start()``) at
``Running.Synced``, and again once synced after a forced recoverable restart (the simulator's
stream silenced until the feed is stale, ``live_price_tick_max_interval_s`` 1 s); their names
go to ``--json``. Target (issue 12) <= 5; *threads left after shutdown*, target 0.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path
from typing import Any

from _common import Report, Row, engine_config, log
from _processes import SimProcess

from qx_actors import SyncEngine
from qx_actors.status import State
from qx_actors.testing import RunEnded, RunProbe

#: Issue 12's target for a run's threads.
TARGET = 5
#: Seconds without a tick before the feed is stale: a recoverable error, hence a restart.
STALE_AFTER_S = 1.0


def started_since(before: set[threading.Thread]) -> list[str]:
    """The names of the live threads that were not running in ``before``, sorted."""
    return sorted(t.name for t in threading.enumerate() if t not in before)


def run(report: Report, opts: argparse.Namespace, workdir: Path) -> None:
    """Threads of a live run at Synced, and after a recoverable restart."""
    s = "8 threads"
    url = f"sqlite:///{workdir / 'threads.db'}"
    log("[8] threads per live run (stream on), at Synced and after a forced restart")
    figures: dict[str, Any] = {}
    report.figures["threads"] = figures
    with SimProcess(workdir, tick_rate=50, name="sim-threads") as sim:
        config = engine_config(
            database=url, rest_url=sim.rest_url, stream_url=sim.stream_url, mode="live",
            rate=1_000_000, stream=True, log_file=str(workdir / "threads.engine.log"),
            live_price_tick_max_interval_s=STALE_AFTER_S, restart_interval_s=0.2,
        )  # fmt: skip
        before = set(threading.enumerate())
        with RunProbe.start(SyncEngine(config)) as probe:
            probe.wait_for_state(State.SYNCED, 60)
            figures["at_synced"] = started_since(before)
            sim.ask("silent 1")
            try:
                probe.wait_for_state(State.RECOVERING, 30)
                sim.ask("silent 0")
                probe.wait_for_state(State.SYNCED, 60)
            except (TimeoutError, RunEnded) as exc:
                figures["restart_error"] = f"{type(exc).__name__}: {exc}"[:400]
            else:
                figures["after_restart"] = started_since(before)
        figures["after_shutdown"] = started_since(before)
        figures["statuses"] = probe.names()
    synced = figures["at_synced"]
    report.add(
        Row(
            s, "threads per live run", len(synced), "", f"<= {TARGET}", len(synced) / TARGET,
            len(synced) <= TARGET, note="at Running.Synced: " + ", ".join(synced),
        )
    )  # fmt: skip
    restarted = figures.get("after_restart")
    if restarted is None:
        report.add(Row(s, "threads after a restart", None, note=figures["restart_error"]))
    else:
        report.add(
            Row(
                s, "threads after a restart", len(restarted), "", f"<= {TARGET}",
                len(restarted) / TARGET, len(restarted) <= TARGET,
                note="synced again after a stale feed (recoverable) and a restart",
            )
        )  # fmt: skip
    left = figures["after_shutdown"]
    report.add(
        Row(s, "threads left after shutdown", len(left), target="0", ok=not left,
            note=", ".join(left))
    )  # fmt: skip
