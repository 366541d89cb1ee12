"""The health probe and Prometheus endpoint of a run, over real HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from qx_actors.config import QxConfig, config_from_mapping
from qx_actors.observability.health import HealthServer
from qx_actors.simulator import Simulator
from qx_actors.status import State
from qx_actors.sync_engine import SyncEngine
from qx_actors.updates import StatusUpdate
from tests.helpers import served_run, until_state


def fetch(url: str) -> tuple[int, str]:
    """GET ``url``: status and body (also for 5xx)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _day_config(simulator: Simulator, tmp_path: object, mode: str, **sync: Any) -> QxConfig:
    """A run of ``mode`` with a reach of a day against ``simulator``, into a SQLite file in
    ``tmp_path``; ``sync`` adds to (or overrides) the sync settings."""
    return config_from_mapping(
        {
            "mode": mode,
            "database": f"sqlite:///{tmp_path}/qx.db",
            "exchange": {"rest_url": simulator.rest_url, "stream_url": simulator.stream_url},
            "sync": {"price_history_reach": "1d", "rest_rate_limit_per_s": 1000, **sync},
        }
    )


def test_health_and_metrics_of_a_live_run(simulator: Simulator, tmp_path: object) -> None:
    """/health reports status, ticks and counters; /metrics exposes them; 503 before start."""
    config = _day_config(simulator, tmp_path, "live")
    engine = SyncEngine(config)
    receiver = engine.update_receiver()
    server = HealthServer(engine.health, engine.run_id, "127.0.0.1", 0).start()
    try:
        status, body = fetch(f"{server.url}/health")
        assert (503, "NotInitiated") == (status, json.loads(body)["status"])
        controller = engine.start()
        try:
            until_state(receiver, State.SYNCED, timeout=30)
            status, body = fetch(f"{server.url}/health")
            health = json.loads(body)
            assert 200 == status
            assert ("Running.Synced", False, True) == (
                health["status"],
                health["degraded"],
                health["healthy"],
            )
            assert health["ticks_committed"] >= 1
            assert health["last_tick_age_s"] is not None and health["last_tick_age_s"] >= 0
            assert 0 == health["open_gaps"]
            assert health["counters"]["rest"]["requests"] >= 1
            assert health["counters"]["feed"]["received"] >= 1
            assert "Running.Synced" == controller.health()["status"]
            status, metrics = fetch(f"{server.url}/metrics")
            assert 200 == status
            assert "\nqx_healthy 1.0\n" in metrics
            assert "qx_rest_requests_total" in metrics and "qx_ticks_committed_total" in metrics
            assert 'qx_status{status="Running.Synced"} 1.0' in metrics
            assert f'qx_run_info{{run_id="{engine.run_id}"}} 1.0' in metrics
            assert "# TYPE qx_rest_request_duration_seconds histogram" in metrics
        finally:
            controller.shutdown()
    finally:
        server.stop()


def test_client_log_events_carry_the_run_id(simulator: Simulator, tmp_path: object) -> None:
    """Events of the LN Markets clients (e.g. stream_subscribed) carry the run's id."""
    import io

    import structlog

    from qx_actors.config import LoggingConfig
    from qx_actors.logs import configure_logging

    out = io.StringIO()
    configure_logging(LoggingConfig(format="json", level="info"), stream=out)
    try:
        config = _day_config(simulator, tmp_path, "live")
        engine = SyncEngine(config)
        receiver = engine.update_receiver()
        controller = engine.start()
        until_state(receiver, State.SYNCED, timeout=30)
        controller.shutdown()
    finally:
        structlog.reset_defaults()
    events = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    subscribed = [e for e in events if e["event"] == "stream_subscribed"]
    assert subscribed and all(engine.run_id == e["run_id"] for e in subscribed)


def _restarting_backfill(simulator: Simulator, tmp_path: object, **sync: Any) -> QxConfig:
    """A backfill of a day against ``simulator`` that passes and restarts 0.05 s apart."""
    return _day_config(
        simulator,
        tmp_path,
        "backfill",
        funding_settlement_reach="3d",
        restart_interval_s=0.05,
        price_history_re_backfill_interval_s=0.05,
        **sync,
    )


def test_health_is_503_throughout_an_outage_and_200_after_one_re_sync(
    simulator: Simulator, tmp_path: object
) -> None:
    """The exchange down (every REST answer a 503): /health is 503 on every poll — polled at
    each update of the run, so at each pass of the restart loop — with unhealthy_since fixed
    and the last error named; /health/live stays 200. A restart that makes no progress stays
    Restarting (never Running.InProgress). Back up: 200 again once the next backfill pass
    stored it (Backfilled)."""
    config = _restarting_backfill(
        simulator, tmp_path, rest_error_max_trials=2, rest_error_cooldown_s=0.01
    )
    with served_run(config) as (_engine, receiver, server, _controller):
        until_state(receiver, State.BACKFILLED, timeout=30)
        assert 200 == fetch(f"{server.url}/health")[0]
        simulator.faults.set_error_fraction(1.0, status=503)
        polls: list[dict[str, object]] = []
        codes: list[int] = []
        recoveries = 0
        states: list[State] = []
        while recoveries < 4:  # four turns of the restart loop
            update = receiver.get(timeout=30)
            if isinstance(update, StatusUpdate):
                assert update.status.state is not State.FAILED, update.status
                recoveries += update.status.state is State.RECOVERING
                if recoveries:
                    states.append(update.status.state)
            if recoveries == 0:
                continue  # the outage shows from the first failed pass on
            code, body = fetch(f"{server.url}/health")
            codes.append(code)
            polls.append(json.loads(body))
            assert 200 == fetch(f"{server.url}/health/live")[0]
        assert {503} == set(codes), [(c, p["status"]) for c, p in zip(codes, polls, strict=True)]
        assert {"Running.Restarting", "Running.Recovering"} <= {p["status"] for p in polls}
        assert {State.RECOVERING, State.RESTARTING} == set(states), states
        assert 1 == len({p["unhealthy_since"] for p in polls}), polls
        assert all("503" in str(p["last_error"]) for p in polls), polls[-1]

        simulator.faults.set_error_fraction(0)
        until_state(receiver, State.BACKFILLED, timeout=30)
        code, body = fetch(f"{server.url}/health")
        assert (200, None) == (code, json.loads(body)["unhealthy_since"])


def test_counters_keep_counting_across_a_restart(simulator: Simulator, tmp_path: object) -> None:
    """A supervised restart replaces the REST fetcher: the run's REST counters go on from
    where they were (only increase), in the snapshot and in /metrics."""
    config = _restarting_backfill(simulator, tmp_path, rest_error_max_trials=1)
    with served_run(config) as (engine, receiver, server, _controller):
        until_state(receiver, State.BACKFILLED, timeout=30)
        before = engine.health.snapshot()["counters"]["rest"]
        simulator.faults.fail_next(1, status=500)  # one failed trial: a restart
        until_state(receiver, State.RECOVERING, timeout=30)
        until_state(receiver, State.BACKFILLED, timeout=30)
        after = engine.health.snapshot()["counters"]["rest"]
        assert after["errors"] >= before["errors"] + 1, (before, after)
        for key, value in before.items():
            assert after[key] >= value, (key, before, after)
        _, metrics = fetch(f"{server.url}/metrics")
        requests = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("qx_rest_requests_total ")
        )
        assert requests >= after["requests"] > before["requests"]
