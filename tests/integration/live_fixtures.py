"""Fixtures and helpers of the live/full acceptance tests (whole actor system, real sockets).

* ``live_database_url``: an empty database URL (SQLite file; the same tests run on PostgreSQL
  when this fixture is parametrized with ``storage_url``);
* ``sim``: a factory of started simulators, every one stopped after the test;
* ``run_engine``: a factory of started engines, each watched by a
  :class:`~qx_actors.testing.RunProbe` and shut down after the test (status timeline checked);
* reading the database back uses only the URL and plain SQL.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from qx_actors import testing
from qx_actors.config import QxConfig
from qx_actors.domain.values import PriceTick
from qx_actors.simulator import Simulator
from qx_actors.status import State, SyncStatus
from qx_actors.storage._open import open_backend

#: On top of :data:`qx_actors.testing.FAST_SYNC`: live intervals a test can wait out, and a
#: receiver large enough that a test reading slowly never sees ``Lagged``.
LIVE_SYNC: dict[str, Any] = {
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
def live_harness() -> Iterator[LiveHarness]:
    """The simulators and runs of one test (wall clock), all stopped after it."""
    with LiveHarness() as harness:
        yield harness


@pytest.fixture
def sim(live_harness: LiveHarness) -> Callable[..., Simulator]:
    """Start simulators (``sim(tick_rate_per_s=..)``); all are stopped after the test."""
    return live_harness.simulator


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
    return testing.fast_config(
        database, rest_url=rest_url, stream_url=stream_url, mode=mode, lookback=lookback,
        exchange=exchange, **{**LIVE_SYNC, **sync},
    )  # fmt: skip


class LiveRun(testing.RunProbe):
    """The probe under the names ``test_live.py`` and ``test_supervision.py`` use (a shim:
    new tests call the :class:`~qx_actors.testing.RunProbe` methods)."""

    @property
    def passes(self) -> int:
        """How many price-history states were published so far."""
        return len(self.price_history_states)

    def until_passes(self, count: int, timeout: float = 10.0) -> None:
        """Read updates until ``count`` more price-history states were published."""
        target = self.passes + count
        self.wait_until(lambda: self.passes >= target, timeout, what=f"{count} more passes")

    def until(self, stop: Callable[[SyncStatus], bool], timeout: float = 10.0) -> SyncStatus:
        """Read updates until a status satisfies ``stop``; fails on a terminal status."""
        return self.wait_for(stop, timeout)

    def until_state(self, state: State, timeout: float = 10.0) -> SyncStatus:
        """Read updates until ``state``."""
        return self.wait_for_state(state, timeout)

    def until_ticks(self, count: int, timeout: float = 10.0) -> list[PriceTick]:
        """Read updates until ``count`` committed ticks were published in all."""
        return self.wait_for_ticks(count, timeout)


class LiveHarness(testing.Harness):
    """A harness whose runs are :class:`LiveRun` probes."""

    probe_class = LiveRun


@pytest.fixture
def run_engine(live_harness: LiveHarness) -> Callable[..., testing.RunProbe]:
    """Start engines (:class:`LiveRun`); each is shut down (if still running) after the test."""
    return live_harness.start


#: the types of the ``sim`` and ``run_engine`` fixtures, as the tests use them
SimFactory = Callable[..., Simulator]
RunFactory = Callable[..., LiveRun]


def start_live(
    sim: SimFactory,
    run_engine: RunFactory,
    url: str,
    sim_config: dict[str, Any] | None = None,
    **config: Any,
) -> tuple[Simulator, LiveRun]:
    """A simulator (``sim_config``) and an engine on ``url`` against it (:func:`live_config`
    with ``config``), both started."""
    simulator = sim(**(sim_config or {}))
    cfg = live_config(url, rest_url=simulator.rest_url, stream_url=simulator.stream_url, **config)
    return simulator, run_engine(cfg)


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


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The logged events named ``name``."""
    return [e for e in logs if e["event"] == name]


def feed_received(logs: list[dict[str, Any]]) -> int:
    """The ticks the WS feeds received, less the duplicates, over all their ``ws_feed_stopped``."""
    return sum(e["received"] - e["duplicates"] for e in events(logs, "ws_feed_stopped"))


def transitions(logs: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """The ``(trigger, src, dst)`` of every logged status transition."""
    return testing.logged_transitions(logs)


def assert_follows_graph(logs: list[dict[str, Any]]) -> None:
    """Some transition was logged, each is an edge of the graph and starts where the previous
    one ended, and none was rejected."""
    assert testing.assert_transitions_follow_graph(logs), "no status_transition logged"
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
