"""Live and full modes, end to end: the whole actor system against the simulator, real sockets,
a real database; faults on the Stream API; shutdown in the middle of a burst."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
from structlog.testing import capture_logs

from qx_actors.domain.settlements import floor_settlement_time
from qx_actors.domain.timeutil import floor_minute, utc_now
from qx_actors.domain.values import PriceTick
from qx_actors.errors import StaleFeedError
from qx_actors.status import State
from qx_actors.storage import open_storage

pytest.register_assert_rewrite("tests.integration.live_fixtures")

from tests.integration.live_fixtures import (  # noqa: E402
    RunFactory,
    SilentListener,
    SimFactory,
    assert_follows_graph,
    events,
    live_config,
    newest_stable_candle,
    sql,
    start_live,
    stored_candle_times,
    stored_ticks,
    tick_pairs,
    transitions,
)

pytest_plugins = ["tests.integration.live_fixtures"]

# -- ticks: every tick received is stored exactly once -----------------------------------------


def test_every_sent_tick_is_stored_once(
    sim: SimFactory, run_engine: RunFactory, live_database_url: str
) -> None:
    """With ticks pushed one burst at a time, the stored ticks equal the ticks sent."""
    with capture_logs() as logs:
        simulator, run = start_live(sim, run_engine, live_database_url, {"tick_rate_per_s": 0})
        assert simulator.wait_for_subscribers(1, timeout=10)
        simulator.push_ticks(1)
        run.until_state(State.SYNCED)
        for _ in range(5):
            simulator.push_ticks(40)
        run.until_ticks(201)
        assert State.SHUTDOWN == run.shutdown().state
    sent = tick_pairs(simulator.sent_ticks())
    assert 201 == len(sent)
    assert sent == stored_ticks(live_database_url)
    assert sent == tick_pairs(run.ticks)
    assert_follows_graph(logs)


def test_shutdown_in_a_burst_stores_every_received_tick(
    sim: SimFactory, run_engine: RunFactory, live_database_url: str
) -> None:
    """Shutdown while 20k ticks/s flow: every tick the feed received is stored, nothing else.

    Ticks still in the socket when the connection is cancelled are legitimately lost; the feed's
    ``received`` counter (logged when it stops) tells how many reached the client.
    """
    with capture_logs() as logs:
        simulator, run = start_live(
            sim, run_engine, live_database_url, {"tick_rate_per_s": 20_000}, shutdown_timeout_s=5.0
        )
        run.until_state(State.SYNCED)
        run.until_ticks(2000, timeout=15)
        sent_before = len(simulator.sent_ticks())
        # Shutdown, not Failed(ShutdownTimeout): done within shutdown_timeout_s
        assert State.SHUTDOWN == run.shutdown().state
    stopped = events(logs, "ws_feed_stopped")
    assert 1 == len(stopped)
    received = stopped[0]["received"]
    sent = tick_pairs(simulator.sent_ticks())
    stored = stored_ticks(live_database_url)
    # One connection, in order: what the client received is a prefix of what was sent, and
    # every received tick is in the database (none lost from a queue or an in-flight batch).
    assert sent[:received] == stored
    assert len(run.ticks) <= received <= len(sent)
    assert sent_before >= 2000
    assert_follows_graph(logs)


def test_duplicate_out_of_order_and_malformed_frames(
    sim: SimFactory, run_engine: RunFactory, live_database_url: str
) -> None:
    """Duplicated and swapped ticks are stored once; malformed frames are skipped, the feed runs."""
    with capture_logs() as logs:
        simulator, run = start_live(sim, run_engine, live_database_url, {"tick_rate_per_s": 0})
        assert simulator.wait_for_subscribers(1, timeout=10)
        simulator.push_ticks(1)
        run.until_state(State.SYNCED)
        simulator.faults.duplicate_ticks_next(5)
        simulator.faults.out_of_order_ticks_next(3)
        simulator.faults.malformed_frames_next(4)
        simulator.push_ticks(30)
        simulator.push_ticks(30)
        sent = tick_pairs(simulator.sent_ticks())
        distinct = set(sent)
        assert 61 == len(distinct) < len(sent)
        assert sorted(sent) != sent  # out of order indeed
        while {(t.time, float(t.last_price)) for t in run.ticks} != distinct:
            run.until_ticks(len(run.ticks) + 1)
        assert State.SHUTDOWN == run.shutdown().state
    assert sorted(distinct) == stored_ticks(live_database_url)
    published = tick_pairs(run.ticks)
    assert len(set(published)) == len(published), "a duplicate was published as committed"
    rejected = events(logs, "stream_frame_rejected")
    assert 4 == len(rejected)
    assert [] == events(logs, "stream_reconnect_scheduled")
    assert_follows_graph(logs)


# -- stream faults -----------------------------------------------------------------------------


@pytest.mark.parametrize("close_frame", [True, False], ids=["close-frame", "tcp-abort"])
def test_stream_drop_degrades_then_recovers(
    sim: SimFactory, run_engine: RunFactory, live_database_url: str, close_frame: bool
) -> None:
    """A dropped stream sets degraded, reconnects with backoff, clears it; Synced throughout."""
    with capture_logs() as logs:
        simulator, run = start_live(sim, run_engine, live_database_url, {"tick_rate_per_s": 50})
        run.until_state(State.SYNCED)
        assert not run.controller.status_snapshot().degraded
        simulator.faults.refuse_connections(n=2)
        simulator.faults.drop_stream(close_frame=close_frame)
        degraded = run.until(lambda s: s.degraded)
        assert State.SYNCED == degraded.state
        healthy = run.until(lambda s: not s.degraded)
        assert State.SYNCED == healthy.state
        ticks_before = len(run.ticks)
        run.until_ticks(ticks_before + 10)
        assert State.SHUTDOWN == run.shutdown().state
    changes = events(logs, "degraded_mode_changed")
    assert [True, False] == [e["degraded"] for e in changes]
    reason = changes[0]["reason"]
    assert ("code 1011" in reason) if close_frame else ("without a close frame" in reason), reason
    scheduled = events(logs, "stream_reconnect_scheduled")
    assert len(scheduled) >= 3  # the drop and two refused handshakes
    assert any("HTTP 503" in e["error"] for e in scheduled)
    # Backoff 0.1 s, 0.2 s, 0.4 s (each ±50 %), restarting from 0.1 s after a good connection.
    delays = [e["delay_s"] for e in scheduled[:3]]
    assert delays[0] <= 0.15 and 0.2 <= delays[2] <= 0.6, delays
    # Never left Synced: no restart of the process or of the mode.
    assert [] == [t for t in transitions(logs) if t[0] in ("recoverable_error", "restart")]
    assert_follows_graph(logs)
    stored = set(stored_ticks(live_database_url))
    assert stored <= set(tick_pairs(simulator.sent_ticks()))
    assert set(tick_pairs(run.ticks)) <= stored


def test_refused_stream_is_synced_degraded_by_rest_polling_and_never_restarts(
    sim: SimFactory, run_engine: RunFactory, live_database_url: str
) -> None:
    """Handshakes refused for many stale intervals: Synced with degraded=True as soon as REST
    polling has the head, candles current to the minute, no restart; then ticks, healthy."""
    with capture_logs() as logs:
        simulator = sim(tick_rate_per_s=50)
        simulator.faults.refuse_connections(seconds=3600)  # until cleared below
        cfg = live_config(
            live_database_url,
            rest_url=simulator.rest_url,
            stream_url=simulator.stream_url,
            price_history_re_sync_interval_s=0.2,
            live_price_tick_max_interval_s=0.5,
        )
        run = run_engine(cfg)
        synced = run.until_state(State.SYNCED)
        assert synced.degraded
        polls_at_synced = simulator.request_count("candles")
        # eight more re-syncs (0.2 s apart: over three stale intervals) while refused
        run.until_passes(8)
        assert run.controller.status_snapshot().degraded
        newest = stored_candle_times(live_database_url)[-1]
        assert newest >= floor_minute(utc_now()) - timedelta(minutes=1)
        simulator.faults.refuse_connections(seconds=0)
        healthy = run.until(lambda s: not s.degraded, timeout=30)
        polls_at_healthy = simulator.request_count("candles")
        run.until_ticks(5)
        assert State.SHUTDOWN == run.shutdown().state
    assert State.SYNCED == healthy.state
    assert polls_at_healthy >= polls_at_synced + 2  # live data kept flowing by REST
    assert [True, False] == [e["degraded"] for e in events(logs, "degraded_mode_changed")]
    assert len(events(logs, "stream_reconnect_scheduled")) >= 2
    assert [] == [t for t in transitions(logs) if t[0] in ("recoverable_error", "restart")]
    assert_follows_graph(logs)


def test_silent_stream_is_stale_and_restarts(
    sim: SimFactory, run_engine: RunFactory, live_database_url: str
) -> None:
    """No tick for live_price_tick_max_interval_s (pings answered): restart, then Synced."""
    with capture_logs() as logs:
        simulator, run = start_live(
            sim,
            run_engine,
            live_database_url,
            {"tick_rate_per_s": 50},
            exchange={"heartbeat_interval_s": 0.2, "disconnect_timeout_s": 0.5},
            live_price_tick_max_interval_s=1.0,
        )
        run.until_state(State.SYNCED)
        simulator.faults.set_stream_silent(True)
        silenced = time.monotonic()
        recovering = run.until_state(State.RECOVERING, timeout=10)
        assert time.monotonic() - silenced >= 1.0 - 0.2
        assert isinstance(recovering.error, StaleFeedError)
        simulator.faults.set_stream_silent(False)
        run.until_state(State.SYNCED, timeout=10)
        assert State.SHUTDOWN == run.shutdown().state
    assert [
        "Running.Starting",
        "Running.InProgress",
        "Running.Synced",
        "Running.Recovering",
        "Running.Restarting",
        "Running.InProgress",
        "Running.Synced",
        "ShutdownInitiated",
        "Shutdown",
    ] == [t[2] for t in transitions(logs)]
    # The connection itself stayed up: pings were answered, no heartbeat timeout.
    assert not any("ping" in e["error"] for e in events(logs, "stream_reconnect_scheduled"))
    # Half-way to stale the run said it was degraded (head polled over REST), and the
    # reconnect after the restart cleared it.
    changes = [(e["degraded"], e["reason"]) for e in events(logs, "degraded_mode_changed")]
    assert (True, "no tick for 0.5 s") == changes[0]
    assert False is changes[-1][0]
    assert_follows_graph(logs)


def test_stream_silent_from_the_start_is_stale_and_the_restart_gets_a_fresh_feed(
    sim: SimFactory, run_engine: RunFactory, live_database_url: str
) -> None:
    """Subscribed but no tick ever: stale; the feed is stopped while Recovering (no tick can
    report Synced then) and a fresh one follows the stream after the restart."""
    with capture_logs() as logs:
        simulator = sim(tick_rate_per_s=50)
        simulator.faults.set_stream_silent(True)
        cfg = live_config(
            live_database_url,
            rest_url=simulator.rest_url,
            stream_url=simulator.stream_url,
            live_price_tick_max_interval_s=0.5,
            restart_interval_s=1.0,
        )
        run = run_engine(cfg)
        recovering = run.until_state(State.RECOVERING)
        assert isinstance(recovering.error, StaleFeedError)
        simulator.faults.set_stream_silent(False)
        run.until_state(State.SYNCED)
        run.until_ticks(5)
        assert State.SHUTDOWN == run.shutdown().state
    assert [
        "Running.Starting",
        "Running.InProgress",
        "Running.Recovering",
        "Running.Restarting",
        "Running.InProgress",
        "Running.Synced",
        "ShutdownInitiated",
        "Shutdown",
    ] == [t[2] for t in transitions(logs)]
    assert_follows_graph(logs)


def test_unanswered_pings_time_out_and_reconnect(
    sim: SimFactory, run_engine: RunFactory, live_database_url: str
) -> None:
    """Silent stream and no pong: heartbeat timeout, degraded, reconnect, then healthy again."""
    with capture_logs() as logs:
        simulator, run = start_live(
            sim,
            run_engine,
            live_database_url,
            {"tick_rate_per_s": 50},
            exchange={"heartbeat_interval_s": 0.2, "disconnect_timeout_s": 0.2},
        )
        run.until_state(State.SYNCED)
        simulator.faults.set_stream_silent(True)
        simulator.faults.set_ignore_pings(True)
        degraded = run.until(lambda s: s.degraded, timeout=5)
        assert State.SYNCED == degraded.state
        simulator.faults.clear()
        run.until(lambda s: not s.degraded, timeout=5)
        ticks_before = len(run.ticks)
        run.until_ticks(ticks_before + 10)
        assert not run.controller.status_snapshot().degraded
        assert State.SHUTDOWN == run.shutdown().state
    scheduled = events(logs, "stream_reconnect_scheduled")
    assert scheduled and "after a ping" in scheduled[0]["error"]
    assert [] == [t for t in transitions(logs) if t[0] == "recoverable_error"]
    assert_follows_graph(logs)


# -- REST side: polling-only mode and lookback ------------------------------------------------


def test_polling_only_is_synced_after_catch_up_and_keeps_the_head_current(
    sim: SimFactory, run_engine: RunFactory, live_database_url: str
) -> None:
    """stream_enabled false: Synced after the first catch-up; each re-sync re-fetches the head."""
    with capture_logs() as logs:
        simulator, run = start_live(
            sim,
            run_engine,
            live_database_url,
            {"tick_rate_per_s": 50},
            exchange={"stream_enabled": False},
            price_history_re_sync_interval_s=0.1,
        )
        synced = run.until_state(State.SYNCED)
        assert not synced.degraded
        first = sql(live_database_url, "SELECT MAX(updated_at), COUNT(*) FROM ohlc_candles")[0]
        requests_at_synced = simulator.request_count("candles")
        run.until_passes(3)  # each re-sync pass publishes a price-history state
        later = sql(live_database_url, "SELECT MAX(updated_at), COUNT(*) FROM ohlc_candles")[0]
        assert State.SHUTDOWN == run.shutdown().state
    assert simulator.request_count("candles") > requests_at_synced
    assert later[0] > first[0]  # the still-forming head was fetched again
    assert later[1] >= first[1] >= 60
    now = utc_now()
    times = stored_candle_times(live_database_url)
    assert now - times[-1] < timedelta(minutes=2)  # the candle table is current
    assert [] == sql(live_database_url, "SELECT time FROM price_ticks")
    assert 0 == simulator.stream.connection_count()
    assert_follows_graph(logs)


def test_lookback_fetches_only_the_head(
    sim: SimFactory, run_engine: RunFactory, live_database_url: str
) -> None:
    """live "30 x 1m" on an empty database with reach 3d fetches ~30 candles, not 3 days."""
    with capture_logs() as logs:
        simulator, run = start_live(
            sim,
            run_engine,
            live_database_url,
            {"tick_rate_per_s": 20},
            lookback="30 x 1m",
            price_history_reach="3d",
        )
        run.until_state(State.SYNCED)
        assert State.SHUTDOWN == run.shutdown().state
    times = stored_candle_times(live_database_url)
    assert 30 <= len(times) <= 62
    assert utc_now() - times[0] <= timedelta(minutes=33)
    assert [] == [r for r in simulator.requests() if r.endpoint == "funding-settlements"]
    assert_follows_graph(logs)


def test_lookback_leaves_an_old_gap_alone(
    sim: SimFactory, run_engine: RunFactory, live_database_url: str
) -> None:
    """A gap older than the lookback window is neither fetched nor fatal in live mode."""
    simulator = sim(tick_rate_per_s=20)
    now = floor_minute(utc_now())
    old = simulator.market.final_candles(now - timedelta(hours=5), now - timedelta(hours=3))
    recent = simulator.market.final_candles(now - timedelta(hours=2), now - timedelta(minutes=20))
    storage = open_storage(live_database_url)
    try:
        storage.upsert_candles([*old, *recent], now=utc_now())
    finally:
        storage.close()
    gap = (old[-1].time, recent[0].time)
    with capture_logs() as logs:
        cfg = live_config(
            live_database_url,
            rest_url=simulator.rest_url,
            stream_url=simulator.stream_url,
            lookback="30 x 1m",
            price_history_reach="3d",
        )
        run = run_engine(cfg)
        run.until_state(State.SYNCED)
        assert State.SHUTDOWN == run.shutdown().state
    times = stored_candle_times(live_database_url)
    assert [] == [t for t in times if gap[0] < t < gap[1]]
    head = [t for t in times if t >= recent[0].time]
    assert len(head) == (head[-1] - head[0]) // timedelta(minutes=1) + 1  # gap-free to now
    assert now - head[-1] < timedelta(minutes=2)
    starts = [
        datetime.fromisoformat(r.query["from"])
        for r in simulator.requests()
        if r.endpoint == "candles"
    ]
    # the lookback, and the young candles (stored unstable above) fetched again until final:
    # from the oldest unstable candle of the last 66 minutes, never in or before the gap
    assert starts and min(starts) >= now - timedelta(minutes=66)
    assert min(starts) > gap[1]
    assert_follows_graph(logs)


# -- full mode ----------------------------------------------------------------------------------


def test_full_mode_backfills_settles_then_goes_live(
    sim: SimFactory, run_engine: RunFactory, live_database_url: str
) -> None:
    """full: the reach is backfilled gap-free, settlements synced, then Synced with ticks."""
    started = utc_now()
    with capture_logs() as logs:
        simulator, run = start_live(
            sim,
            run_engine,
            live_database_url,
            {"tick_rate_per_s": 50},
            mode="full",
            price_history_reach="1d",
            funding_settlement_reach="3d",
        )
        run.until_state(State.SYNCED, timeout=20)
        run.until_ticks(20)
        assert State.SHUTDOWN == run.shutdown().state
    now = utc_now()
    times = stored_candle_times(live_database_url)
    reach = floor_minute(now - timedelta(days=1)).replace(hour=0, minute=0)
    assert reach == times[0]
    assert len(times) == int((times[-1] - times[0]).total_seconds() // 60) + 1  # no gap
    assert now - times[-1] < timedelta(minutes=2)
    # the reach is floored to the settlement grid (as quantoxide) when a pass starts: between
    # the reach at the start and the one at the end, whichever the passes saw
    stored = {str(i) for (i,) in sql(live_database_url, "SELECT id FROM funding_settlements")}
    latest = {
        s.id
        for s in simulator.market.settlements(floor_settlement_time(now - timedelta(days=3)), now)
    }
    earliest = {
        s.id
        for s in simulator.market.settlements(
            floor_settlement_time(started - timedelta(days=3)), now
        )
    }
    assert latest <= stored <= earliest, (len(latest), len(stored), len(earliest))
    assert len(stored_ticks(live_database_url)) >= 20
    assert_follows_graph(logs)


def test_prune_deletes_only_ticks_covered_by_stable_candles(
    sim: SimFactory, run_engine: RunFactory, live_database_url: str
) -> None:
    """tick_retention prune: ticks at or before the newest stable candle go, newer ones stay."""
    simulator = sim(tick_rate_per_s=50)
    now = utc_now()
    old_times = [now - timedelta(minutes=m) for m in (180, 90, 62, 58, 10)]
    storage = open_storage(live_database_url)
    try:
        storage.insert_new_ticks([PriceTick(time=t, last_price=50_000.0) for t in old_times])
    finally:
        storage.close()
    with capture_logs() as logs:
        cfg = live_config(
            live_database_url,
            rest_url=simulator.rest_url,
            stream_url=simulator.stream_url,
            mode="full",
            price_history_reach="1d",
            funding_settlement_reach="1d",
            tick_retention="prune",
            price_history_re_backfill_interval_s=0.1,
        )
        run = run_engine(cfg)
        run.until_state(State.SYNCED, timeout=20)
        run.until_passes(4)  # re-backfill passes (each prunes again) while ticks flow
        assert State.SHUTDOWN == run.shutdown().state
    ticks = stored_ticks(live_database_url)
    kept_old = [t for t, _ in ticks if t in old_times]
    cutoff = floor_minute(now - timedelta(hours=1))
    assert [t for t in old_times if t > cutoff] == kept_old == old_times[-2:]
    newest_stable = newest_stable_candle(live_database_url)
    assert newest_stable is not None
    assert all(t > newest_stable for t, _ in ticks)  # never a tick the candles don't cover
    assert run.ticks and set(tick_pairs(run.ticks)) <= set(ticks)  # live ticks are kept
    assert_follows_graph(logs)


# -- shutdown ---------------------------------------------------------------------------------


def test_shutdown_during_a_hung_stream_handshake_is_prompt(
    sim: SimFactory,
    run_engine: RunFactory,
    live_database_url: str,
    silent_listener: SilentListener,
) -> None:
    """A stream connect stuck in the handshake does not delay shutdown beyond the timeout."""
    with capture_logs() as logs:
        simulator = sim(tick_rate_per_s=0)
        cfg = live_config(
            live_database_url,
            rest_url=simulator.rest_url,
            stream_url=silent_listener.url,
            exchange={"heartbeat_interval_s": 30, "disconnect_timeout_s": 30},
            shutdown_timeout_s=2.0,
        )
        run = run_engine(cfg)
        assert silent_listener.accepted.wait(10)
        assert State.IN_PROGRESS == run.controller.status_snapshot().state
        # Shutdown, not Failed(ShutdownTimeout): done within shutdown_timeout_s
        assert State.SHUTDOWN == run.shutdown().state
    assert_follows_graph(logs)


def test_shutdown_while_recovering_is_prompt(
    sim: SimFactory, run_engine: RunFactory, live_database_url: str
) -> None:
    """A shutdown during the restart_interval_s wait after a stale feed ends cleanly at once."""
    with capture_logs() as logs:
        simulator = sim(tick_rate_per_s=50)
        simulator.faults.set_stream_silent(True)
        cfg = live_config(
            live_database_url,
            rest_url=simulator.rest_url,
            stream_url=simulator.stream_url,
            live_price_tick_max_interval_s=0.3,
            restart_interval_s=30,
            shutdown_timeout_s=2.0,
        )
        run = run_engine(cfg)
        run.until_state(State.RECOVERING)
        # Shutdown, not Failed(ShutdownTimeout): done within shutdown_timeout_s
        assert State.SHUTDOWN == run.shutdown().state
    assert ("shutdown", "Running.Recovering", "ShutdownInitiated") in transitions(logs)
    assert_follows_graph(logs)
