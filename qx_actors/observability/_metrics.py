"""The Prometheus view of a run: the metric families ``/metrics`` serves and the collector
that reads them from one :class:`~qx_actors.observability.RunHealth` snapshot per scrape.

Exactly the families of :data:`METRICS` are exported (every family is declared, with its
``# HELP`` and ``# TYPE``, even before it has a sample). Every sample has the label ``run_id``:

- gauges: ``qx_status{status}`` (1 for the current status, 0 for the others),
  ``qx_healthy``, ``qx_degraded``, ``qx_last_price``, ``qx_last_tick_age_seconds``,
  ``qx_candles_behind_seconds``, ``qx_open_gaps``, ``qx_missing_minutes``,
  ``qx_funding_missing``; the queue depths ``qx_tick_queue_depth`` (ticks received, not yet
  handed to the DB writer), ``qx_unacknowledged_batches{actor}`` (batches handed to the DB
  writer and not yet acknowledged), ``qx_update_receivers``, ``qx_update_receiver_backlog``
  (updates queued in all receivers) and ``qx_update_receiver_backlog_max`` (the fullest);
- counters: ``qx_ticks_committed_total``, ``qx_updates_lagged_total``, ``qx_rest_*_total``
  (requests, responses_ok, retries, rate_limited, errors, timeouts,
  limiter_wait_seconds), ``qx_feed_*_total`` (received, duplicates, batches, overflowed,
  reconnects);
- histogram: ``qx_rest_request_duration_seconds{endpoint,code}``.

A figure nobody feeds yet (no live feed in a backfill, a source not registered) is a family
without samples.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from qx_actors.observability._run_health import RunHealth
from qx_actors.status import State


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric family: its name (counters with ``_total``), type, labels, help."""

    name: str
    kind: str  # "gauge" | "counter" | "histogram"
    help: str
    labels: tuple[str, ...] = ("run_id",)


#: Counter sources' keys → metric name (``register(source, ...)``'s figures).
COUNTER_KEYS: dict[tuple[str, str], str] = {
    ("rest", "requests"): "qx_rest_requests_total",
    ("rest", "responses_ok"): "qx_rest_responses_ok_total",
    ("rest", "retries"): "qx_rest_retries_total",
    ("rest", "rate_limited"): "qx_rest_rate_limited_total",
    ("rest", "errors"): "qx_rest_errors_total",
    ("rest", "timeouts"): "qx_rest_timeouts_total",
    ("rest", "limiter_wait_s"): "qx_rest_limiter_wait_seconds_total",
    ("feed", "received"): "qx_feed_received_total",
    ("feed", "duplicates"): "qx_feed_duplicates_total",
    ("feed", "batches"): "qx_feed_batches_total",
    ("feed", "overflowed"): "qx_feed_overflowed_total",
    ("feed", "reconnects"): "qx_feed_reconnects_total",
}

#: Gauge sources' keys → (metric name, extra labels) (``register_gauges(source, ...)``).
GAUGE_KEYS: dict[tuple[str, str], tuple[str, dict[str, str]]] = {
    ("feed", "queued_ticks"): ("qx_tick_queue_depth", {}),
    ("feed", "unacknowledged_batches"): ("qx_unacknowledged_batches", {"actor": "ws_feed"}),
    ("rest", "unacknowledged_pages"): ("qx_unacknowledged_batches", {"actor": "rest_fetcher"}),
    ("updates", "receivers"): ("qx_update_receivers", {}),
    ("updates", "backlog"): ("qx_update_receiver_backlog", {}),
    ("updates", "backlog_max"): ("qx_update_receiver_backlog_max", {}),
}

_COUNTER_HELP = {
    "qx_rest_requests_total": "REST requests sent (HTTP attempts)",
    "qx_rest_responses_ok_total": "REST answers with a 2xx status",
    "qx_rest_retries_total": "REST attempts repeated after a recoverable failure",
    "qx_rest_rate_limited_total": "REST answers 429 (rate limited)",
    "qx_rest_errors_total": "failed REST attempts (any reason, retried or not)",
    "qx_rest_timeouts_total": "REST attempts that hit sync.rest_timeout_s",
    "qx_rest_limiter_wait_seconds_total": "seconds spent waiting for the REST rate limiter",
    "qx_feed_received_total": "ticks received from the Stream API",
    "qx_feed_duplicates_total": "ticks received twice and dropped",
    "qx_feed_batches_total": "tick batches handed to the DB writer",
    "qx_feed_overflowed_total": "ticks dropped because the tick queue was full",
    "qx_feed_reconnects_total": "Stream API reconnections",
}

#: Every metric family ``/metrics`` exports (the README lists the same).
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("qx_status", "gauge", "1 for the run's current status, 0 for the others",
               ("run_id", "status")),
    MetricSpec("qx_healthy", "gauge", "1 while the run is running and not recovering"),
    MetricSpec("qx_degraded", "gauge", "1 while live data flows by REST polling only"),
    MetricSpec("qx_last_price", "gauge", "last price of the newest tick"),
    MetricSpec("qx_last_tick_age_seconds", "gauge", "seconds since the last tick arrived"),
    MetricSpec("qx_candles_behind_seconds", "gauge", "seconds between now and the newest candle"),
    MetricSpec("qx_open_gaps", "gauge", "gaps in the candle table still to repair"),
    MetricSpec("qx_missing_minutes", "gauge", "minutes of the reach not stored"),
    MetricSpec("qx_funding_missing", "gauge", "settlements missing in the scan"),
    MetricSpec("qx_tick_queue_depth", "gauge",
               "ticks received and not yet handed to the DB writer"),
    MetricSpec("qx_unacknowledged_batches", "gauge",
               "batches handed to the DB writer and not yet acknowledged", ("run_id", "actor")),
    MetricSpec("qx_update_receivers", "gauge", "open update receivers"),
    MetricSpec("qx_update_receiver_backlog", "gauge", "updates queued in all update receivers"),
    MetricSpec("qx_update_receiver_backlog_max", "gauge",
               "updates queued in the fullest update receiver"),
    MetricSpec("qx_ticks_committed_total", "counter", "ticks committed to the database"),
    MetricSpec("qx_updates_lagged_total", "counter", "updates dropped by full receivers"),
    *(MetricSpec(name, "counter", _COUNTER_HELP[name]) for name in COUNTER_KEYS.values()),
    MetricSpec("qx_rest_request_duration_seconds", "histogram",
               "duration of REST requests (code: HTTP status, or 'error' without an answer)",
               ("run_id", "endpoint", "code")),
)  # fmt: skip


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    return None


class MetricsCollector(Collector):
    """The families of :data:`METRICS`, from one snapshot per scrape."""

    def __init__(self, health: RunHealth, run_id: str) -> None:
        self._health = health
        self._run_id = run_id

    def collect(self) -> Iterator[Metric]:
        snap = self._health.snapshot()
        families: dict[str, Metric] = {}
        for spec in METRICS:
            if spec.kind == "gauge":
                families[spec.name] = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
            elif spec.kind == "counter":
                families[spec.name] = CounterMetricFamily(
                    spec.name.removesuffix("_total"), spec.help, labels=spec.labels
                )
            else:
                families[spec.name] = HistogramMetricFamily(
                    spec.name, spec.help, labels=spec.labels
                )
        run = self._run_id

        def add(name: str, value: Any, *labels: str) -> None:
            number = _number(value)
            if number is not None:
                family = families[name]
                assert isinstance(family, (GaugeMetricFamily, CounterMetricFamily))
                family.add_metric([run, *labels], number)

        status = families["qx_status"]
        assert isinstance(status, GaugeMetricFamily)
        for state in State:
            status.add_metric([run, state.value], 1.0 if state.value == snap["status"] else 0.0)
        add("qx_healthy", snap["healthy"])
        add("qx_degraded", snap["degraded"])
        add("qx_last_price", snap["last_price"])
        add("qx_last_tick_age_seconds", snap["last_tick_age_s"])
        add("qx_candles_behind_seconds", snap["candles_behind_s"])
        add("qx_open_gaps", snap["open_gaps"])
        add("qx_missing_minutes", snap["missing_minutes"])
        add("qx_funding_missing", snap["funding_missing"])
        add("qx_ticks_committed_total", snap["ticks_committed"])
        add("qx_updates_lagged_total", snap["updates_lagged"])
        for source, values in snap["counters"].items():
            for key, value in values.items():
                name = COUNTER_KEYS.get((source, key))
                if name is not None:
                    add(name, value)
        for source, values in snap["queues"].items():
            for key, value in values.items():
                gauge = GAUGE_KEYS.get((source, key))
                if gauge is not None:
                    add(gauge[0], value, *gauge[1].values())
        histogram = families["qx_rest_request_duration_seconds"]
        assert isinstance(histogram, HistogramMetricFamily)
        for endpoint, code, buckets, total in self._health.latency_series():
            histogram.add_metric([run, endpoint, code], buckets, total)
        yield from families.values()
