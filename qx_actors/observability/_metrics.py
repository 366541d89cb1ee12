"""The Prometheus view of a run: the metric families ``/metrics`` serves.

The counters and the request-duration histogram are the run's own prometheus_client objects
(:attr:`RunHealth.registry <qx_actors.observability.RunHealth.registry>`: they keep counting
across supervised restarts); the gauges are read from one
:meth:`~qx_actors.observability.RunHealth.snapshot` per scrape by :class:`MetricsCollector`.
Exactly the families of :data:`METRICS` are exported (every family is declared, with its
``# HELP`` and ``# TYPE``, even before it has a sample). No series carries the run id: one
process has one stable label set; ``qx_run_info{run_id}`` names the run.

- gauges: ``qx_status{status}`` (1 for the current status, 0 for the others),
  ``qx_healthy``, ``qx_degraded``, ``qx_last_price``, ``qx_last_tick_age_seconds``,
  ``qx_candles_behind_seconds``, ``qx_open_gaps``, ``qx_missing_seconds`` (and
  ``qx_missing_minutes``, deprecated: the same in minutes), ``qx_funding_missing``; the queue
  depths ``qx_tick_queue_depth`` (ticks received, not yet handed to the DB writer),
  ``qx_unacknowledged_batches{actor}`` (batches handed to the DB writer and not yet
  acknowledged), ``qx_update_receivers``, ``qx_update_receiver_backlog`` (updates queued in
  all receivers), ``qx_update_receiver_backlog_max`` (the fullest) and ``qx_ticks_waiting``
  (received ticks no DB writer holds: ``SyncEngine.ticks_waiting()``);
- counters: ``qx_ticks_committed_total``, ``qx_updates_lagged_total``, ``qx_rest_*_total``
  (requests, responses_ok, retries, rate_limited, errors, timeouts,
  limiter_wait_seconds), ``qx_feed_*_total`` (received, duplicates, batches, overflowed,
  reconnects, spooled);
- histogram: ``qx_rest_request_duration_seconds{endpoint,code}``;
- info (a gauge of value 1): ``qx_run_info{run_id}``.

A figure nobody feeds yet (no live feed in a backfill, a source not registered) is a family
without samples.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from qx_actors.observability._run_health import COUNTERS, RunHealth
from qx_actors.status import State

__all__ = [
    "COUNTER_KEYS",
    "GAUGE_KEYS",
    "METRICS",
    "MetricSpec",
    "MetricsCollector",
]


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric family: its name (counters with ``_total``), type, labels, help."""

    name: str
    kind: str  # "gauge" | "counter" | "histogram" | "info"
    help: str
    labels: tuple[str, ...] = ()


#: Counter sources' keys → metric name (``register(source, ...)``'s figures).
COUNTER_KEYS: dict[tuple[str, str], str] = {
    key: f"{name}_total" for key, (name, _) in COUNTERS.items() if key[0] != "run"
}

#: Gauge sources' keys → (metric name, extra labels) (``register_gauges(source, ...)``).
GAUGE_KEYS: dict[tuple[str, str], tuple[str, dict[str, str]]] = {
    ("feed", "queued_ticks"): ("qx_tick_queue_depth", {}),
    ("feed", "unacknowledged_batches"): ("qx_unacknowledged_batches", {"actor": "ws_feed"}),
    ("rest", "unacknowledged_pages"): ("qx_unacknowledged_batches", {"actor": "rest_fetcher"}),
    ("updates", "receivers"): ("qx_update_receivers", {}),
    ("updates", "backlog"): ("qx_update_receiver_backlog", {}),
    ("updates", "backlog_max"): ("qx_update_receiver_backlog_max", {}),
    ("run", "ticks_waiting"): ("qx_ticks_waiting", {}),
}

#: The gauges read from the snapshot (the collector's own families).
_GAUGES: tuple[MetricSpec, ...] = (
    MetricSpec("qx_status", "gauge", "1 for the run's current status, 0 for the others",
               ("status",)),
    MetricSpec("qx_healthy", "gauge",
               "1 while the run does its job (Synced/Backfilled, or progress since an error)"),
    MetricSpec("qx_degraded", "gauge", "1 while live data flows by REST polling only"),
    MetricSpec("qx_last_price", "gauge", "last price of the newest tick"),
    MetricSpec("qx_last_tick_age_seconds", "gauge", "seconds since the last tick arrived"),
    MetricSpec("qx_candles_behind_seconds", "gauge", "seconds between now and the newest candle"),
    MetricSpec("qx_open_gaps", "gauge", "gaps in the candle table still to repair"),
    MetricSpec("qx_missing_seconds", "gauge", "time of the reach not stored, in seconds"),
    MetricSpec("qx_missing_minutes", "gauge",
               "deprecated (qx_missing_seconds / 60): minutes of the reach not stored"),
    MetricSpec("qx_funding_missing", "gauge", "settlements missing in the scan"),
    MetricSpec("qx_tick_queue_depth", "gauge",
               "ticks received and not yet handed to the DB writer"),
    MetricSpec("qx_unacknowledged_batches", "gauge",
               "batches handed to the DB writer and not yet acknowledged", ("actor",)),
    MetricSpec("qx_update_receivers", "gauge", "open update receivers"),
    MetricSpec("qx_update_receiver_backlog", "gauge", "updates queued in all update receivers"),
    MetricSpec("qx_update_receiver_backlog_max", "gauge",
               "updates queued in the fullest update receiver"),
    MetricSpec("qx_ticks_waiting", "gauge",
               "received ticks no DB writer holds (held while it is replaced, spooled)"),
)  # fmt: skip

#: Every metric family ``/metrics`` exports (the README lists the same).
METRICS: tuple[MetricSpec, ...] = (
    *_GAUGES,
    *(MetricSpec(f"{name}_total", "counter", text) for name, text in COUNTERS.values()),
    MetricSpec("qx_rest_request_duration_seconds", "histogram",
               "duration of REST requests (code: HTTP status, or 'error' without an answer)",
               ("endpoint", "code")),
    # an info metric: a gauge of value 1 in the text format
    MetricSpec("qx_run_info", "gauge", "the run this process serves", ("run_id",)),
)  # fmt: skip


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    return None


class MetricsCollector(Collector):
    """The gauges of :data:`METRICS` from one snapshot per scrape, and the run's info; the
    run's counters and histogram follow (its registry), brought up to date by the snapshot."""

    def __init__(self, health: RunHealth, run_id: str) -> None:
        self._health = health
        self._run_id = run_id

    def collect(self) -> Iterator[Metric]:
        snap = self._health.snapshot()  # also folds the children's totals into the counters
        families = {
            spec.name: GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
            for spec in _GAUGES
        }

        def add(name: str, value: Any, *labels: str) -> None:
            number = _number(value)
            if number is not None:
                families[name].add_metric(list(labels), number)

        for state in State:
            add("qx_status", state.value == snap["status"], state.value)
        add("qx_healthy", snap["healthy"])
        add("qx_degraded", snap["degraded"])
        add("qx_last_price", snap["last_price"])
        add("qx_last_tick_age_seconds", snap["last_tick_age_s"])
        add("qx_candles_behind_seconds", snap["candles_behind_s"])
        add("qx_open_gaps", snap["open_gaps"])
        missing = _number(snap["missing_minutes"])
        add("qx_missing_seconds", None if missing is None else missing * 60)
        add("qx_missing_minutes", missing)
        add("qx_funding_missing", snap["funding_missing"])
        for source, values in snap["queues"].items():
            for key, value in values.items():
                gauge = GAUGE_KEYS.get((source, key))
                if gauge is not None:
                    add(gauge[0], value, *gauge[1].values())
        yield from families.values()
        info = InfoMetricFamily("qx_run", "the run this process serves", labels=())
        info.add_metric([], {"run_id": self._run_id})
        yield info
        for metric in self._health.registry.collect():
            # the families of the README only: no ``*_created`` timestamps beside the counters
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric
