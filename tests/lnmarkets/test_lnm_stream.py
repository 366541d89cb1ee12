"""StreamClient against scripted websockets servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from lnm_scripted import (
    T0,
    StreamServer,
    confirm_subscribe,
    notification,
    recv_json,
    serve_stream,
)
from structlog.testing import capture_logs
from websockets.asyncio.server import ServerConnection

from qx_actors.domain.timeutil import to_epoch_ms
from qx_actors.domain.values import PriceTick
from qx_actors.errors import StreamError, StreamHeartbeatTimeout, StreamProtocolError
from qx_actors.lnmarkets import LAST_PRICE_TOPIC, StreamClient

Arun = Callable[..., Any]
Script = Callable[[ServerConnection, StreamServer], Any]


class Sink:
    """Collects tick batches; ``wait(n)`` returns once ``n`` ticks arrived."""

    def __init__(self) -> None:
        self.batches: list[list[PriceTick]] = []
        self.connected = asyncio.Event()
        self._changed = asyncio.Event()

    @property
    def ticks(self) -> list[PriceTick]:
        """All ticks, in order."""
        return [t for batch in self.batches for t in batch]

    def on_ticks(self, ticks: list[PriceTick]) -> None:
        """The on_ticks callback."""
        self.batches.append(ticks)
        self._changed.set()

    def on_connected(self) -> None:
        """The on_connected callback."""
        self.connected.set()

    async def wait(self, count: int) -> None:
        """Wait until ``count`` ticks arrived."""
        while len(self.ticks) < count:
            self._changed.clear()
            await self._changed.wait()


def stream_client(url: str, **kw: Any) -> StreamClient:
    """A client with test-sized timings."""
    kw.setdefault("heartbeat_interval_s", 5.0)
    kw.setdefault("disconnect_timeout_s", 1.0)
    kw.setdefault("open_timeout_s", 2.0)
    kw.setdefault("close_timeout_s", 0.2)
    return StreamClient(url, **kw)


async def hold(ws: ServerConnection) -> None:
    """Keep the connection open until the client goes away."""
    await ws.wait_closed()


async def run_until_ticks(script: Script, count: int, **kw: Any) -> tuple[Sink, StreamClient]:
    """Serve ``script``, run a client until ``count`` ticks arrived, then cancel it."""
    sink = Sink()
    async with serve_stream(script) as server:
        client = stream_client(server.url, **kw)
        task = asyncio.create_task(client.run(sink.on_ticks, on_connected=sink.on_connected))
        waiter = asyncio.create_task(sink.wait(count))
        done, _ = await asyncio.wait({task, waiter}, timeout=5, return_when="FIRST_COMPLETED")
        assert waiter in done, f"client ended early: {task}"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 1)
    return sink, client


async def run_until_error(script: Script, **kw: Any) -> tuple[BaseException, Sink, float]:
    """Serve ``script``, run a client until it raises; the error and the time taken."""
    sink = Sink()
    async with serve_stream(script) as server:
        client = stream_client(server.url, **kw)
        started = time.monotonic()
        with pytest.raises(BaseException) as info:
            await asyncio.wait_for(client.run(sink.on_ticks, on_connected=sink.on_connected), 5)
        return info.value, sink, time.monotonic() - started


def test_subscribe_and_ticks_both_time_forms(arun: Arun) -> None:
    """Subscribe is a JSON-RPC request with a hex id; ms and RFC 3339 times both decode."""
    requests: list[dict[str, Any]] = []

    async def script(ws: ServerConnection, state: StreamServer) -> None:
        requests.append(await confirm_subscribe(ws, state))
        await ws.send(notification(to_epoch_ms(T0) + 1500, 90000.5))
        await ws.send(notification("2026-01-01T00:00:02.250Z", 90001))
        await hold(ws)

    with capture_logs() as logs:
        sink, _ = arun(run_until_ticks(script, 2))
    request = requests[0]
    assert (request["jsonrpc"], request["method"]) == ("2.0", "subscribe")
    assert re.fullmatch(r"[0-9a-f]{16}", request["id"])
    assert request["params"] == {"topics": [LAST_PRICE_TOPIC]}
    expected = [
        PriceTick(T0.replace(second=1, microsecond=500_000), 90000.5),
        PriceTick(T0.replace(second=2, microsecond=250_000), 90001.0),
    ]
    assert expected == sink.ticks
    assert sink.connected.is_set()
    assert 1 == len(requests)
    assert ["stream_subscribed"] == [e["event"] for e in logs if e["event"].startswith("stream_")]


def test_buffered_frames_delivered_in_batches(arun: Arun) -> None:
    """Frames already received are delivered together, in order, none lost."""
    count = 200

    async def script(ws: ServerConnection, state: StreamServer) -> None:
        await confirm_subscribe(ws, state)
        for i in range(count):
            await ws.send(notification(to_epoch_ms(T0) + i, 90000 + i))
        await hold(ws)

    sink, _ = arun(run_until_ticks(script, count))
    assert [90000.0 + i for i in range(count)] == [t.last_price for t in sink.ticks]
    assert len(sink.batches) < count // 4


def test_ticks_before_confirmation_kept(arun: Arun) -> None:
    """Ticks sent before the subscribe answer are delivered after on_connected."""
    order: list[str] = []

    async def script(ws: ServerConnection, state: StreamServer) -> None:
        request = await recv_json(ws, state)
        await ws.send(notification(to_epoch_ms(T0), 1))
        answer = {
            "jsonrpc": "2.0",
            "id": request["id"],
            "result": {"subscribed": [LAST_PRICE_TOPIC]},
        }
        await ws.send(json.dumps(answer))
        await hold(ws)

    async def main() -> Sink:
        sink = Sink()
        async with serve_stream(script) as server:
            client = stream_client(server.url)

            def on_ticks(ticks: list[PriceTick]) -> None:
                order.append("ticks")
                sink.on_ticks(ticks)

            def on_connected() -> None:
                order.append("connected")

            task = asyncio.create_task(client.run(on_ticks, on_connected=on_connected))
            await asyncio.wait_for(sink.wait(1), 5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        return sink

    sink = arun(main())
    assert order == ["connected", "ticks"]
    assert [PriceTick(T0, 1.0)] == sink.ticks


def test_subscription_mismatch(arun: Arun) -> None:
    """A confirmation naming other topics is StreamProtocolError."""

    async def script(ws: ServerConnection, state: StreamServer) -> None:
        request = await recv_json(ws, state)
        result = {"subscribed": ["futures/inverse/btc_usd/index"]}
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}))
        await hold(ws)

    error, sink, _ = arun(run_until_error(script))
    assert isinstance(error, StreamProtocolError)
    assert "futures/inverse/btc_usd/index" in str(error)
    assert not sink.connected.is_set()


def test_subscribe_rpc_error(arun: Arun) -> None:
    """A JSON-RPC error answer to subscribe is StreamProtocolError naming code and message."""

    async def script(ws: ServerConnection, state: StreamServer) -> None:
        request = await recv_json(ws, state)
        error = {"code": -32602, "message": "Invalid topic"}
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": request["id"], "error": error}))
        await hold(ws)

    error, _, _ = arun(run_until_error(script))
    assert isinstance(error, StreamProtocolError)
    assert "-32602" in str(error)
    assert "Invalid topic" in str(error)


def test_no_subscribe_answer(arun: Arun) -> None:
    """No answer to subscribe within open_timeout_s is StreamProtocolError."""

    async def script(ws: ServerConnection, state: StreamServer) -> None:
        await hold(ws)

    error, _, elapsed = arun(run_until_error(script, open_timeout_s=0.3))
    assert isinstance(error, StreamProtocolError)
    assert elapsed >= 0.3


def test_malformed_frames_skipped(arun: Arun) -> None:
    """Malformed frames, bad data and unknown methods are logged and skipped."""
    bad = [
        "this is not json",
        notification("yesterday", 90000),
        notification(to_epoch_ms(T0), "ninety thousand"),
        notification(to_epoch_ms(T0), 1, topic="futures/inverse/btc_usd/index"),
        json.dumps({"jsonrpc": "2.0", "method": "surprise", "params": {}}),
        json.dumps({"jsonrpc": "2.0", "id": "nobody", "result": "pong"}),
        json.dumps({"jsonrpc": "2.0", "method": "subscription", "params": 3}),
        notification(1e30, 90000),
    ]

    async def script(ws: ServerConnection, state: StreamServer) -> None:
        await confirm_subscribe(ws, state)
        for frame in bad:
            await ws.send(frame)
        await ws.send(notification(to_epoch_ms(T0), 90000))
        await hold(ws)

    with capture_logs() as logs:
        sink, _ = arun(run_until_ticks(script, 1))
    assert [PriceTick(T0, 90000.0)] == sink.ticks
    rejected = [e for e in logs if e["event"] == "stream_frame_rejected"]
    assert len(bad) == len(rejected)
    reasons = " | ".join(e["reason"] for e in rejected)
    for needle in ("not a JSON-RPC frame", "$.time", "$.lastPrice", "unsubscribed topic"):
        assert needle in reasons
    assert "unknown method 'surprise'" in reasons


def test_heartbeat_ping_answered_keeps_alive(arun: Arun) -> None:
    """Silence triggers a JSON-RPC ping; a pong keeps the feed alive."""
    pings: list[dict[str, Any]] = []

    async def script(ws: ServerConnection, state: StreamServer) -> None:
        await confirm_subscribe(ws, state)
        while len(pings) < 3:
            request = await recv_json(ws, state)
            assert request["method"] == "ping"
            pings.append(request)
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": "pong"}))
        await ws.send(notification(to_epoch_ms(T0), 90000))
        await hold(ws)

    with capture_logs() as logs:
        sink, _ = arun(
            run_until_ticks(script, 1, heartbeat_interval_s=0.1, disconnect_timeout_s=0.5)
        )
    assert [PriceTick(T0, 90000.0)] == sink.ticks
    assert 3 == sum(e["event"] == "stream_ping_sent" for e in logs)
    assert not [e for e in logs if e["event"] == "stream_frame_rejected"]
    assert len({p["id"] for p in pings}) == 3


def test_heartbeat_no_pong(arun: Arun) -> None:
    """No frame within disconnect_timeout_s after a ping is StreamHeartbeatTimeout."""

    async def script(ws: ServerConnection, state: StreamServer) -> None:
        await confirm_subscribe(ws, state)
        await hold(ws)

    error, sink, elapsed = arun(
        run_until_error(script, heartbeat_interval_s=0.2, disconnect_timeout_s=0.3)
    )
    assert isinstance(error, StreamHeartbeatTimeout)
    assert sink.connected.is_set()
    assert elapsed >= 0.5


def test_server_closes(arun: Arun) -> None:
    """A close frame from the server is StreamError naming the code; ticks before it kept."""

    async def script(ws: ServerConnection, state: StreamServer) -> None:
        await confirm_subscribe(ws, state)
        await ws.send(notification(to_epoch_ms(T0), 90000))
        await ws.close(1001, "going away")

    error, sink, _ = arun(run_until_error(script))
    assert type(error) is StreamError
    assert "1001" in str(error)
    assert "going away" in str(error)
    assert [PriceTick(T0, 90000.0)] == sink.ticks


def test_connection_lost_without_close(arun: Arun) -> None:
    """A connection dropped without a close frame is StreamError."""

    async def script(ws: ServerConnection, state: StreamServer) -> None:
        await confirm_subscribe(ws, state)
        ws.transport.abort()

    error, _, _ = arun(run_until_error(script))
    assert type(error) is StreamError
    assert "without a close frame" in str(error)


def test_connection_refused(arun: Arun, unused_port: int) -> None:
    """Nothing listening is StreamError."""

    async def main() -> BaseException:
        client = stream_client(f"ws://127.0.0.1:{unused_port}/v1")
        with pytest.raises(StreamError) as info:
            await client.run(lambda ticks: None)
        return info.value

    error = arun(main())
    assert "cannot connect" in str(error)


def test_invalid_url() -> None:
    """A URL that is not ws(s) is a ValueError at construction."""
    with pytest.raises(ValueError, match="Stream API URL"):
        StreamClient("http://example/v1")
