"""The actors of one sync run: Controller, Engine, REST fetcher, WS feed, DB writer.

The modules are private (``_engine.py``, ...) but for :mod:`qx_actors.actors.messages`, the
whole conversation between the actors. What an extension needs to give
:class:`~qx_actors.SyncEngine` its own ``program`` or ``children`` is exported here, with the
typed effects a program yields from (``call``, ``sleep``), the pure driver that tests a
program without actors (``ProgramDriver``, ``run_program``), and the children's names
(``DB``, ``REST``, ``WS``, ``REPLAY``) and spawners a program and a mode are wired with.
"""

from qx_actors.actors._base import AsyncQxActor, QxActor, RunThreads
from qx_actors.actors._engine import ChildSpawner, ModeProgram, Program, RunContext
from qx_actors.actors._program import ProgramDriver, Steps, call, run_program, sleep
from qx_actors.actors._replayer import ReplayClock
from qx_actors.actors._wiring import (
    DB,
    REPLAY,
    REST,
    WS,
    Refs,
    rest_client_factory,
    spawn_db_writer,
    spawn_replayer,
    spawn_rest_fetcher,
    spawn_ws_feed,
    stream_client_factory,
)

__all__ = [
    "DB",
    "REPLAY",
    "REST",
    "WS",
    "AsyncQxActor",
    "ChildSpawner",
    "ModeProgram",
    "Program",
    "ProgramDriver",
    "QxActor",
    "Refs",
    "ReplayClock",
    "RunContext",
    "RunThreads",
    "Steps",
    "call",
    "rest_client_factory",
    "run_program",
    "sleep",
    "spawn_db_writer",
    "spawn_replayer",
    "spawn_rest_fetcher",
    "spawn_ws_feed",
    "stream_client_factory",
]
