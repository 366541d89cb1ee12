"""``/metrics`` by Prometheus conventions, scraped from a running engine over real HTTP.

The families served are exactly :data:`qx_actors.observability._metrics.METRICS`, which the
README lists; counters are counters (``_total``, never decreasing), the status is a labelled
gauge with one series per status, and each family is declared even before it has a sample.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qx_actors.config import config_from_mapping
from qx_actors.observability._metrics import COUNTER_KEYS, GAUGE_KEYS, METRICS
from qx_actors.simulator import Simulator
from qx_actors.status import State
from qx_actors.sync_engine import SyncController, SyncEngine
from tests.helpers import served_run, until_state

ROOT = Path(__file__).resolve().parents[2]


def scrape(url: str) -> str:
    """GET ``url``/metrics: the body (200 asserted)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        assert 200 == response.status
        body: str = response.read().decode()
        return body


def declared(text: str) -> dict[str, str]:
    """``# TYPE`` lines: exported name → type (counters by their ``_total`` name)."""
    types = {}
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        if kind == "counter" and not name.endswith("_total"):
            name += "_total"
        types[name] = kind
    return types


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample: (name, sorted labels) → value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    """The one sample of ``name`` (any labels)."""
    values = [v for (n, _), v in found.items() if n == name]
    assert 1 == len(values), (name, values)
    return values[0]


@pytest.fixture
def live_run(
    simulator: Simulator, tmp_path: Path
) -> Iterator[tuple[SyncEngine, SyncController, str]]:
    """A live run against the simulator, synced, its health server listening."""
    config = config_from_mapping(
        {
            "mode": "live",
            "database": f"sqlite:///{tmp_path}/qx.db",
            "exchange": {"rest_url": simulator.rest_url, "stream_url": simulator.stream_url},
            "sync": {"price_history_reach": "1d", "rest_rate_limit_per_s": 1000},
        }
    )
    with served_run(config) as (engine, receiver, server, controller):
        until_state(receiver, State.SYNCED, timeout=30)
        yield engine, controller, server.url


def test_the_families_are_exactly_the_documented_ones(
    live_run: tuple[SyncEngine, SyncController, str],
) -> None:
    """Every family of METRICS is declared with its type, nothing else is, and the README's
    metrics table lists the same names and types."""
    _, _, url = live_run
    text = scrape(url)
    assert {spec.name: spec.kind for spec in METRICS} == declared(text)
    readme = (ROOT / "README.md").read_text()
    documented = dict(re.findall(r"^\| `(qx_[a-z_]+)(?:\{[^}]*\})?` \| (\w+) \|", readme, re.M))
    assert {spec.name: spec.kind for spec in METRICS} == documented


def test_status_counters_and_gauges_of_a_synced_live_run(
    live_run: tuple[SyncEngine, SyncController, str], simulator: Simulator
) -> None:
    """The status is one series per status (1 for Running.Synced); counters end in _total
    and never go down while ticks keep arriving; gauges carry the run's figures."""
    engine, _, url = live_run
    first = samples(scrape(url))
    status = {dict(labels)["status"]: v for (n, labels), v in first.items() if n == "qx_status"}
    assert {state.value for state in State} == set(status)
    assert {"Running.Synced": 1.0} == {k: v for k, v in status.items() if v}
    # one stable label set: no series carries the run id; qx_run_info names it
    assert all("run_id" not in dict(labels) for (n, labels) in first if n != "qx_run_info")
    assert (("qx_run_info", (("run_id", engine.run_id),))) in first
    assert 1.0 == value(first, "qx_healthy")
    assert 0.0 == value(first, "qx_degraded")
    assert value(first, "qx_rest_requests_total") >= 1
    assert value(first, "qx_last_price") > 0
    assert 0.0 == value(first, "qx_open_gaps")

    # more ticks: the counters grow, none goes down
    committed = value(first, "qx_ticks_committed_total")
    deadline = time.monotonic() + 20
    while True:
        second = samples(scrape(url))
        if value(second, "qx_ticks_committed_total") > committed:
            break
        assert time.monotonic() < deadline, "no tick committed within 20 s"
        simulator.push_ticks(2)  # waits until they are sent; the deadline bounds the loop
    counters = {key for key in first if key[0].endswith("_total")}
    assert counters, "no counter exported"
    for key in counters:
        assert second[key] >= first[key], key
    assert value(second, "qx_feed_received_total") >= 1


def test_every_registered_figure_has_its_metric(
    live_run: tuple[SyncEngine, SyncController, str],
) -> None:
    """What the actors register is exported: no counter or queue figure is left out silently
    (a new one needs its line in COUNTER_KEYS / GAUGE_KEYS, METRICS and the README)."""
    engine, _, _ = live_run
    snapshot = engine.health.snapshot()
    registered = {
        (source, key) for source, values in snapshot["counters"].items() for key in values
    }
    assert registered, "no counter source registered"
    assert set() == registered - set(COUNTER_KEYS)
    queued = {(source, key) for source, values in snapshot["queues"].items() for key in values}
    assert set() == queued - set(GAUGE_KEYS)


def test_queue_depths_are_exported(live_run: tuple[SyncEngine, SyncController, str]) -> None:
    """Tick queue, unacknowledged batches and update receivers' backlog as gauges."""
    engine, _, url = live_run
    queues = engine.health.snapshot()["queues"]
    assert {"feed", "updates"} <= set(queues), sorted(queues)  # the WS feed's and the hub's
    found = samples(scrape(url))
    assert value(found, "qx_update_receivers") >= 1
    assert value(found, "qx_update_receiver_backlog") >= 0
    assert value(found, "qx_tick_queue_depth") >= 0
    assert ("qx_unacknowledged_batches", (("actor", "ws_feed"),)) in found
    # received ticks no DB writer holds: /health's ticks_waiting and its gauge
    assert isinstance(engine.health.snapshot()["ticks_waiting"], int)
    assert value(found, "qx_ticks_waiting") >= 0


def test_rest_request_latencies_are_a_histogram(
    live_run: tuple[SyncEngine, SyncController, str],
) -> None:
    """Every REST attempt of the run lands in qx_rest_request_duration_seconds{endpoint,code}."""
    engine, _, url = live_run
    found = samples(scrape(url))
    after = engine.health.snapshot()["counters"]["rest"]["requests"]
    counts = {
        dict(labels)["endpoint"]: count
        for (name, labels), count in found.items()
        if name == "qx_rest_request_duration_seconds_count" and dict(labels).get("code") == "200"
    }
    assert counts.get("candles", 0) >= 1, counts
    observed = sum(
        count
        for (name, _), count in found.items()
        if name == "qx_rest_request_duration_seconds_count"
    )
    # one observation per finished attempt (one may still be in flight)
    assert 0 < observed <= after, (observed, after)


def test_metrics_content_type_and_base_units(
    live_run: tuple[SyncEngine, SyncController, str],
) -> None:
    """The text format's Content-Type with its version; the missing time in seconds beside the
    deprecated minutes."""
    _, _, url = live_run
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        assert "text/plain; version=0.0.4; charset=utf-8" == response.headers["Content-Type"]
        found = samples(response.read().decode())
    assert value(found, "qx_missing_seconds") == 60 * value(found, "qx_missing_minutes")
