"""How a run's child actors are built: their names and spawners.

The spawners are where a run's collaborators are built and passed in: each actor gets a
factory for its client or storage, only its own settings, and the run's metrics registry.
The names (``DB``, ``REST``, ``WS``, ``REPLAY``) are how a program addresses them
(``call(REST, ...)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from qx_actors.actors._db_writer import DbWriterActor
from qx_actors.actors._engine import RunContext
from qx_actors.actors._replayer import ReplayClock, ReplayerActor
from qx_actors.actors._rest_fetcher import RestFetcherActor
from qx_actors.actors._ws_feed import WsFeedActor
from qx_actors.actors.messages import ActorRef
from qx_actors.domain.timeutil import UNSTABLE_AGE
from qx_actors.lnmarkets.rest import RestClient
from qx_actors.lnmarkets.stream import StreamClient
from qx_actors.storage import Database, open_storage, writer_holder

#: The DB writer of a run.
DB = "db"
#: The REST fetcher of a run.
REST = "rest"
#: The WS feed of a run.
WS = "ws"
#: The replayer of a replay run.
REPLAY = "replay"

#: The children started before the one being spawned, by name.
Refs = Mapping[str, ActorRef]


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
        closed_from=None if ctx.started_at is None else ctx.started_at - UNSTABLE_AGE,
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
        ticks_waiting=ctx.ticks_waiting,
        child_name=WS,
        max_queued_ticks=ctx.config.sync.tick_queue_capacity,
        tick_spool=ctx.config.sync.tick_spool,
    )


def spawn_replayer(ctx: RunContext, engine: ActorRef, _: Refs) -> ActorRef:
    """Start the replayer of a replay run (the database opened read-only; the run's clock is
    its :class:`ReplayClock`, the pace clock the engine's)."""
    window = ctx.mode.replay_window
    if window is None:
        raise ValueError(f"a replayer needs a replay mode, not {ctx.mode.name}")
    clock = ctx.clock if isinstance(ctx.clock, ReplayClock) else ReplayClock(window.start)
    if ctx.hub is None:
        raise ValueError("a replayer needs the run's update hub")
    return ReplayerActor.start(
        threads=ctx.threads,
        run_id=ctx.run_id,
        open_database=partial(Database, ctx.config.database, catalog=False),
        window=window,
        clock=clock,
        pace_clock=ctx.pace_clock,
        hub=ctx.hub,
        supervisor=engine,
        child_name=REPLAY,
    )
