"""Mode programs (backfill, live, full) and the actors each run needs.

The spawners here are where a run's collaborators are built and passed in: each actor gets a
factory for its client or storage, only its own settings, and the run's metrics registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

from qx_actors.actors._db_writer import DbWriterActor
from qx_actors.actors._engine import ChildSpawner, ModeProgram, RunContext
from qx_actors.actors._rest_fetcher import RestFetcherActor
from qx_actors.actors._ws_feed import WsFeedActor
from qx_actors.actors.messages import ActorRef
from qx_actors.config import QxConfig
from qx_actors.domain.lookback import ModeKind, SyncMode
from qx_actors.lnmarkets.rest import RestClient
from qx_actors.lnmarkets.stream import StreamClient
from qx_actors.modes._backfill import backfill_program
from qx_actors.modes._candles import DB, REST
from qx_actors.modes._live import WS, live_program
from qx_actors.storage import open_storage, writer_holder

Refs = Mapping[str, ActorRef]


@dataclass(frozen=True)
class RunParts:
    """What a run executes: its program, its child actors (started in order), stop order."""

    program: ModeProgram
    children: Mapping[str, ChildSpawner]
    stop_order: tuple[str, ...]
    #: The child that stores ticks (it gets the ticks a stopped DB writer could not store).
    tick_sink: str | None = None


def spawn_db_writer(ctx: RunContext, engine: ActorRef, _: Refs) -> ActorRef:
    """Start the DB writer of a run."""
    return DbWriterActor.start(
        threads=ctx.threads,
        open_storage=partial(open_storage, ctx.config.database),
        writer_holder=writer_holder(ctx.run_id),
        engine=engine,
        run_id=ctx.run_id,
        hub=ctx.hub,
        clock=ctx.clock,
        child_name=DB,
    )


def rest_client_factory(ctx: RunContext) -> RestClient:
    """A REST client with the run's settings, its requests observed by the run's metrics."""
    sync = ctx.config.sync
    client = RestClient(
        ctx.config.exchange.rest_url,
        timeout_s=sync.rest_timeout_s,
        rate_limit_per_s=sync.rest_rate_limit_per_s,
        error_cooldown_s=sync.rest_error_cooldown_s,
        error_max_trials=sync.rest_error_max_trials,
    )
    if ctx.health is not None:
        client.on_request = ctx.health.observe_request  # RunHealth takes its own lock
    return client


def stream_client_factory(ctx: RunContext) -> StreamClient:
    """A Stream API client with the run's settings."""
    exchange = ctx.config.exchange
    return StreamClient(
        exchange.stream_url,
        heartbeat_interval_s=exchange.heartbeat_interval_s,
        disconnect_timeout_s=exchange.disconnect_timeout_s,
        open_timeout_s=max(exchange.disconnect_timeout_s, 1.0),
    )


def spawn_rest_fetcher(ctx: RunContext, engine: ActorRef, siblings: Refs) -> ActorRef:
    """Start the REST fetcher of a run (it feeds the DB writer started before it)."""
    return RestFetcherActor.start(
        threads=ctx.threads,
        connect_rest=partial(rest_client_factory, ctx),
        db_writer=siblings[DB],
        run_id=ctx.run_id,
        health=ctx.health,
        supervisor=engine,
        child_name=REST,
        clock=ctx.clock,
    )


def spawn_ws_feed(ctx: RunContext, engine: ActorRef, siblings: Refs) -> ActorRef:
    """Start the WS feed of a run (it feeds the DB writer started before it)."""
    return WsFeedActor.start(
        threads=ctx.threads,
        connect_stream=partial(stream_client_factory, ctx),
        db_writer=siblings[DB],
        engine=engine,
        run_id=ctx.run_id,
        tick_max_interval_s=ctx.config.sync.live_price_tick_max_interval_s,
        health=ctx.health,
        child_name=WS,
    )


def default_parts(config: QxConfig, mode: SyncMode) -> RunParts:
    """The program, children and stop order for ``mode``.

    The WS feed stops first so that every tick it queued reaches the DB writer, which stops
    last and so writes them before it closes the database.
    """
    children: dict[str, ChildSpawner] = {DB: spawn_db_writer, REST: spawn_rest_fetcher}
    if mode.kind is ModeKind.BACKFILL:
        return RunParts(backfill_program, children, (REST, DB))
    if config.exchange.stream_enabled:
        children[WS] = spawn_ws_feed
    return RunParts(live_program, children, stop_order=(WS, REST, DB), tick_sink=DB)
