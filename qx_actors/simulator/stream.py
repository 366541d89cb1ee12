"""The simulator's Stream API server (websockets, JSON-RPC 2.0, path ``/v1``).

Methods: ``subscribe`` / ``unsubscribe`` (``params.topics``), ``ping`` (result ``"pong"``),
``time`` (result: server time in epoch ms), ``hello`` (result: server info). Unknown methods
(-32601), unknown topics (-32602), invalid JSON (-32700) and invalid requests (-32600) are
JSON-RPC errors. A request without ``id`` is a notification and gets no answer.

Ticks: one producer broadcasts ``futures/inverse/btc_usd/lastPrice`` notifications to every
subscribed connection at ``tick_rate_per_s`` (0 = only on :meth:`StreamServer.emit`). By
default it publishes only while someone is subscribed; with ``publish_without_subscribers``
it publishes (and records) ticks whether or not anyone listens, as the real exchange does, so
that a test can count the ticks published while a client was away. Each tick
gets a unique, strictly increasing epoch-ms time: ``max(previous + 1, market now)``; at rates
above 1000/s the tick times therefore run ahead of the wall clock. The price is the market's
tick path at that time. Every tick sent is recorded (once per broadcast, in send order,
duplicates included) for :meth:`StreamServer.sent_ticks`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

import msgspec
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from qx_actors.domain.timeutil import from_epoch_ms, to_epoch_ms
from qx_actors.domain.values import PriceTick

from .faults import Faults
from .market import Market

__all__ = [
    "LAST_PRICE_TOPIC",
    "MALFORMED_FRAME",
    "STREAM_PATH",
    "TOPICS",
    "StreamServer",
]

LAST_PRICE_TOPIC = "futures/inverse/btc_usd/lastPrice"
TOPICS = frozenset({LAST_PRICE_TOPIC})
STREAM_PATH = "/v1"
MALFORMED_FRAME = '{"jsonrpc":"2.0","method":"subscription","params":{"topic":'
_MAX_BATCH = 2_000

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


async def _send_to_each(connections: list[Any], frames: list[str]) -> int:
    """Send ``frames`` in order to each connection; one that closed meanwhile is skipped.

    Returns how many of the leading frames at least one connection took: a frame offered to
    a connection that is closing (a dropped stream) reached nobody, and the accounting of what
    was *sent* must not count it.
    """
    taken = 0
    for conn in connections:
        sent = 0
        try:
            for frame in frames:
                await conn.send(frame)
                sent += 1
        except ConnectionClosed:
            pass
        taken = max(taken, sent)
    return taken


def _frame(ms: int, price: float) -> str:
    return (
        '{"jsonrpc":"2.0","method":"subscription","params":{"topic":"'
        + LAST_PRICE_TOPIC
        + f'","data":{{"time":{ms},"lastPrice":{price!r}}}}}}}'
    )


class StreamServer:
    """Serves the Stream API for one :class:`Market`; start/stop it on an event loop."""

    def __init__(
        self,
        market: Market,
        faults: Faults,
        tick_rate_per_s: float = 5.0,
        *,
        publish_without_subscribers: bool = False,
    ) -> None:
        self.market = market
        self.faults = faults
        self._rate = max(0.0, tick_rate_per_s)
        self._always = publish_without_subscribers
        self._conns: dict[ServerConnection, set[str]] = {}
        self._cond = threading.Condition()
        # every tick published (to subscribers or, with publish_without_subscribers, to nobody)
        # and those at least one subscriber's connection took; the same tuples in both
        self._published: list[tuple[int, float]] = []
        self._sent: list[tuple[int, float]] = []
        self._last_ms = 0
        self._held: tuple[str, tuple[int, float]] | None = None
        self._drop_countdown: tuple[int, bool] | None = None
        self._emit_lock: asyncio.Lock | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._producer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self.port = 0

    # -- lifecycle (on the loop) -----------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0 = a free port); returns the port."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._emit_lock = asyncio.Lock()
        self._server = await serve(
            self._handle,
            host,
            port,
            process_request=self._process_request,
            ping_interval=None,
            compression=None,
            max_queue=None,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        self.faults.add_drop_hook(self._drop_hook)
        self._producer = asyncio.create_task(self._produce(), name="qx-sim-ticks")
        return self.port

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        self.faults.remove_drop_hook(self._drop_hook)
        if self._producer is not None:
            self._producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._producer
            self._producer = None
        if self._server is not None:
            for conn in list(self._conns):
                conn.transport.abort()
            self._server.close(close_connections=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    # -- thread-safe controls --------------------------------------------------------------

    def set_tick_rate(self, per_s: float) -> None:
        """Ticks per second (0 = only explicit :meth:`emit`)."""
        self._rate = max(0.0, per_s)
        self._poke()

    def set_publish_without_subscribers(self, publish: bool) -> None:
        """Publish ticks whether or not anyone listens (the real exchange's way), or only while
        someone is subscribed."""
        self._always = publish
        self._poke()

    @property
    def tick_rate(self) -> float:
        """Ticks per second."""
        return self._rate

    def sent_ticks(self) -> list[PriceTick]:
        """Every tick sent so far: taken by at least one subscriber's connection (once per
        broadcast, in send order, duplicates included). A tick offered to a connection that
        was already closing is published but not sent."""
        with self._cond:
            sent = list(self._sent)
        return [PriceTick(time=from_epoch_ms(ms), last_price=price) for ms, price in sent]

    def published_ticks(self) -> list[PriceTick]:
        """Every tick published so far, whether or not anyone received it (in order,
        duplicates included): what the exchange put out."""
        with self._cond:
            published = list(self._published)
        return [PriceTick(time=from_epoch_ms(ms), last_price=price) for ms, price in published]

    def subscriber_count(self) -> int:
        """Connections subscribed to the last-price topic."""
        with self._cond:
            return sum(1 for topics in self._conns.values() if LAST_PRICE_TOPIC in topics)

    def connection_count(self) -> int:
        """Open connections."""
        with self._cond:
            return len(self._conns)

    def wait_for_subscribers(self, n: int = 1, timeout: float = 5.0) -> bool:
        """Block until at least ``n`` connections are subscribed; ``False`` on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._subscribers_locked() >= n, timeout)

    def wait_for_connections(self, n: int, timeout: float = 5.0) -> bool:
        """Block until exactly ``n`` connections are open; ``False`` on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._conns) == n, timeout)

    def _subscribers_locked(self) -> int:
        return sum(1 for topics in self._conns.values() if LAST_PRICE_TOPIC in topics)

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    def _drop_hook(self, close_frame: bool) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._drop_all, close_frame)

    def _drop_all(self, close_frame: bool) -> None:
        for conn in list(self._conns):
            if close_frame:
                task = asyncio.ensure_future(conn.close(code=1011, reason="simulated drop"))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                conn.transport.abort()

    # -- connections -----------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0] != STREAM_PATH:
            return connection.respond(404, "Not Found\n")
        if self.faults.take_refusal():
            return connection.respond(503, "Service Unavailable\n")
        return None

    def _set_topics(self, conn: ServerConnection, topics: set[str]) -> None:
        with self._cond:
            self._conns[conn] = topics
            self._cond.notify_all()

    async def _handle(self, conn: ServerConnection) -> None:
        self._set_topics(conn, set())
        try:
            async for raw in conn:
                reply = self._dispatch(conn, raw)
                if reply is not None:
                    await conn.send(reply)
        except ConnectionClosed:
            pass
        finally:
            with self._cond:
                self._conns.pop(conn, None)
                self._cond.notify_all()

    def _dispatch(self, conn: ServerConnection, raw: str | bytes) -> str | None:
        try:
            msg = _decoder.decode(raw)
        except msgspec.DecodeError:
            return self._error(None, -32700, "Parse error")
        if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
            return self._error(None, -32600, "Invalid Request")
        has_id = "id" in msg
        rid = msg.get("id")
        method = msg.get("method")
        if not isinstance(method, str):
            return self._error(rid, -32600, "Invalid Request: method must be a string")
        result: Any
        if method in ("subscribe", "unsubscribe"):
            params = msg.get("params")
            topics = params.get("topics") if isinstance(params, dict) else None
            if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
                return self._error(rid, -32602, "Invalid params: params.topics must be a list")
            unknown = [t for t in topics if t not in TOPICS]
            if unknown:
                return self._error(rid, -32602, f"Invalid params: unknown topic {unknown[0]!r}")
            current = set(self._conns.get(conn, set()))
            if method == "subscribe":
                current.update(topics)
                result = {"subscribed": topics}
            else:
                current.difference_update(topics)
                result = {"unsubscribed": topics}
            self._set_topics(conn, current)
            self._poke()
        elif method == "ping":
            if self.faults.ignore_pings:
                return None
            result = "pong"
        elif method == "time":
            result = self.market.now_ms()
        elif method == "hello":
            result = {
                "name": "qx_actors LN Markets simulator",
                "version": "v1",
                "topics": sorted(TOPICS),
            }
        else:
            return self._error(rid, -32601, f"Method not found: {method}")
        if not has_id:
            return None
        return _encoder.encode({"jsonrpc": "2.0", "id": rid, "result": result}).decode()

    @staticmethod
    def _error(rid: Any, code: int, message: str) -> str:
        return _encoder.encode(
            {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}
        ).decode()

    # -- ticks -----------------------------------------------------------------------------

    async def _wait_for_wake(self, timeout: float) -> None:
        """Until poked or ``timeout``. (``asyncio.timeout``, not ``wait_for``: on 3.11 a
        ``wait_for`` whose wait ends as the task is cancelled swallows the cancellation, and
        :meth:`stop` then waited for the producer until its caller gave up.)"""
        assert self._wake is not None
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    async def _produce(self) -> None:
        assert self._wake is not None
        base = time.monotonic()
        count = 0
        while True:
            rate = self._rate
            if rate <= 0 or (not self._always and self.subscriber_count() == 0):
                await self._wait_for_wake(0.25)
                base, count = time.monotonic(), 0
                continue
            due = int((time.monotonic() - base) * rate) - count
            if due > 0:
                n = min(due, _MAX_BATCH)
                await self.emit(n)
                count += n
                if due > 50 * _MAX_BATCH:  # hopelessly behind: don't build an endless backlog
                    base, count = time.monotonic(), 0
                await asyncio.sleep(0)
                continue
            wait = (count + 1) / rate - (time.monotonic() - base)
            await self._wait_for_wake(min(max(wait, 0.001), 0.25))
            if self._rate != rate:
                base, count = time.monotonic(), 0

    async def send_ticks(self, ticks: list[PriceTick]) -> None:
        """Broadcast these ticks (their own times and prices) to the subscribers, recorded as
        sent (``qx-actors serve``: recorded ticks, live or replayed)."""
        records = [(to_epoch_ms(t.time), t.last_price) for t in ticks]
        frames = [_frame(ms, price) for ms, price in records]
        subs = [c for c, topics in list(self._conns.items()) if LAST_PRICE_TOPIC in topics]
        with self._cond:
            self._published.extend(records)
            self._sent.extend(records)
        taken = await _send_to_each(subs, frames)
        if taken < len(records):
            self._unrecord_sent(records[taken:])

    def _unrecord_sent(self, lost: list[tuple[int, float]]) -> None:
        """Take back ticks recorded as sent that no connection took (each the latest record of
        that very tuple: they were recorded last, by the emit that could not send them)."""
        with self._cond:
            sent = self._sent
            for tick in reversed(lost):
                for i in range(len(sent) - 1, -1, -1):
                    if sent[i] is tick:
                        del sent[i]
                        break

    async def emit(self, n: int) -> list[PriceTick]:
        """Broadcast ``n`` ticks now (faults applied); returns the ticks actually sent."""
        assert self._emit_lock is not None
        async with self._emit_lock:
            return await self._emit(n)

    async def _emit(self, n: int) -> list[PriceTick]:
        faults = self.faults
        if faults.stream_silent:
            return []
        subs = [c for c, topics in list(self._conns.items()) if LAST_PRICE_TOPIC in topics]
        if not subs and not self._always:
            return []
        if self._drop_countdown is None:
            armed = faults.take("drop_after")
            if armed is not None:
                self._drop_countdown = (int(armed[0]), bool(armed[1]))
        frames: list[str] = []
        # the tick each frame carries (None: a malformed frame), to account for what was taken
        carried: list[tuple[int, float] | None] = []
        now_ms = self.market.now_ms()
        last = self._last_ms
        price_at = self.market.price_at_ms
        drop: bool | None = None
        for _ in range(n):
            last = last + 1 if last >= now_ms else now_ms
            tick = (last, price_at(last))
            frame = _frame(*tick)
            if faults.take("bad_frame") is not None:
                frames.append(MALFORMED_FRAME)
                carried.append(None)
            if self._held is None and faults.take("ooo_tick") is not None:
                self._held = (frame, tick)
                continue
            frames.append(frame)
            carried.append(tick)
            if faults.take("dup_tick") is not None:
                frames.append(frame)
                carried.append(tick)
            if self._held is not None:
                frames.append(self._held[0])
                carried.append(self._held[1])
                self._held = None
            if self._drop_countdown is not None:
                remaining, close_frame = self._drop_countdown
                remaining -= 1
                self._drop_countdown = (remaining, close_frame)
                if remaining <= 0:
                    drop = close_frame
                    self._drop_countdown = None
                    break
        self._last_ms = last
        ticks = [t for t in carried if t is not None]
        with self._cond:
            # recorded before the send, so a tick can never be stored before it counts as sent
            self._published.extend(ticks)
            self._sent.extend(ticks)
        taken = await _send_to_each(subs, frames)
        lost = [t for t in carried[taken:] if t is not None]
        if lost:
            self._unrecord_sent(lost)
            ticks = [t for t in carried[:taken] if t is not None]
        if drop is not None:
            self._drop_all(drop)
        return [PriceTick(time=from_epoch_ms(ms), last_price=p) for ms, p in ticks]
