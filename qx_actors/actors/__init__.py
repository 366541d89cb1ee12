"""The actors of one sync run: Controller, Engine, REST fetcher, WS feed, DB writer.

The modules are private (``_engine.py``, ...) but for :mod:`qx_actors.actors.messages`, the
whole conversation between the actors. What an extension needs to give
:class:`~qx_actors.SyncEngine` its own ``program`` or ``children`` is exported here, with the
typed effects a program yields from (``call``, ``sleep``) and the pure driver that tests a
program without actors (``ProgramDriver``, ``run_program``).
"""

from qx_actors.actors._base import AsyncQxActor, QxActor, RunThreads
from qx_actors.actors._engine import ChildSpawner, ModeProgram, Program, RunContext
from qx_actors.actors._program import ProgramDriver, Steps, call, run_program, sleep

__all__ = [
    "AsyncQxActor",
    "ChildSpawner",
    "ModeProgram",
    "Program",
    "ProgramDriver",
    "QxActor",
    "RunContext",
    "RunThreads",
    "Steps",
    "call",
    "run_program",
    "sleep",
]
