"""The actors of one sync run: Controller, Engine, REST fetcher, WS feed, DB writer.

The modules are private (``_engine.py``, ...) but for :mod:`qx_actors.actors.messages`, the
whole conversation between the actors. What an extension needs to give
:class:`~qx_actors.SyncEngine` its own ``program`` or ``children`` is exported here.
"""

from qx_actors.actors._base import AsyncQxActor, QxActor, RunThreads
from qx_actors.actors._engine import ChildSpawner, ModeProgram, Program, RunContext

__all__ = [
    "AsyncQxActor",
    "ChildSpawner",
    "ModeProgram",
    "Program",
    "QxActor",
    "RunContext",
    "RunThreads",
]
