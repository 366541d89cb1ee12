"""Fixtures and helpers of the live/full acceptance tests (whole actor system, real sockets).

* ``live_database_url``: an empty database URL (SQLite file; the same tests run on PostgreSQL
  when this fixture is parametrized with ``storage_url``);
* ``sim``: a factory of started simulators, every one stopped after the test;
* ``run_engine``: a factory of started engines, every one shut down after the test;
* reading the database back uses only the URL and plain SQL.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from qx_actors.config import QxConfig, config_from_mapping
from qx_actors.domain.values import PriceTick
from qx_actors.errors import SyncError
from qx_actors.simulator import Simulator, SimulatorConfig
from qx_actors.status import TRANSITIONS, State, SyncStatus, Trigger
from qx_actors.storage._backend import open_backend
from qx_actors.sync_engine import SyncController, SyncEngine
from qx_actors.updates import (
    PriceHistoryStateUpdate,
    PriceTickUpdate,
    StatusUpdate,
    SyncUpdate,
    UpdateReceiver,
)

#: Short intervals for tests; anything a test needs differently it passes.
FAST_SYNC: dict[str, Any] = {
    "rest_rate_limit_per_s": 1000,
    "rest_error_cooldown_s": 0.05,
    "rest_timeout_s": 5,
    "restart_interval_s": 0.1,
    "shutdown_timeout_s": 4.0,
    "price_history_reach": "1d",
    "funding_settlement_reach": "2d",
    "price_history_re_sync_interval_s": 5,
    "price_history_re_backfill_interval_s": 60,
    "live_price_tick_max_interval_s": 30,
    "update_queue_capacity": 100_000,
}


@pytest.fixture
def live_database_url(storage_url: str) -> str:
    """An empty database, once per backend (SQLite file, fresh PostgreSQL database)."""
    return storage_url


@pytest.fixture
def sim() -> Iterator[Callable[..., Simulator]]:
    """Start simulators (``sim(tick_rate_per_s=..)``); all are stopped after the test."""
    started: list[Simulator] = []

    def start(**config: Any) -> Simulator:
        config.setdefault("rate_limit_per_s", None)
        simulator = Simulator(SimulatorConfig(**config)).start()
        started.append(simulator)
        return simulator

    try:
        yield start
    finally:
        for simulator in started:
            simulator.stop()


def live_config(
    database: str,
    *,
    rest_url: str,
    stream_url: str,
    mode: str = "live",
    lookback: str | None = None,
    exchange: dict[str, Any] | None = None,
    **sync: Any,
) -> QxConfig:
    """A config for the simulator with the fast test intervals."""
    data: dict[str, Any] = {
        "mode": mode,
        "database": database,
        "exchange": {"rest_url": rest_url, "stream_url": stream_url, **(exchange or {})},
        "sync": {**FAST_SYNC, **sync},
    }
    if lookback is not None:
        data["lookback"] = lookback
    return config_from_mapping(data)


class LiveRun:
    """A started engine with a receiver created before ``start()``."""

    def __init__(self, engine: SyncEngine) -> None:
        self.engine = engine
        self.receiver = engine.update_receiver()
        self.statuses: list[SyncStatus] = []
        self.ticks: list[PriceTick] = []
        self.passes = 0
        self.controller: SyncController = engine.start()

    def next_update(self, timeout: float = 10.0) -> SyncUpdate:
        """The next update (statuses and ticks are also recorded)."""
        update = self.receiver.get(timeout)
        self._take(update)
        return update

    def _take(self, update: SyncUpdate) -> None:
        if isinstance(update, StatusUpdate):
            self.statuses.append(update.status)
        elif isinstance(update, PriceTickUpdate):
            self.ticks.append(update.tick)
        elif isinstance(update, PriceHistoryStateUpdate):
            self.passes += 1

    def until_passes(self, count: int, timeout: float = 10.0) -> None:
        """Read updates until ``count`` more price-history states were published."""
        target = self.passes + count
        deadline = time.monotonic() + timeout
        while self.passes < target:
            self.next_update(max(deadline - time.monotonic(), 0.01))

    def until(self, stop: Callable[[SyncStatus], bool], timeout: float = 10.0) -> SyncStatus:
        """Read updates until a status satisfies ``stop``; fails on a terminal status."""
        deadline = time.monotonic() + timeout
        while True:
            update = self.next_update(max(deadline - time.monotonic(), 0.01))
            if isinstance(update, StatusUpdate):
                if stop(update.status):
                    return update.status
                assert not update.status.is_stopped, f"the run stopped: {update.status}"

    def until_state(self, state: State, timeout: float = 10.0) -> SyncStatus:
        """Read updates until ``state``."""
        return self.until(lambda s: s.state is state, timeout)

    def until_ticks(self, count: int, timeout: float = 10.0) -> list[PriceTick]:
        """Read updates until ``count`` committed ticks were published in all."""
        deadline = time.monotonic() + timeout
        while len(self.ticks) < count:
            self.next_update(max(deadline - time.monotonic(), 0.01))
        return self.ticks

    def drain(self) -> None:
        """Read every update still queued (after the run ended)."""
        for update in _drain(self.receiver):
            self._take(update)

    def shutdown(self) -> SyncStatus:
        """Shut down; the final status."""
        self.controller.shutdown()
        status = self.controller.until_stopped(timeout=10)
        self.drain()
        return status


def _drain(receiver: UpdateReceiver) -> Iterator[SyncUpdate]:
    while (update := receiver.get_nowait()) is not None:
        yield update


@pytest.fixture
def run_engine() -> Iterator[Callable[[QxConfig], LiveRun]]:
    """Start engines; each is shut down (if still running) after the test."""
    runs: list[LiveRun] = []

    def start(config: QxConfig) -> LiveRun:
        run = LiveRun(SyncEngine(config))
        runs.append(run)
        return run

    try:
        yield start
    finally:
        for run in runs:
            if run.controller.status_snapshot().is_running:
                with contextlib.suppress(SyncError):
                    run.controller.shutdown()
            with contextlib.suppress(TimeoutError):
                run.controller.until_stopped(timeout=10)


# -- reading the database back (URL + plain SQL only) ---------------------------------------


def sql(url: str, text: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``text`` (``?`` placeholders) on a fresh read-only connection."""
    backend = open_backend(url, read_only=True)
    try:
        return [tuple(row) for row in backend.execute(text, params).fetchall()]
    finally:
        backend.close()


def stored_ticks(url: str) -> list[tuple[datetime, float]]:
    """Every stored tick as ``(time, price)``, oldest first."""
    backend = open_backend(url, read_only=True)
    try:
        rows = backend.execute("SELECT time, last_price FROM price_ticks ORDER BY time").fetchall()
        return [(backend.time_value(t), float(p)) for t, p in rows]
    finally:
        backend.close()


def stored_candle_times(url: str) -> list[datetime]:
    """Every stored candle time, oldest first."""
    backend = open_backend(url, read_only=True)
    try:
        rows = backend.execute("SELECT time FROM ohlc_candles ORDER BY time").fetchall()
        return [backend.time_value(t) for (t,) in rows]
    finally:
        backend.close()


def newest_stable_candle(url: str) -> datetime | None:
    """The time of the newest candle flagged stable."""
    backend = open_backend(url, read_only=True)
    try:
        (value,) = backend.execute(
            "SELECT MAX(time) FROM ohlc_candles WHERE stable = ?", (True,)
        ).fetchone()
        return None if value is None else backend.time_value(value)
    finally:
        backend.close()


def tick_pairs(ticks: list[PriceTick]) -> list[tuple[datetime, float]]:
    """Ticks as ``(time, price)`` pairs."""
    return [(t.time, float(t.last_price)) for t in ticks]


# -- logs -------------------------------------------------------------------------------------


def transitions(logs: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """The ``(trigger, src, dst)`` of every logged status transition."""
    return [(e["trigger"], e["src"], e["dst"]) for e in logs if e["event"] == "status_transition"]


def assert_follows_graph(logs: list[dict[str, Any]]) -> None:
    """Each logged transition is an edge of SPEC §4 and starts where the previous one ended."""
    edges = {(t, s, d) for t, sources, d in TRANSITIONS for s in sources}
    logged = transitions(logs)
    assert logged, "no status_transition logged"
    previous = State.NOT_INITIATED
    for trigger, src, dst in logged:
        edge = (Trigger(trigger), State(src), State(dst))
        assert edge in edges, f"not an edge of the graph: {edge}"
        assert previous is State(src), f"{trigger}: from {src}, but the state was {previous}"
        previous = State(dst)
    rejected = [e for e in logs if e["event"] == "status_transition_rejected"]
    assert [] == rejected


# -- a TCP listener that never answers the WebSocket handshake ---------------------------------


class SilentListener:
    """Accepts TCP connections on 127.0.0.1 and never writes a byte."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self.port = self._server.getsockname()[1]
        self.accepted = threading.Event()
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="silent-listener", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """A ws:// URL pointing at the listener."""
        return f"ws://127.0.0.1:{self.port}/v1"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(conn)
            self.accepted.set()

    def close(self) -> None:
        """Stop accepting and close every connection."""
        self._stop.set()
        self._thread.join(2)
        for conn in self._conns:
            conn.close()
        self._server.close()


@pytest.fixture
def silent_listener() -> Iterator[SilentListener]:
    """A TCP listener that accepts and never answers (closed after the test)."""
    listener = SilentListener()
    try:
        yield listener
    finally:
        listener.close()
