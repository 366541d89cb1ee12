"""The health probe and Prometheus endpoint of a run, over real HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from qx_actors.config import config_from_mapping
from qx_actors.observability.health import HealthServer
from qx_actors.simulator import Simulator
from qx_actors.status import State
from qx_actors.sync_engine import SyncEngine
from tests.helpers import until_state


def fetch(url: str) -> tuple[int, str]:
    """GET ``url``: status and body (also for 5xx)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_health_and_metrics_of_a_live_run(simulator: Simulator, tmp_path: object) -> None:
    """/health reports status, ticks and counters; /metrics exposes them; 503 before start."""
    config = config_from_mapping(
        {
            "mode": "live",
            "database": f"sqlite:///{tmp_path}/qx.db",
            "exchange": {"rest_url": simulator.rest_url, "stream_url": simulator.stream_url},
            "sync": {"price_history_reach": "1d", "rest_rate_limit_per_s": 1000},
        }
    )
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
            assert f'qx_healthy{{run_id="{engine.run_id}"}} 1.0' in metrics
            assert "qx_rest_requests_total" in metrics and "qx_ticks_committed_total" in metrics
            assert f'qx_status{{run_id="{engine.run_id}",status="Running.Synced"}} 1.0' in metrics
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
        config = config_from_mapping(
            {
                "mode": "live",
                "database": f"sqlite:///{tmp_path}/qx.db",
                "exchange": {"rest_url": simulator.rest_url, "stream_url": simulator.stream_url},
                "sync": {"price_history_reach": "1d", "rest_rate_limit_per_s": 1000},
            }
        )
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
