"""Health and metrics of a run: a JSON probe and a Prometheus endpoint.

:class:`RunHealth` watches every update a run publishes (status, committed ticks, history and
funding states) and holds the counters the actors register (REST requests and 429s, stream
reconnects, tick queue depth, ...). ``SyncController.health()`` returns its snapshot;
:class:`HealthServer` serves it over HTTP on ``metrics.listen``:

* ``GET /health``: the snapshot as JSON; 200 while the run is healthy (running, not failed,
  feed not stale), 503 otherwise;
* ``GET /metrics``: the same figures in the Prometheus text format (``qx_*``).

Every text of the snapshot (the status's error above all) has its secrets replaced by ``***``
(:mod:`qx_actors.redact`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
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
        """Add counters (e.g. ``rest``: requests, 429s) to the snapshot under ``name``."""
        with self._lock:
            self._sources[name] = source

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
        counters: dict[str, dict[str, float]] = {}
        for name, source in sources.items():
            try:
                counters[name] = dict(source())
            except Exception as exc:  # a counter must never break the probe
                counters[name] = {"error": float("nan")}
                snapshot.setdefault("counter_errors", {})[name] = redact_text(repr(exc))
        snapshot["counters"] = counters
        snapshot["healthy"] = status.is_running and status.state is not State.RECOVERING
        redacted: dict[str, Any] = redact_value(snapshot)  # whatever text a counter carries
        return redacted


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _age(now: datetime, value: datetime | None) -> float | None:
    return None if value is None else round((now - value).total_seconds(), 3)


class _Collector(Collector):
    def __init__(self, health: RunHealth, run_id: str) -> None:
        self._health = health
        self._run_id = run_id

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self._health.snapshot()
        labels = ["run_id"]

        def gauge(name: str, doc: str, value: Any) -> GaugeMetricFamily:
            family = GaugeMetricFamily(f"qx_{name}", doc, labels=labels)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                family.add_metric([self._run_id], float(value))
            elif isinstance(value, bool):
                family.add_metric([self._run_id], 1.0 if value else 0.0)
            return family

        yield gauge("healthy", "1 while the run is running and not recovering", snap["healthy"])
        yield gauge("degraded", "1 while live data flows by REST polling only", snap["degraded"])
        yield gauge("ticks_committed", "ticks committed to the database", snap["ticks_committed"])
        yield gauge("last_tick_age_seconds", "seconds since the last tick", snap["last_tick_age_s"])
        yield gauge(
            "candles_behind_seconds", "seconds between now and the newest candle",
            snap["candles_behind_s"],
        )  # fmt: skip
        yield gauge("open_gaps", "gaps in the candle table still to repair", snap["open_gaps"])
        yield gauge("missing_minutes", "minutes of the reach not stored", snap["missing_minutes"])
        yield gauge("funding_missing", "settlements missing in the scan", snap["funding_missing"])
        yield gauge("updates_lagged", "updates dropped by full receivers", snap["updates_lagged"])
        for source, values in snap["counters"].items():
            for key, value in values.items():
                yield gauge(f"{source}_{key}", f"{source} counter {key}", value)


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
        """Listen (in a background loop thread)."""
        self._thread.start()
        self._thread.run(self._start(), timeout=10)
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
