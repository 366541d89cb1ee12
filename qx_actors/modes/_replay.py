"""Replay mode: recorded data through the same update stream, then the run ends by itself.

The program reports ``Running.InProgress``, then ``Running.Synced`` (data flows, as in a live
run), asks the replayer to deliver the window (:class:`~qx_actors.actors.messages.PlayReplay`:
it answers once the end is reached), and ends the run (:class:`EndRun`): ``ShutdownInitiated``
then ``Shutdown``, the same machine as a user's shutdown (a second ``shutdown()`` is refused).
A recoverable error (the database unreadable for a while) restarts it as any mode; the fresh
replayer resumes after the last event delivered.
"""

from __future__ import annotations

from qx_actors.actors._engine import Program, RunContext
from qx_actors.actors._program import call
from qx_actors.actors._wiring import REPLAY
from qx_actors.actors.messages import EndRun, PlayReplay, Report
from qx_actors.logs import get_logger
from qx_actors.status import Trigger


def replay_program(ctx: RunContext) -> Program:
    """Deliver the replay window, then end the run."""
    yield Report(Trigger.PROGRESS)
    yield Report(Trigger.SYNCED)
    finished = yield from call(REPLAY, PlayReplay())
    get_logger(run_id=ctx.run_id, mode=ctx.mode.name).info(
        "replay_complete", delivered=finished.delivered, attempt=ctx.attempt
    )
    yield EndRun()
