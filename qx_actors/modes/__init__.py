"""Mode programs (backfill, live, full, replay): which program a run executes, with which
children.

The children's names and spawners are the actors' (:mod:`qx_actors.actors`); here a mode
picks its program and the children it needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from qx_actors.actors._engine import ChildSpawner, ModeProgram
from qx_actors.actors._wiring import (
    DB,
    REPLAY,
    REST,
    WS,
    spawn_db_writer,
    spawn_replayer,
    spawn_rest_fetcher,
    spawn_ws_feed,
)
from qx_actors.config import QxConfig
from qx_actors.domain.lookback import ModeKind, SyncMode
from qx_actors.modes._backfill import backfill_program
from qx_actors.modes._live import live_program
from qx_actors.modes._replay import replay_program

__all__ = [
    "RunParts",
    "backfill_program",
    "default_parts",
    "live_program",
    "replay_program",
]


@dataclass(frozen=True)
class RunParts:
    """What a run executes: its program, its child actors (started in order), stop order."""

    program: ModeProgram
    children: Mapping[str, ChildSpawner]
    stop_order: tuple[str, ...]
    #: The child that stores ticks (it gets the ticks a stopped DB writer could not store).
    tick_sink: str | None = None
    #: The child that receives ticks (it outlives a database error, holding them meanwhile).
    tick_feed: str | None = None


def default_parts(config: QxConfig, mode: SyncMode) -> RunParts:
    """The program, children and stop order for ``mode``.

    The WS feed stops first so that every tick it queued reaches the DB writer, which stops
    last and so writes them before it closes the database.
    """
    if mode.kind is ModeKind.REPLAY:  # reads only: no DB writer, no exchange
        return RunParts(replay_program, {REPLAY: spawn_replayer}, (REPLAY,))
    children: dict[str, ChildSpawner] = {DB: spawn_db_writer, REST: spawn_rest_fetcher}
    if mode.kind is ModeKind.BACKFILL:
        return RunParts(backfill_program, children, (REST, DB))
    if config.exchange.stream_enabled:
        children[WS] = spawn_ws_feed
    feed = WS if WS in children else None
    return RunParts(live_program, children, stop_order=(WS, REST, DB), tick_sink=DB, tick_feed=feed)
