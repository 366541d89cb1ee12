"""What a run looks like from outside: :class:`RunHealth`, fed by the update hub and the
actors, read by ``SyncController.health()``, the health server and the metrics collector.

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
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

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
