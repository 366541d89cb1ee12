"""Mode programs (backfill, live, full) and the actors each run needs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pykka

from qx_actors.actors.engine import ChildSpawner, ModeProgram, RunContext
from qx_actors.config import QxConfig
from qx_actors.domain.lookback import ModeKind, SyncMode
from qx_actors.modes.backfill import backfill_program
from qx_actors.modes.candles import DB, REST

Refs = Mapping[str, pykka.ActorRef[Any]]


@dataclass(frozen=True)
class RunParts:
    """What a run executes: its program, its child actors (started in order), stop order."""

    program: ModeProgram
    children: Mapping[str, ChildSpawner]
    stop_order: tuple[str, ...]


def spawn_db_writer(ctx: RunContext, engine: pykka.ActorRef[Any], _: Refs) -> pykka.ActorRef[Any]:
    """Start the DB writer of a run."""
    from qx_actors.actors.db_writer import DbWriterActor

    return DbWriterActor.start(
        threads=ctx.threads, database_url=ctx.config.database, engine=engine, run_id=ctx.run_id
    )


def spawn_rest_fetcher(
    ctx: RunContext, engine: pykka.ActorRef[Any], siblings: Refs
) -> pykka.ActorRef[Any]:
    """Start the REST fetcher of a run (it feeds the DB writer started before it)."""
    from qx_actors.actors.rest_fetcher import RestFetcherActor

    return RestFetcherActor.start(
        threads=ctx.threads, config=ctx.config, db_writer=siblings[DB], run_id=ctx.run_id
    )


def default_parts(config: QxConfig, mode: SyncMode) -> RunParts:
    """The program and children for ``mode``."""
    children: dict[str, ChildSpawner] = {DB: spawn_db_writer, REST: spawn_rest_fetcher}
    if mode.kind is ModeKind.BACKFILL:
        return RunParts(backfill_program, children, (REST, DB))
    raise ValueError(f"mode {mode} is not available yet")
