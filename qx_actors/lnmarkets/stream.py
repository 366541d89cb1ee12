"""Client of the LN Markets Stream API (JSON-RPC 2.0 over WebSocket): last-price ticks.

One :meth:`StreamClient.run` is one connection: connect, subscribe, then deliver ticks until
the connection fails, which is always an exception (the WS feed actor reconnects). Errors of
websockets are mapped into :mod:`qx_actors.errors` here. The connection is opened by a
``connect`` function (websockets by default) that tests may replace with a fake
:class:`StreamConnection`.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Literal, NoReturn, Protocol

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.uri import parse_uri

from qx_actors.domain.values import PriceTick
from qx_actors.errors import StreamError, StreamHeartbeatTimeout, StreamProtocolError
from qx_actors.lnmarkets import wire
from qx_actors.logs import get_logger

__all__ = [
    "LAST_PRICE_TOPIC",
    "StreamClient",
    "StreamConnection",
    "StreamConnector",
]

_log = get_logger()

LAST_PRICE_TOPIC = wire.LAST_PRICE_TOPIC
_FRAME_EXCERPT = 200


class _TickParams(msgspec.Struct, frozen=True, gc=False):
    topic: str
    data: wire.LastPriceData


class _TickFrame(msgspec.Struct, frozen=True, gc=False):
    """The usual frame, a last-price notification, decoded in one pass (other members and
    other frames: the general path of :meth:`_Session._handle`)."""

    method: Literal["subscription"]
    params: _TickParams


_tick_frame_decoder = msgspec.json.Decoder(_TickFrame)
#: Whole epoch milliseconds below this (2^42, the year 2109) convert exactly through a float
#: of seconds (its rounding error stays far below half a microsecond).
_FAST_MS_BELOW = float(2**42)


class _Abortable(Protocol):
    def abort(self) -> None: ...


class StreamConnection(Protocol):
    """What the client needs of an open WebSocket (websockets' ``ClientConnection`` is one)."""

    async def send(self, message: str) -> None:
        """Send one text frame."""
        ...

    async def recv(self) -> str | bytes:
        """The next frame; ``ConnectionClosed`` once the connection is gone."""
        ...

    async def close(self) -> None:
        """Close the connection politely."""
        ...

    @property
    def transport(self) -> _Abortable:
        """The socket, aborted when a polite close is not possible."""
        ...


#: Opens a connection to a URL; its errors are mapped like websockets' own.
StreamConnector = Callable[[str], Awaitable[StreamConnection]]


class StreamClient:
    """Stream API client; :meth:`run` delivers ticks until the connection fails."""

    def __init__(
        self,
        url: str,
        *,
        heartbeat_interval_s: float = 30.0,
        disconnect_timeout_s: float = 6.0,
        topics: Sequence[str] = (LAST_PRICE_TOPIC,),
        open_timeout_s: float = 10.0,
        close_timeout_s: float = 1.0,
        max_batch: int = 500,
        connect: StreamConnector | None = None,
    ) -> None:
        """``connect``: opens the connection (websockets with the timeouts above when not
        given; a fake in unit tests)."""
        try:
            parse_uri(url)
        except InvalidURI as exc:
            raise ValueError(f"Stream API URL must be ws(s)://host[:port]/path: {exc}") from exc
        if heartbeat_interval_s <= 0 or disconnect_timeout_s <= 0 or open_timeout_s <= 0:
            raise ValueError("heartbeat, disconnect and open timeouts must be > 0")
        if not topics:
            raise ValueError("at least one topic is required")
        self.url = url
        self.heartbeat_interval_s = heartbeat_interval_s
        self.disconnect_timeout_s = disconnect_timeout_s
        self.topics = tuple(topics)
        self.open_timeout_s = open_timeout_s
        self.close_timeout_s = close_timeout_s
        self.max_batch = max_batch
        self._open: StreamConnector = connect if connect is not None else self._open_websocket

    async def run(
        self,
        on_ticks: Callable[[list[PriceTick]], None],
        *,
        on_connected: Callable[[], None] | None = None,
    ) -> NoReturn:
        """Connect, subscribe, deliver ticks in batches; returns only by raising.

        ``on_connected`` is called once the subscription is confirmed. ``on_ticks`` gets every
        tick decoded from the frames already received, in order, as soon as the socket has no
        more buffered frames (or ``max_batch`` ticks are pending). Failures are
        :class:`StreamError` subclasses (recoverable); cancellation closes the socket.
        """
        ws = await self._connect()
        try:
            await _Session(self, ws, on_ticks).run(on_connected)
        except ConnectionClosed as exc:
            raise StreamError(f"stream {self.url}: {_describe_close(exc)}") from exc
        finally:
            await self._close(ws)

    async def _open_websocket(self, url: str) -> ClientConnection:
        return await connect(
            url,
            open_timeout=self.open_timeout_s,
            close_timeout=self.close_timeout_s,
            # The Stream API heartbeat is a JSON-RPC ping (see _Session), not WS pings.
            ping_interval=None,
            max_queue=64,  # frames buffered before TCP back-pressure
            compression=None,
        )

    async def _connect(self) -> StreamConnection:
        try:
            return await self._open(self.url)
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise StreamError(f"stream {self.url}: handshake refused with HTTP {status}") from exc
        except TimeoutError as exc:
            raise StreamError(
                f"stream {self.url}: no handshake within {self.open_timeout_s:g} s"
            ) from exc
        except (OSError, InvalidHandshake) as exc:
            raise StreamError(f"stream {self.url}: cannot connect: {exc}") from exc

    async def _close(self, ws: StreamConnection) -> None:
        try:
            await ws.close()
        except asyncio.CancelledError:
            ws.transport.abort()
            raise
        except Exception:  # the connection is going away anyway
            ws.transport.abort()


class _Session:
    """One connection's protocol state: subscription, heartbeat, frame dispatch."""

    def __init__(
        self,
        client: StreamClient,
        ws: StreamConnection,
        on_ticks: Callable[[list[PriceTick]], None],
    ) -> None:
        self.client = client
        self.ws = ws
        self.on_ticks = on_ticks
        self.pending: list[PriceTick] = []
        self.subscribe_id = secrets.token_hex(8)
        self.subscribed = False
        self.ping_ids: set[str] = set()
        #: Subscribed topics whose notifications are ticks (the fast path of ``_handle``).
        self.tick_topics = frozenset(t for t in client.topics if t.endswith("/lastPrice"))

    async def run(self, on_connected: Callable[[], None] | None) -> NoReturn:
        client = self.client
        request = wire.RpcRequest(
            "subscribe", self.subscribe_id, wire.SubscribeParams(list(client.topics))
        )
        try:
            await self.ws.send(wire.encode_request(request))
            try:
                async with asyncio.timeout(client.open_timeout_s):
                    while not self.subscribed:
                        self._handle(await self.ws.recv())
            except TimeoutError:
                raise StreamProtocolError(
                    f"stream {client.url}: no answer to subscribe within "
                    f"{client.open_timeout_s:g} s"
                ) from None
            _log.info("stream_subscribed", url=client.url, topics=list(client.topics))
            if on_connected is not None:
                on_connected()
            while True:
                self._flush()
                self._handle(await self._recv_alive())
                await self._drain_buffered()
        finally:
            # Ticks already decoded are delivered even when the connection just failed.
            self._flush()

    async def _recv_alive(self) -> str | bytes:
        """The next frame; pings after ``heartbeat_interval_s`` of silence."""
        client = self.client
        try:
            async with asyncio.timeout(client.heartbeat_interval_s):
                return await self.ws.recv()
        except TimeoutError:
            pass
        ping_id = secrets.token_hex(8)
        self.ping_ids.add(ping_id)
        _log.debug("stream_ping_sent", url=client.url, silence_s=client.heartbeat_interval_s)
        await self.ws.send(wire.encode_request(wire.RpcRequest("ping", ping_id)))
        try:
            async with asyncio.timeout(client.disconnect_timeout_s):
                return await self.ws.recv()
        except TimeoutError:
            raise StreamHeartbeatTimeout(
                f"stream {client.url}: no frame within {client.disconnect_timeout_s:g} s "
                f"after a ping ({client.heartbeat_interval_s:g} s of silence)"
            ) from None

    async def _drain_buffered(self) -> None:
        """Handle the frames already received, without waiting for new ones."""
        try:
            # A zero timeout for the whole drain: recv() returns at once (without suspending)
            # while a frame is buffered, and the first recv() that has to wait is cancelled
            # (safely, per websockets) at the next loop turn. One timer per drain, not per frame.
            async with asyncio.timeout(0):
                while len(self.pending) < self.client.max_batch:
                    self._handle(await self.ws.recv())
        except TimeoutError:
            return

    def _flush(self) -> None:
        if self.pending:
            ticks, self.pending = self.pending, []
            self.on_ticks(ticks)

    def _reject(self, reason: str, frame: str | bytes) -> None:
        _log.warning(
            "stream_frame_rejected",
            url=self.client.url,
            reason=reason,
            frame=frame[:_FRAME_EXCERPT] if isinstance(frame, str) else repr(frame[:80]),
        )

    def _handle(self, frame: str | bytes) -> None:
        """Dispatch one frame; only a failed subscription raises."""
        try:
            fast = _tick_frame_decoder.decode(frame)
        except msgspec.DecodeError:
            pass  # not a well-formed tick: the general path tells what it is
        else:
            if fast.params.topic in self.tick_topics:
                data = fast.params.data
                ms = data.time
                if type(ms) is float and 0 <= ms < _FAST_MS_BELOW and ms.is_integer():
                    # Whole epoch ms: the same datetime as from_epoch_ms, about twice as fast.
                    self.pending.append(
                        PriceTick(datetime.fromtimestamp(ms / 1000, UTC), data.last_price)
                    )
                    return
                try:
                    self.pending.append(wire.to_tick(data))
                    return
                except (OverflowError, ValueError):
                    pass  # rejected below, with the reason
        try:
            msg = wire.rpc_frame_decoder.decode(frame)
        except msgspec.DecodeError as exc:
            self._reject(f"not a JSON-RPC frame: {exc}", frame)
            return
        if msg.method is not None:
            self._handle_notification(msg, frame)
        elif msg.id is not None and msg.id == self.subscribe_id:
            self._handle_subscribe_answer(msg, frame)
        elif isinstance(msg.id, str) and msg.id in self.ping_ids:
            self.ping_ids.discard(msg.id)
            if msg.error is not None:
                _log.warning(
                    "stream_rpc_error", code=msg.error.code, message=msg.error.message, id=msg.id
                )
        elif msg.error is not None and msg.id is None and not self.subscribed:
            # An error without id before the confirmation can only be about the subscribe.
            self._handle_subscribe_answer(msg, frame)
        elif msg.error is not None:
            self._reject(f"JSON-RPC error {msg.error.code}: {msg.error.message}", frame)
        else:
            self._reject(f"answer to unknown request id {msg.id!r}", frame)

    def _handle_subscribe_answer(self, msg: wire.RpcFrame, frame: str | bytes) -> None:
        url = self.client.url
        if msg.error is not None:
            raise StreamProtocolError(
                f"stream {url}: subscribe failed: JSON-RPC error {msg.error.code}: "
                f"{msg.error.message}"
            )
        try:
            result = wire.subscribe_result_decoder.decode(msg.result)
        except msgspec.DecodeError as exc:
            raise StreamProtocolError(
                f"stream {url}: unexpected subscribe answer ({exc}): {_excerpt(frame)}"
            ) from exc
        requested = set(self.client.topics)
        if set(result.subscribed) != requested:
            raise StreamProtocolError(
                f"stream {url}: subscribed to {sorted(result.subscribed)}, "
                f"requested {sorted(requested)}"
            )
        self.subscribed = True

    def _handle_notification(self, msg: wire.RpcFrame, frame: str | bytes) -> None:
        if msg.method != "subscription":
            if msg.method not in ("hello", "time", "pong"):
                self._reject(f"unknown method {msg.method!r}", frame)
            return
        try:
            params = wire.notification_params_decoder.decode(msg.params)
        except msgspec.DecodeError as exc:
            self._reject(f"bad subscription params: {exc}", frame)
            return
        if params.topic not in self.client.topics:
            self._reject(f"notification for unsubscribed topic {params.topic!r}", frame)
            return
        if not params.topic.endswith("/lastPrice"):
            self._reject(f"unsupported topic {params.topic!r}", frame)
            return
        try:
            data = wire.last_price_decoder.decode(params.data)
            tick = wire.to_tick(data)
        except msgspec.DecodeError as exc:
            self._reject(f"bad lastPrice data: {wire.decode_error(exc, 'data')}", frame)
            return
        except (OverflowError, ValueError) as exc:
            self._reject(f"bad lastPrice time: {exc}", frame)
            return
        self.pending.append(tick)


def _excerpt(frame: str | bytes) -> str:
    text = frame if isinstance(frame, str) else frame.decode("utf-8", errors="replace")
    return text[:_FRAME_EXCERPT]


def _describe_close(exc: ConnectionClosed) -> str:
    if exc.rcvd is None:
        return "connection lost without a close frame"
    reason = f" ({exc.rcvd.reason})" if exc.rcvd.reason else ""
    return f"connection closed by the server with code {exc.rcvd.code}{reason}"
