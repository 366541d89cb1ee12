"""What a run looks like from outside: :class:`RunHealth`, the run-level registry of one run,
fed by the update hub and the actors, read by ``SyncController.health()``, the health server
(:meth:`RunHealth.snapshot`), the progress lines and the terminal UI (:meth:`RunHealth.view`:
the same fold, with the states themselves for the panes).

It outlives the run's children: the Engine hands it to every child it starts, and a child that
is replaced at a supervised restart reports into the same counters. Its counters and the
request-duration histogram are prometheus_client metric objects in one
:class:`~prometheus_client.CollectorRegistry` per run (:attr:`RunHealth.registry`, what
``/metrics`` serves); the health figures are one fold of the update stream
(:meth:`RunHealth.observe`).

Sources: the update hub feeds :meth:`RunHealth.observe`; the actors register their totals with
:meth:`RunHealth.register` (a child's own running totals, folded into the run's counters as they
grow, so that a child started afresh adds to them instead of resetting them) and their current
depths with :meth:`RunHealth.register_gauges`; the REST client reports each request's duration
to :meth:`RunHealth.observe_request`.

Health (``healthy``, ``/health``'s 200): the run is doing its job — ``Running.Synced`` or
``Running.Backfilled``, or starting / in progress with progress made since the last error (a
tick committed, candles or settlements stored, a Synced/Backfilled); before any error, starting
and in progress count as doing the job. A restart loop (errors with no progress between them)
is unhealthy throughout; ``unhealthy_since`` says since when, ``last_error`` why. ``live``
(liveness): the run has not ended (``Failed``/``Shutdown``).

``ticks_waiting``: received ticks that no DB writer holds now (held by the feed while the
writer is replaced, in its spool, or carried over to the next writer), the run's
``ticks_waiting`` gauge (``SyncEngine.ticks_waiting()``); ``None`` until it is registered.

Every text of the snapshot (the status's error above all) has its secrets replaced by ``***``
(:mod:`qx_actors.redact`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from qx_actors.domain.funding import FundingSettlementsState
from qx_actors.domain.history import PriceHistoryState
from qx_actors.domain.timeutil import utc_now
from qx_actors.redact import redact_text, redact_value
from qx_actors.status import State, SyncStatus
from qx_actors.updates import (
    FundingSettlementsStateUpdate,
    Lagged,
    PriceHistoryStateUpdate,
    PriceTickUpdate,
    StatusUpdate,
    SyncUpdate,
)

__all__ = [
    "COUNTERS",
    "LATENCY_BUCKETS_S",
    "TICK_WINDOW_S",
    "CounterSource",
    "RunHealth",
    "RunView",
]

#: A counter source: returns a flat mapping of numbers (read from another thread; ints only).
CounterSource = Callable[[], Mapping[str, float]]

#: Upper bounds (seconds) of the request-duration histogram's buckets.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: The run's counters: (source, key) of a registered source → (metric name without
#: ``_total``, help). ``ticks_committed`` and ``updates_lagged`` come from the update stream.
COUNTERS: dict[tuple[str, str], tuple[str, str]] = {
    ("run", "ticks_committed"): ("qx_ticks_committed", "ticks committed to the database"),
    ("run", "updates_lagged"): ("qx_updates_lagged", "updates dropped by full receivers"),
    ("rest", "requests"): ("qx_rest_requests", "REST requests sent (HTTP attempts)"),
    ("rest", "responses_ok"): ("qx_rest_responses_ok", "REST answers with a 2xx status"),
    ("rest", "retries"): (
        "qx_rest_retries",
        "REST attempts repeated after a recoverable failure",
    ),
    ("rest", "rate_limited"): ("qx_rest_rate_limited", "REST answers 429 (rate limited)"),
    ("rest", "errors"): ("qx_rest_errors", "failed REST attempts (any reason, retried or not)"),
    ("rest", "timeouts"): ("qx_rest_timeouts", "REST attempts that hit sync.rest_timeout_s"),
    ("rest", "limiter_wait_s"): (
        "qx_rest_limiter_wait_seconds",
        "seconds spent waiting for the REST rate limiter",
    ),
    ("feed", "received"): ("qx_feed_received", "ticks received from the Stream API"),
    ("feed", "duplicates"): ("qx_feed_duplicates", "ticks received twice and dropped"),
    ("feed", "batches"): ("qx_feed_batches", "tick batches handed to the DB writer"),
    ("feed", "overflowed"): (
        "qx_feed_overflowed",
        "ticks dropped because the tick queue was full",
    ),
    ("feed", "reconnects"): ("qx_feed_reconnects", "Stream API reconnections"),
    ("feed", "spooled"): (
        "qx_feed_spooled",
        "ticks written to the tick spool during database outages (sync.tick_spool)",
    ),
}

#: Seconds of committed ticks per second that the fold keeps (:meth:`RunView.tick_series`).
TICK_WINDOW_S = 120


@dataclass(frozen=True)
class RunView:
    """One read of the fold as the progress lines and the terminal UI show it: the status, the
    latest states, the run's tick figures (committed ticks, all receivers' lag)."""

    status: SyncStatus
    history: PriceHistoryState | None = None
    funding: FundingSettlementsState | None = None
    #: ticks committed in the run (across restarts)
    ticks: int = 0
    last_price: float | None = None
    last_tick_time: datetime | None = None
    #: updates dropped by full receivers, all receivers of the run
    lagged: int = 0
    #: when this view was taken (``time.monotonic()``) and ticks per whole monotonic second
    at: float = 0.0
    per_second: Mapping[int, int] = field(default_factory=dict)

    def tick_series(self, seconds: int) -> list[float]:
        """Ticks committed in each of the last ``seconds`` whole seconds, oldest first."""
        current = int(self.at)
        return [float(self.per_second.get(s, 0)) for s in range(current - seconds, current)]

    def ticks_per_second(self, seconds: int = 5) -> float:
        """Ticks per second over the last ``seconds`` whole seconds."""
        return sum(self.tick_series(seconds)) / seconds


#: States in which the run is doing its job whatever happened before.
_DOING_ITS_JOB = (State.SYNCED, State.BACKFILLED)
#: States that are the job when no error came since the last progress.
_ON_ITS_WAY = (State.STARTING, State.IN_PROGRESS, State.RESTARTING)


class _Source:
    """A registered source and what of it was already counted."""

    def __init__(self, read: CounterSource) -> None:
        self.read = read
        self.seen: dict[str, float] = {}


class RunHealth:
    """What a run looks like from outside; its counters outlive its children (thread-safe)."""

    def __init__(
        self, status: Callable[[], SyncStatus], *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._status = status
        self._monotonic = monotonic
        self._lock = threading.RLock()
        #: the run's metrics (prometheus_client objects), what ``/metrics`` serves
        self.registry = CollectorRegistry(auto_describe=True)
        self._counters = {
            key: Counter(name, help_text, registry=self.registry)
            for key, (name, help_text) in COUNTERS.items()
        }
        self._latency = Histogram(
            "qx_rest_request_duration_seconds",
            "duration of REST requests (code: HTTP status, or 'error' without an answer)",
            ("endpoint", "code"),
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._latency_series: set[tuple[str, str]] = set()
        self._totals: dict[tuple[str, str], float] = dict.fromkeys(COUNTERS, 0.0)
        self._last_tick_time: datetime | None = None
        self._last_tick_at: datetime | None = None
        self._last_price: float | None = None
        self._history: dict[str, Any] | None = None
        self._history_state: PriceHistoryState | None = None
        self._latest_candle: datetime | None = None
        self._funding: dict[str, Any] | None = None
        self._funding_state: FundingSettlementsState | None = None
        self._per_second: dict[int, int] = {}
        self._sources: dict[str, _Source] = {}
        self._gauge_sources: dict[str, CounterSource] = {}
        self._counter_errors: dict[str, str] = {}
        # health: the last error and whether the run made progress since
        self._last_error: str | None = None
        self._last_error_at: datetime | None = None
        self._progress_since_error = True
        self._at_error: tuple[datetime | None, int | None, int | None] = (None, None, None)
        self._healthy: bool | None = None
        self._healthy_since: datetime = utc_now()

    # --- feeding ----------------------------------------------------------------------------

    def observe(self, update: SyncUpdate) -> None:
        """Account for one published update (the one fold of the update stream)."""
        with self._lock:
            match update:
                case StatusUpdate(status=status):
                    self._observe_status(status)
                case PriceTickUpdate(tick=tick):
                    self._count(("run", "ticks_committed"), 1)
                    self._last_tick_time = tick.time
                    self._last_tick_at = utc_now()
                    self._last_price = tick.last_price
                    self._progress_since_error = True
                    self._count_second()
                case PriceHistoryStateUpdate(state=state):
                    self._history = state.summary()
                    self._history_state = state
                    self._latest_candle = state.latest
                    latest, missing, _ = self._at_error
                    if (state.latest is not None and (latest is None or state.latest > latest)) or (
                        missing is not None and state.missing_minutes < missing
                    ):
                        self._progress_since_error = True
                case FundingSettlementsStateUpdate(state=state):
                    self._funding = state.summary()
                    self._funding_state = state
                    missing_settlements = self._at_error[2]
                    if missing_settlements is not None and self._funding["missing"] < (
                        missing_settlements
                    ):
                        self._progress_since_error = True
                case Lagged(missed=missed):
                    self._count(("run", "updates_lagged"), missed)

    def observe_batch(self, updates: Sequence[SyncUpdate]) -> None:
        """:meth:`observe` of each of ``updates`` in order, under one lock (a committed tick
        batch): the ticks counted once, at the time of the call."""
        ticks = 0
        last: PriceTickUpdate | None = None
        with self._lock:
            for update in updates:
                if type(update) is PriceTickUpdate:
                    ticks += 1
                    last = update
                    self._progress_since_error = True
                else:
                    self.observe(update)  # the lock is reentrant
            if last is not None:
                self._count(("run", "ticks_committed"), ticks)
                self._last_tick_time = last.tick.time
                self._last_tick_at = utc_now()
                self._last_price = last.tick.last_price
                self._count_second(ticks)

    def _count_second(self, ticks: int = 1) -> None:
        second = int(self._monotonic())
        self._per_second[second] = self._per_second.get(second, 0) + ticks
        if len(self._per_second) > TICK_WINDOW_S:
            for old in [s for s in self._per_second if s < second - TICK_WINDOW_S]:
                del self._per_second[old]

    def _observe_status(self, status: SyncStatus) -> None:
        if status.error is not None and status.state is not State.FAILED:
            self._last_error = redact_text(status.text)
            self._last_error_at = status.since
            self._progress_since_error = False
            self._at_error = (
                self._latest_candle,
                None if self._history is None else self._history["missing_minutes"],
                None if self._funding is None else self._funding["missing"],
            )
        elif status.state in _DOING_ITS_JOB:
            self._progress_since_error = True
        self._update_healthy(status)

    def register(self, name: str, source: CounterSource) -> None:
        """Count a child's running totals (e.g. ``rest``: requests, 429s) into the run's
        counters under ``name``; a child that replaces another (a restart) adds to what the
        one before counted. The keys of :data:`COUNTERS` are exported as ``*_total``."""
        with self._lock:
            old = self._sources.get(name)
            if old is not None:
                self._fold(name, old)  # what the replaced child counted after the last read
            self._sources[name] = _Source(source)

    def register_gauges(self, name: str, source: CounterSource) -> None:
        """Add current values (queue depths, e.g. ``feed``: ``queued_ticks``) to the snapshot's
        ``queues`` under ``name``; the keys of ``GAUGE_KEYS`` are exported as gauges."""
        with self._lock:
            self._gauge_sources[name] = source

    def observe_request(self, endpoint: str, seconds: float, code: int | str) -> None:
        """Account for one REST request of ``endpoint`` (``candles``, ...) that took
        ``seconds`` and ended with HTTP status ``code`` (``"error"``: no answer)."""
        with self._lock:
            self._latency_series.add((endpoint, str(code)))
        self._latency.labels(endpoint, str(code)).observe(seconds)

    def _count(self, key: tuple[str, str], amount: float) -> None:
        if amount > 0:
            self._totals[key] += amount
            self._counters[key].inc(amount)

    def _fold(self, name: str, source: _Source) -> None:
        """Add what ``source`` counted since it was last read to the run's counters."""
        try:
            values = dict(source.read())
        except Exception as exc:  # a figure must never break the probe
            self._counter_errors[name] = redact_text(repr(exc))
            return
        self._counter_errors.pop(name, None)
        for key, value in values.items():
            seen = source.seen.get(key, 0.0)
            source.seen[key] = value
            counted = (name, key)
            if counted in self._counters:
                self._count(counted, value - seen)
            else:  # not exported: still shown in the snapshot
                self._totals[counted] = self._totals.get(counted, 0.0) + max(0.0, value - seen)

    def collect(self) -> None:
        """Bring the counters up to date with the registered sources (before a read)."""
        with self._lock:
            for name, source in self._sources.items():
                self._fold(name, source)

    # --- reading ----------------------------------------------------------------------------

    def _update_healthy(self, status: SyncStatus) -> bool:
        if status.state in _DOING_ITS_JOB:
            healthy = True
        elif status.state in _ON_ITS_WAY:
            healthy = self._progress_since_error
        else:
            healthy = False
        if healthy != self._healthy:
            self._healthy = healthy
            self._healthy_since = utc_now()
        return healthy

    def latency_series(self) -> list[tuple[str, str, float, float]]:
        """Every request-duration series: endpoint, code, count, sum of seconds."""
        found: dict[tuple[str, str], list[float]] = {}
        for metric in self._latency.collect():
            for sample in metric.samples:
                key = (sample.labels.get("endpoint", ""), sample.labels.get("code", ""))
                if sample.name.endswith("_count"):
                    found.setdefault(key, [0.0, 0.0])[0] = sample.value
                elif sample.name.endswith("_sum"):
                    found.setdefault(key, [0.0, 0.0])[1] = sample.value
        return [(e, c, count, total) for (e, c), (count, total) in sorted(found.items())]

    def view(self) -> RunView:
        """The fold as the progress lines and the terminal UI read it (no counter is read)."""
        status = self._status()
        with self._lock:
            return RunView(
                status=status,
                history=self._history_state,
                funding=self._funding_state,
                ticks=int(self._totals[("run", "ticks_committed")]),
                last_price=self._last_price,
                last_tick_time=self._last_tick_time,
                lagged=int(self._totals[("run", "updates_lagged")]),
                at=self._monotonic(),
                per_second=dict(self._per_second),
            )

    def snapshot(self) -> dict[str, Any]:
        """The run's health as plain data."""
        now = utc_now()
        status = self._status()
        self.collect()
        with self._lock:
            healthy = self._update_healthy(status)
            snapshot: dict[str, Any] = {
                "status": status.name,
                "degraded": status.degraded,
                "error": None if status.error is None else redact_text(str(status.error)),
                "status_since": status.since.isoformat(),
                "healthy": healthy,
                "unhealthy_since": None if healthy else self._healthy_since.isoformat(),
                "live": not status.is_stopped,
                "last_error": self._last_error,
                "last_error_at": _iso(self._last_error_at),
                "ticks_committed": int(self._totals[("run", "ticks_committed")]),
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
                "updates_lagged": int(self._totals[("run", "updates_lagged")]),
            }
            counters: dict[str, dict[str, float]] = {}
            for (source, key), total in self._totals.items():
                if source in self._sources:
                    counters.setdefault(source, {})[key] = total
            for name in self._counter_errors:
                counters.setdefault(name, {})["error"] = float("nan")
            if self._counter_errors:
                snapshot["counter_errors"] = dict(self._counter_errors)
            gauge_sources = dict(self._gauge_sources)
        snapshot["counters"] = counters
        snapshot["queues"] = self._read_gauges(gauge_sources, snapshot)
        waiting = snapshot["queues"].get("run", {}).get("ticks_waiting")
        # received ticks no DB writer holds (the feed's queue or spool, carried over)
        snapshot["ticks_waiting"] = None if waiting is None else int(waiting)
        snapshot["request_latency"] = {
            f"{endpoint} {code}": {"count": int(count), "sum_s": round(total, 6)}
            for endpoint, code, count, total in self.latency_series()
        }
        redacted: dict[str, Any] = redact_value(snapshot)  # whatever text a counter carries
        return redacted

    @staticmethod
    def _read_gauges(
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
