"""``qx-actors serve``: the database served as a local LN Markets (REST v3 + Stream API).

The simulator's servers answer REST from the database (:class:`RecordedMarket`, read-only:
safe beside a running sync) and send ticks on the Stream API's ``lastPrice`` topic:

* live (default): the ticks an engine commits to the database, as they appear (polled every
  :data:`POLL_S`; an engine beside this one keeps the database current);
* replayed (``--replay FROM..TO --speed N``): a replay run (``SyncMode.replay``) of the window,
  its ticks sent as it delivers them; REST then serves up to the replayed instant.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from qx_actors.config import QxConfig, parse_instant, parse_listen
from qx_actors.domain.lookback import ModeKind, ReplayWindow, SyncMode
from qx_actors.domain.timeutil import utc_now
from qx_actors.errors import ConfigError, QxError
from qx_actors.simulator import RecordedMarket, Simulator, SimulatorConfig
from qx_actors.sync_engine import SyncEngine
from qx_actors.updates import PriceTickUpdate, ReceiverClosed

__all__ = ["POLL_S", "RecordedServer", "parse_replay_window", "serve_listen"]

#: How often live serving looks for newly committed ticks.
POLL_S = 0.2
_MICRO = timedelta(microseconds=1)


def parse_replay_window(text: str, speed: str | None) -> ReplayWindow:
    """``FROM..TO`` and ``--speed`` as a :class:`ReplayWindow` (``ConfigError`` naming the
    flag)."""
    start, sep, end = text.partition("..")
    if not sep:
        raise ConfigError(
            "--replay", f"expected FROM..TO such as 2026-01-01..2026-01-02, got {text!r}"
        )
    try:
        bounds = parse_instant(start), parse_instant(end)
    except ValueError as exc:
        raise ConfigError("--replay", str(exc)) from None
    try:
        factor = ReplayWindow.parse_speed(speed)
    except ValueError as exc:
        raise ConfigError("--speed", str(exc)) from None
    try:
        return ReplayWindow(bounds[0], bounds[1], factor)
    except ValueError as exc:
        raise ConfigError("--replay", str(exc)) from None


class RecordedServer:
    """The REST and Stream servers over a database, live or replayed; ``start()``/``stop()``."""

    def __init__(
        self,
        config: QxConfig,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        replay: ReplayWindow | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._config = config
        self._replay = replay
        self._engine: SyncEngine | None = None
        source_clock = clock
        if replay is not None:
            mode = SyncMode(ModeKind.REPLAY, replay_window=replay)
            self._engine = SyncEngine(config, mode, clock=clock)
            source_clock = self._engine.now
        self.source = RecordedMarket(config.database, clock=source_clock)
        stream_port = port + 1 if port else 0
        sim_config = SimulatorConfig(
            host=host, port=port, stream_port=stream_port, rate_limit_per_s=None, tick_rate_per_s=0
        )
        self.simulator = Simulator(sim_config, clock=source_clock, source=self.source)
        self._stop = threading.Event()
        self._forwarder: threading.Thread | None = None
        #: Ticks sent on the Stream API so far.
        self.ticks_sent = 0

    @property
    def rest_url(self) -> str:
        """``http://host:port``."""
        return self.simulator.rest_url

    @property
    def stream_url(self) -> str:
        """``ws://host:port/v1``."""
        return self.simulator.stream_url

    def start(self) -> RecordedServer:
        """Listen, then forward ticks (live) or start the replay."""
        self.simulator.start()
        target = self._forward_live if self._engine is None else self._forward_replay
        self._forwarder = threading.Thread(target=target, name="qx-serve-ticks", daemon=True)
        self._forwarder.start()
        return self

    def stop(self) -> None:
        """Stop forwarding and serving (idempotent)."""
        self._stop.set()
        engine = self._engine
        if engine is not None:
            status = engine.status_snapshot()
            if status.is_running:
                with contextlib.suppress(QxError):  # already ending by itself
                    engine.shutdown()
        if self._forwarder is not None:
            self._forwarder.join(5)
        self.simulator.stop()
        self.source.close()

    def wait_replayed(self, timeout: float | None = None) -> bool:
        """Whether the replay (if any) has delivered its window within ``timeout``."""
        if self._forwarder is None:
            return False
        self._forwarder.join(timeout)
        return not self._forwarder.is_alive()

    def _send(self, ticks: list[object]) -> None:
        if ticks:
            self.simulator.send_ticks(ticks)  # type: ignore[arg-type]
            self.ticks_sent += len(ticks)

    def _forward_live(self) -> None:
        database = self.source.database()
        newest = database.ticks(utc_now() - timedelta(days=1), utc_now() + timedelta(days=1))
        last = newest[-1].time if newest else utc_now()
        while not self._stop.wait(POLL_S):
            fresh = database.ticks(last + _MICRO, utc_now() + timedelta(days=1))
            if fresh:
                last = fresh[-1].time
                self._send(list(fresh))

    def _forward_replay(self) -> None:
        engine = self._engine
        assert engine is not None
        receiver = engine.update_receiver()
        controller = engine.start()
        batch: list[object] = []
        while not self._stop.is_set():
            try:
                update = receiver.get(timeout=0.1)
            except TimeoutError:
                self._send(batch)
                batch = []
                continue
            except ReceiverClosed:
                break
            if isinstance(update, PriceTickUpdate):
                batch.append(update.tick)
                if len(batch) >= 100:
                    self._send(batch)
                    batch = []
        self._send(batch)
        controller.until_stopped(timeout=self._config.sync.shutdown_timeout_s * 2)


def serve_listen(text: str | None) -> tuple[str, int]:
    """``--listen HOST:PORT`` (default ``127.0.0.1:0``: free ports)."""
    if text is None:
        return "127.0.0.1", 0
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise ConfigError("--listen", str(exc)) from None
