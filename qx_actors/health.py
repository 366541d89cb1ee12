"""Health and metrics of a run: a JSON probe and a Prometheus endpoint.

:class:`RunHealth` watches every update a run publishes (status, committed ticks, history and
funding states) and holds the counters the actors register (REST requests and 429s, stream
reconnects, tick queue depth, ...). ``SyncController.health()`` returns its snapshot;
:class:`HealthServer` serves it over HTTP on ``metrics.listen``:

* ``GET /health``: the snapshot as JSON; 200 while the run is healthy (running, not failed,
  feed not stale), 503 otherwise;
* ``GET /metrics``: the same figures in the Prometheus text format, exactly the families of
  :data:`METRICS` (every family is declared, with its ``# HELP`` and ``# TYPE``, even before
  it has a sample). Every sample has the label ``run_id``:

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

Sources: the update hub feeds :meth:`RunHealth.observe`; the actors register their totals with
:meth:`RunHealth.register` (counters) and their current depths with
:meth:`RunHealth.register_gauges`; the REST client reports each request's duration to
:meth:`RunHealth.observe_request`.

Every text of the snapshot (the status's error above all) has its secrets replaced by ``***``
(:mod:`qx_actors.redact`).
"""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from qx_actors.actors.loop_thread import LoopThread
from qx_actors.domain.timeutil import utc_now
from qx_actors.redact import redact_text, redact_value
from qx_actors.status import State, SyncStatus
from qx_actors.updates import (
    FundingSettlementsStateUpdate,
    Lagged,
    PriceHistoryStateUpdate,
    PriceTickUpdate,
    SyncUpdate,
)

#: A counter source: returns a flat mapping of numbers (read from another thread; ints only).
CounterSource = Callable[[], Mapping[str, float]]

#: Upper bounds (seconds) of the request-duration histogram's buckets.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


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


class _Latency:
    """Bucket counts, sum and count of one histogram series."""

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)  # the last one is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        index = bisect.bisect_left(LATENCY_BUCKETS_S, seconds)
        self.buckets[index] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        bounds = [*(repr(float(b)) for b in LATENCY_BUCKETS_S), "+Inf"]
        return list(zip(bounds, itertools.accumulate(self.buckets), strict=True))


class RunHealth:
    """What a run looks like from outside; fed by the update hub (thread-safe)."""

    def __init__(self, status: Callable[[], SyncStatus]) -> None:
        self._status = status
        self._lock = threading.Lock()
        self._ticks = 0
        self._last_tick_time: datetime | None = None
        self._last_tick_at: datetime | None = None
        self._last_price: float | None = None
        self._history: dict[str, Any] | None = None
        self._latest_candle: datetime | None = None
        self._funding: dict[str, Any] | None = None
        self._lagged = 0
        self._sources: dict[str, CounterSource] = {}
        self._gauge_sources: dict[str, CounterSource] = {}
        self._latency: dict[tuple[str, str], _Latency] = {}

    def observe(self, update: SyncUpdate) -> None:
        """Account for one published update."""
        with self._lock:
            match update:
                case PriceTickUpdate(tick=tick):
                    self._ticks += 1
                    self._last_tick_time = tick.time
                    self._last_tick_at = utc_now()
                    self._last_price = tick.last_price
                case PriceHistoryStateUpdate(state=state):
                    self._history = state.summary()
                    self._latest_candle = state.latest
                case FundingSettlementsStateUpdate(state=state):
                    self._funding = state.summary()
                case Lagged(missed=missed):
                    self._lagged += missed

    def register(self, name: str, source: CounterSource) -> None:
        """Add counters — running totals — (e.g. ``rest``: requests, 429s) to the snapshot
        under ``name``; the keys of :data:`COUNTER_KEYS` are exported as ``*_total``."""
        with self._lock:
            self._sources[name] = source

    def register_gauges(self, name: str, source: CounterSource) -> None:
        """Add current values (queue depths, e.g. ``feed``: ``queued_ticks``) to the snapshot's
        ``queues`` under ``name``; the keys of :data:`GAUGE_KEYS` are exported as gauges."""
        with self._lock:
            self._gauge_sources[name] = source

    def observe_request(self, endpoint: str, seconds: float, code: int | str) -> None:
        """Account for one REST request of ``endpoint`` (``candles``, ...) that took
        ``seconds`` and ended with HTTP status ``code`` (``"error"``: no answer)."""
        with self._lock:
            series = self._latency.get((endpoint, str(code)))
            if series is None:
                series = self._latency[(endpoint, str(code))] = _Latency()
            series.observe(seconds)

    def latency_series(self) -> list[tuple[str, str, list[tuple[str, float]], float]]:
        """Every request-duration series: endpoint, code, cumulative buckets, sum."""
        with self._lock:
            return [
                (endpoint, code, series.cumulative(), series.total)
                for (endpoint, code), series in sorted(self._latency.items())
            ]

    def snapshot(self) -> dict[str, Any]:
        """The run's health as plain data."""
        now = utc_now()
        status = self._status()
        with self._lock:
            sources = dict(self._sources)
            snapshot: dict[str, Any] = {
                "status": status.name,
                "degraded": status.degraded,
                "error": None if status.error is None else redact_text(str(status.error)),
                "status_since": status.since.isoformat(),
                "ticks_committed": self._ticks,
                "last_price": self._last_price,
                "last_tick_time": _iso(self._last_tick_time),
                "last_tick_age_s": _age(now, self._last_tick_at),
                "latest_candle": _iso(self._latest_candle),
                "candles_behind_s": _age(now, self._latest_candle),
                "open_gaps": None if self._history is None else self._history["gaps"],
                "missing_minutes": (
                    None if self._history is None else self._history["missing_minutes"]
                ),
                "funding_missing": None if self._funding is None else self._funding["missing"],
                "updates_lagged": self._lagged,
            }
        snapshot["counters"] = self._read(sources, snapshot)
        with self._lock:
            gauge_sources = dict(self._gauge_sources)
            latency = {
                f"{endpoint} {code}": {"count": series.count, "sum_s": round(series.total, 6)}
                for (endpoint, code), series in sorted(self._latency.items())
            }
        snapshot["queues"] = self._read(gauge_sources, snapshot)
        snapshot["request_latency"] = latency
        snapshot["healthy"] = status.is_running and status.state is not State.RECOVERING
        redacted: dict[str, Any] = redact_value(snapshot)  # whatever text a counter carries
        return redacted

    @staticmethod
    def _read(
        sources: Mapping[str, CounterSource], snapshot: dict[str, Any]
    ) -> dict[str, dict[str, float]]:
        values: dict[str, dict[str, float]] = {}
        for name, source in sources.items():
            try:
                values[name] = dict(source())
            except Exception as exc:  # a figure must never break the probe
                values[name] = {"error": float("nan")}
                snapshot.setdefault("counter_errors", {})[name] = redact_text(repr(exc))
        return values


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _age(now: datetime, value: datetime | None) -> float | None:
    return None if value is None else round((now - value).total_seconds(), 3)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    return None


class _Collector(Collector):
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


class HealthServer:
    """``/health`` (JSON) and ``/metrics`` (Prometheus) over HTTP for one run."""

    def __init__(self, health: RunHealth, run_id: str, host: str, port: int) -> None:
        self._health = health
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_Collector(health, run_id))
        self._host = host
        self._port = port
        self._thread = LoopThread(f"qx-health-{run_id}")
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9108``."""
        return f"http://{self._host}:{self.port}"

    async def _serve_health(self, request: web.Request) -> web.Response:
        snapshot = self._health.snapshot()
        return web.json_response(snapshot, status=200 if snapshot["healthy"] else 503)

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/health", self._serve_health)
        app.router.add_get("/metrics", self._serve_metrics)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        await site.start()
        self.port = int(runner.addresses[0][1])
        self._runner = runner

    async def _stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def start(self) -> HealthServer:
        """Listen (in a background loop thread); ``OSError`` if the address can't be had."""
        self._thread.start()
        try:
            self._thread.run(self._start(), timeout=10)
        except BaseException:
            self._thread.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop listening (idempotent)."""
        if self._thread.is_alive:
            self._thread.run(self._stop(), timeout=5)
            self._thread.stop()


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` → (host, port); ``ValueError`` naming what was expected."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected 'host:port' such as '127.0.0.1:9108', got {text!r}")
    return host, int(port)
