"""Running the simulator: :class:`SimulatorConfig`, :class:`Simulator`, the blocking CLI entry."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from qx_actors._loop_thread import LoopThread
from qx_actors.domain.values import PriceTick

from .faults import Faults
from .market import Clock, Market
from .recorded import RecordedMarket
from .rest import RateLimiter, RequestRecord, RestApp
from .stream import STREAM_PATH, StreamServer

__all__ = ["Simulator", "SimulatorConfig", "run_simulator_blocking"]

_T = TypeVar("_T")


@dataclass(frozen=True)
class SimulatorConfig:
    """How a :class:`Simulator` serves; every field has a default."""

    #: Seed of the synthetic market: same seed, same candles, ticks and settlements.
    seed: int = 42
    #: Interface to listen on.
    host: str = "127.0.0.1"
    #: REST port; 0 = a free port (see :attr:`Simulator.rest_url`).
    port: int = 0
    #: Stream API port; 0 = a free port (see :attr:`Simulator.stream_url`).
    stream_port: int = 0
    #: REST requests per second before 429; ``None`` or 0 = no rate limit.
    rate_limit_per_s: float | None = 1.0
    #: Requests allowed at once by the rate limiter's bucket.
    rate_limit_burst: int = 1
    #: Last-price ticks per second to subscribers; 0 = only :meth:`Simulator.push_ticks`.
    tick_rate_per_s: float = 5.0
    #: Publish (and record) ticks whether or not anyone is subscribed, as the real exchange
    #: does; by default ticks are published only while someone listens.
    publish_without_subscribers: bool = False
    #: Candles: whether ``from`` is inclusive (undocumented on the real exchange).
    from_inclusive: bool = True
    #: Candles: whether ``to`` is inclusive (undocumented on the real exchange).
    to_inclusive: bool = True
    #: Permanent exchange downtime: ``(start, end)`` pairs, minutes in ``[start, end)``.
    downtime: tuple[tuple[datetime, datetime], ...] = ()
    #: Days of minute paths kept in the market's LRU cache.
    cache_days: int = 96


class Simulator:
    """A local LN Markets: REST v3 and Stream API over one deterministic market.

    ``start()`` serves from a background :class:`LoopThread` and returns once listening;
    ``stop()`` closes everything (idempotent). Also a context manager. With ``source`` (a
    :class:`RecordedMarket`) the REST API answers from a database, and the Stream API sends
    what :meth:`send_ticks` is given (``qx-actors serve``).
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        clock: Clock | None = None,
        *,
        source: RecordedMarket | None = None,
    ) -> None:
        self.config = config or SimulatorConfig()
        cfg = self.config
        self.market = Market(cfg.seed, clock=clock, cache_days=cfg.cache_days)
        for start, end in cfg.downtime:
            self.market.add_downtime(start, end)
        self.faults = Faults()
        self.rate_limiter = RateLimiter(cfg.rate_limit_per_s, cfg.rate_limit_burst)
        self.rest = RestApp(
            self.market,
            self.faults,
            self.rate_limiter,
            from_inclusive=cfg.from_inclusive,
            to_inclusive=cfg.to_inclusive,
            source=source,
        )
        self.stream = StreamServer(
            self.market,
            self.faults,
            cfg.tick_rate_per_s,
            publish_without_subscribers=cfg.publish_without_subscribers,
        )
        self._thread: LoopThread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.stream_port = 0

    # -- URLs ------------------------------------------------------------------------------

    @property
    def rest_url(self) -> str:
        """Base URL of the REST API, e.g. ``http://127.0.0.1:PORT``."""
        self._require_running()
        return f"http://{self.config.host}:{self.port}"

    @property
    def stream_url(self) -> str:
        """URL of the Stream API, e.g. ``ws://127.0.0.1:PORT/v1``."""
        self._require_running()
        return f"ws://{self.config.host}:{self.stream_port}{STREAM_PATH}"

    @property
    def is_running(self) -> bool:
        """Whether the servers are listening."""
        return self._runner is not None

    def _require_running(self) -> None:
        if self._runner is None:
            raise RuntimeError("the simulator is not running (call start())")

    # -- lifecycle -------------------------------------------------------------------------

    async def _start_async(self) -> None:
        self._loop = asyncio.get_running_loop()
        runner = web.AppRunner(
            self.rest.make_app(), handle_signals=False, access_log=None, shutdown_timeout=0.2
        )
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        await site.start()
        self.port = int(runner.addresses[0][1])
        self.stream_port = await self.stream.start(self.config.host, self.config.stream_port)
        self._runner = runner

    async def _stop_async(self) -> None:
        runner, self._runner = self._runner, None
        self.faults.release_hung()
        await self.stream.stop()
        if runner is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runner.cleanup(), 3.0)

    def start(self) -> Simulator:
        """Serve in a background thread; returns once both servers listen."""
        if self._thread is not None:
            raise RuntimeError("the simulator was already started")
        self._thread = LoopThread("qx-simulator").start()
        self._thread.run_or_stop(self._start_async(), timeout=10.0)
        return self

    def stop(self) -> None:
        """Close every connection and stop serving (idempotent, prompt)."""
        thread = self._thread
        if thread is None or not thread.is_alive:
            return
        with contextlib.suppress(Exception):
            thread.run(self._stop_async(), timeout=5.0)
        thread.stop()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def serve_forever(self) -> None:
        """Serve on the running event loop until cancelled (for the CLI)."""
        await self._start_async()
        try:
            await asyncio.Event().wait()
        finally:
            await self._stop_async()

    def _run(self, coro: Coroutine[Any, Any, _T], timeout: float) -> _T:
        loop = self._loop
        if loop is None or self._runner is None:
            coro.close()
            raise RuntimeError("the simulator is not running (call start())")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    # -- controls and observations (thread-safe) -------------------------------------------

    def requests(self) -> list[RequestRecord]:
        """Every REST request answered so far, in order."""
        return self.rest.requests()

    def request_count(self, endpoint: str | None = None, status: int | None = None) -> int:
        """How many REST requests were answered (for ``endpoint`` / with ``status``)."""
        return sum(
            1
            for r in self.rest.requests()
            if (endpoint is None or r.endpoint == endpoint)
            and (status is None or r.status == status)
        )

    def wait_in_flight(self, n: int = 1, timeout: float = 5.0) -> bool:
        """Block until at least ``n`` REST requests are being answered (e.g. delayed)."""
        return self.rest.wait_in_flight(n, timeout)

    def set_rate_limit(self, per_s: float | None, burst: int = 1) -> None:
        """Change the REST rate limit (``None``/0 = off)."""
        self.rate_limiter.configure(per_s, burst)

    def set_tick_rate(self, per_s: float) -> None:
        """Change the tick rate (0 = only :meth:`push_ticks`)."""
        self.stream.set_tick_rate(per_s)

    def set_publish_without_subscribers(self, publish: bool) -> None:
        """Publish ticks whether or not anyone listens (see :class:`SimulatorConfig`)."""
        self.stream.set_publish_without_subscribers(publish)

    def push_ticks(self, n: int = 1, timeout: float = 10.0) -> list[PriceTick]:
        """Broadcast ``n`` ticks to subscribers now; returns those sent (faults applied)."""
        return self._run(self.stream.emit(n), timeout)

    def send_ticks(self, ticks: list[PriceTick], timeout: float = 10.0) -> None:
        """Broadcast these ticks as they are (times and prices) to subscribers now."""
        self._run(self.stream.send_ticks(ticks), timeout)

    def sent_ticks(self) -> list[PriceTick]:
        """Every tick the Stream server sent (see :meth:`StreamServer.sent_ticks`)."""
        return self.stream.sent_ticks()

    def published_ticks(self) -> list[PriceTick]:
        """Every tick the Stream server published, received or not (see
        :meth:`StreamServer.published_ticks`)."""
        return self.stream.published_ticks()

    def wait_for_subscribers(self, n: int = 1, timeout: float = 5.0) -> bool:
        """Block until ``n`` Stream connections are subscribed to last price."""
        return self.stream.wait_for_subscribers(n, timeout)


def run_simulator_blocking(
    config: SimulatorConfig | None = None,
    on_ready: Callable[[Simulator], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (or KeyboardInterrupt), then stop cleanly.

    ``on_ready(simulator)`` is called once listening (e.g. to print the URLs).
    """

    async def main() -> None:
        simulator = Simulator(config)
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stopped.set)
        await simulator._start_async()
        try:
            if on_ready is not None:
                on_ready(simulator)
            await stopped.wait()
        finally:
            await simulator._stop_async()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
