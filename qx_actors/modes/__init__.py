"""Mode programs (backfill, live, full) and the actors each run needs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import pykka

from qx_actors.actors.engine import ChildSpawner, EngineActor, ModeProgram, RunContext
from qx_actors.config import QxConfig
from qx_actors.domain.lookback import ModeKind, SyncMode
from qx_actors.modes.backfill import backfill_program
from qx_actors.modes.candles import DB, REST
from qx_actors.modes.live import WS, LiveTracker, live_program, on_live_message

Refs = Mapping[str, pykka.ActorRef[Any]]


@dataclass(frozen=True)
class RunParts:
    """What a run executes: its program, its child actors (started in order), stop order."""

    program: ModeProgram
    children: Mapping[str, ChildSpawner]
    stop_order: tuple[str, ...]
    on_out_of_band: Callable[[EngineActor, Any], None] | None = None
    #: The child that stores ticks (it gets the ticks a stopped DB writer could not store).
    tick_sink: str | None = None


def spawn_db_writer(ctx: RunContext, engine: pykka.ActorRef[Any], _: Refs) -> pykka.ActorRef[Any]:
    """Start the DB writer of a run."""
    from qx_actors.actors.db_writer import DbWriterActor

    return DbWriterActor.start(
        threads=ctx.threads,
        database_url=ctx.config.database,
        engine=engine,
        run_id=ctx.run_id,
        clock=ctx.clock,
        child_name=DB,
    )


def spawn_rest_fetcher(
    ctx: RunContext, engine: pykka.ActorRef[Any], siblings: Refs
) -> pykka.ActorRef[Any]:
    """Start the REST fetcher of a run (it feeds the DB writer started before it)."""
    from qx_actors.actors.rest_fetcher import RestFetcherActor

    ref = RestFetcherActor.start(
        threads=ctx.threads,
        config=ctx.config,
        db_writer=siblings[DB],
        run_id=ctx.run_id,
        supervisor=engine,
        child_name=REST,
    )
    if ctx.health is not None:
        # Read-only, int-valued counters: safe to read from the health probe's thread.
        proxy = ref.proxy()
        client = proxy.client.get()
        counters, gauges = client.counters, proxy.gauges.get()
        # the client's loop thread calls it; RunHealth takes its own lock
        client.on_request = ctx.health.observe_request
        ctx.health.register("rest", lambda: dataclasses.asdict(counters))
        ctx.health.register_gauges("rest", lambda: dataclasses.asdict(gauges))
    return ref


def spawn_ws_feed(
    ctx: RunContext, engine: pykka.ActorRef[Any], siblings: Refs
) -> pykka.ActorRef[Any]:
    """Start the WS feed of a run (it feeds the DB writer started before it)."""
    from qx_actors.actors.ws_feed import WsFeedActor

    ref = WsFeedActor.start(
        threads=ctx.threads,
        config=ctx.config,
        db_writer=siblings[DB],
        engine=engine,
        run_id=ctx.run_id,
        child_name=WS,
    )
    if ctx.health is not None:
        proxy = ref.proxy()
        counters, gauges = proxy.counters.get(), proxy.gauges.get()
        ctx.health.register("feed", lambda: dataclasses.asdict(counters))
        ctx.health.register_gauges("feed", lambda: dataclasses.asdict(gauges))
    return ref


def default_parts(config: QxConfig, mode: SyncMode) -> RunParts:
    """The program, children and stop order for ``mode``.

    The WS feed stops first so that every tick it queued reaches the DB writer, which stops
    last and so writes them before it closes the database.
    """
    children: dict[str, ChildSpawner] = {DB: spawn_db_writer, REST: spawn_rest_fetcher}
    if mode.kind is ModeKind.BACKFILL:
        return RunParts(backfill_program, children, (REST, DB))
    tracker = LiveTracker()
    if config.exchange.stream_enabled:
        children[WS] = spawn_ws_feed
    return RunParts(
        program=partial(live_program, tracker=tracker),
        children=children,
        stop_order=(WS, REST, DB),
        on_out_of_band=partial(on_live_message, tracker),
        tick_sink=DB,
    )
