"""The Stream API server: JSON-RPC methods, tick notifications and every stream fault."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sim_helpers import SimFactory
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from qx_actors.domain.timeutil import from_epoch_ms
from qx_actors.domain.values import PriceTick
from qx_actors.simulator import LAST_PRICE_TOPIC, Simulator

TIMEOUT = 5.0


def run(coro: Awaitable[Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, 20)

    return asyncio.run(bounded())


async def call(ws: ClientConnection, method: str, params: Any = None, rid: str = "1") -> Any:
    """Send one JSON-RPC request and return the decoded answer."""
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params is not None:
        msg["params"] = params
    await ws.send(json.dumps(msg))
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def subscribe(ws: ClientConnection) -> None:
    answer = await call(ws, "subscribe", {"topics": [LAST_PRICE_TOPIC]})
    assert answer["result"] == {"subscribed": [LAST_PRICE_TOPIC]}


async def recv_frames(ws: ClientConnection, n: int) -> list[str]:
    return [str(await asyncio.wait_for(ws.recv(), TIMEOUT)) for _ in range(n)]


def as_tick(frame: str) -> PriceTick:
    msg = json.loads(frame)
    assert msg["method"] == "subscription"
    assert msg["params"]["topic"] == LAST_PRICE_TOPIC
    data = msg["params"]["data"]
    return PriceTick(time=from_epoch_ms(data["time"]), last_price=data["lastPrice"])


async def with_subscribed(
    sim: Simulator, body: Callable[[ClientConnection], Awaitable[Any]]
) -> Any:
    async with connect(sim.stream_url) as ws:
        await subscribe(ws)
        return await body(ws)


def test_rpc_methods(sim: Simulator) -> None:
    """subscribe, unsubscribe, ping, time and hello answer as JSON-RPC results."""

    async def body() -> None:
        async with connect(sim.stream_url) as ws:
            assert await call(ws, "ping", rid="a1") == {
                "jsonrpc": "2.0",
                "id": "a1",
                "result": "pong",
            }
            assert sim.market.now_ms() == (await call(ws, "time"))["result"]
            assert LAST_PRICE_TOPIC in (await call(ws, "hello"))["result"]["topics"]
            await subscribe(ws)
            assert sim.stream.subscriber_count() == 1
            answer = await call(ws, "unsubscribe", {"topics": [LAST_PRICE_TOPIC]})
            assert answer["result"] == {"unsubscribed": [LAST_PRICE_TOPIC]}
            assert sim.push_ticks(1) == []

    run(body())


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ('{"jsonrpc":"2.0","id":"1","method":"dance"}', -32601),
        ('{"jsonrpc":"2.0","id":"1","method":"subscribe","params":{"topics":["x/y"]}}', -32602),
        ('{"jsonrpc":"2.0","id":"1","method":"subscribe","params":{}}', -32602),
        ("{not json", -32700),
        ('{"id":"1","method":"ping"}', -32600),
    ],
)
def test_rpc_errors(sim: Simulator, raw: str, code: int) -> None:
    """Unknown methods/topics and bad frames answer JSON-RPC errors."""

    async def body() -> Any:
        async with connect(sim.stream_url) as ws:
            await ws.send(raw)
            return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))

    answer = run(body())
    assert code == answer["error"]["code"]
    assert isinstance(answer["error"]["message"], str)


def test_pushed_ticks_are_received_and_recorded(sim: Simulator) -> None:
    """Pushed ticks arrive in order with increasing times and are recorded as sent."""

    async def body(ws: ClientConnection) -> list[PriceTick]:
        pushed = await asyncio.to_thread(sim.push_ticks, 5)
        assert len(pushed) == 5
        return [as_tick(f) for f in await recv_frames(ws, 5)]

    received = run(with_subscribed(sim, body))
    assert sim.sent_ticks() == received
    times = [t.time for t in received]
    assert sorted(set(times)) == times
    for tick in received:
        assert sim.market.price_at(tick.time) == tick.last_price


def test_ticks_flow_at_the_tick_rate(make_sim: SimFactory) -> None:
    """With a tick rate, subscribers receive ticks without being asked."""
    sim = make_sim(tick_rate_per_s=200.0)

    async def body(ws: ClientConnection) -> list[PriceTick]:
        return [as_tick(f) for f in await recv_frames(ws, 20)]

    received = run(with_subscribed(sim, body))
    assert received == sim.sent_ticks()[:20]


def _dropped(sim: Simulator, *, close_frame: bool) -> ConnectionClosed:
    """How a subscribed client's connection ends after ``drop_stream(close_frame=..)``."""

    async def body(ws: ClientConnection) -> ConnectionClosed:
        sim.faults.drop_stream(close_frame=close_frame)
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        return info.value

    closed: ConnectionClosed = run(with_subscribed(sim, body))
    return closed


def test_drop_with_close_frame(sim: Simulator) -> None:
    """drop_stream(close_frame=True) closes with code 1011."""
    closed = _dropped(sim, close_frame=True)
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1011


def test_drop_without_close_frame(sim: Simulator) -> None:
    """drop_stream(close_frame=False) aborts the TCP connection: no close frame."""
    assert _dropped(sim, close_frame=False).rcvd is None


def test_drop_after_ticks(sim: Simulator) -> None:
    """drop_stream_after(n) drops right after the n-th tick."""
    sim.faults.drop_stream_after(3, close_frame=True)

    async def body(ws: ClientConnection) -> list[str]:
        await asyncio.to_thread(sim.push_ticks, 10)
        frames = []
        with pytest.raises(ConnectionClosed):
            while True:
                frames.append(str(await asyncio.wait_for(ws.recv(), TIMEOUT)))
        return frames

    assert len(run(with_subscribed(sim, body))) == 3
    assert len(sim.sent_ticks()) == 3


def test_ticks_offered_to_a_closing_connection_are_published_not_sent(sim: Simulator) -> None:
    """Ticks pushed right after a drop began reach no one: they count as published, not as
    sent (what a recorder could not receive is not held against it), and what the subscriber
    received is exactly what counts as sent."""

    async def body(ws: ClientConnection) -> list[PriceTick]:
        before = await asyncio.to_thread(sim.push_ticks, 2)
        sim.faults.drop_stream(close_frame=True)  # the close starts before the push below
        await asyncio.to_thread(sim.push_ticks, 4)
        received = []
        with pytest.raises(ConnectionClosed):
            while True:
                received.append(as_tick(str(await asyncio.wait_for(ws.recv(), TIMEOUT))))
        assert received[:2] == before
        return received

    received = run(with_subscribed(sim, body))
    assert len(sim.published_ticks()) == 6
    assert sim.sent_ticks() == received
    assert len(received) == 2


def test_silent_stream_keeps_the_socket_open(sim: Simulator) -> None:
    """A silent stream sends no ticks but still answers requests."""
    sim.faults.set_stream_silent(True)

    async def body(ws: ClientConnection) -> None:
        assert await asyncio.to_thread(sim.push_ticks, 3) == []
        assert (await call(ws, "ping"))["result"] == "pong"
        sim.faults.set_stream_silent(False)
        assert len(await asyncio.to_thread(sim.push_ticks, 1)) == 1
        as_tick((await recv_frames(ws, 1))[0])

    run(with_subscribed(sim, body))


def test_ignored_pings(sim: Simulator) -> None:
    """With pings ignored, a ping gets no answer while other requests do."""
    sim.faults.set_ignore_pings(True)

    async def body(ws: ClientConnection) -> Any:
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": "p", "method": "ping"}))
        return await call(ws, "time", rid="t")

    assert run(with_subscribed(sim, body))["id"] == "t"


def test_duplicate_ticks(sim: Simulator) -> None:
    """duplicate_ticks_next sends a tick twice."""
    sim.faults.duplicate_ticks_next(1)

    async def body(ws: ClientConnection) -> list[PriceTick]:
        await asyncio.to_thread(sim.push_ticks, 2)
        return [as_tick(f) for f in await recv_frames(ws, 3)]

    received = run(with_subscribed(sim, body))
    assert received[0] == received[1] != received[2]
    assert received == sim.sent_ticks()


def test_out_of_order_ticks(sim: Simulator) -> None:
    """out_of_order_ticks_next sends a newer tick before an older one."""
    sim.faults.out_of_order_ticks_next(1)

    async def body(ws: ClientConnection) -> list[PriceTick]:
        await asyncio.to_thread(sim.push_ticks, 3)
        return [as_tick(f) for f in await recv_frames(ws, 3)]

    times = [t.time for t in run(with_subscribed(sim, body))]
    assert times != sorted(times)
    assert len(set(times)) == 3


def test_malformed_frames(sim: Simulator) -> None:
    """malformed_frames_next sends an invalid frame before a tick."""
    sim.faults.malformed_frames_next(1)

    async def body(ws: ClientConnection) -> list[str]:
        await asyncio.to_thread(sim.push_ticks, 1)
        return await recv_frames(ws, 2)

    bad, good = run(with_subscribed(sim, body))
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad)
    assert [as_tick(good)] == sim.sent_ticks()


def test_refuse_connections(sim: Simulator) -> None:
    """refuse_connections(n) rejects the next n handshakes with 503; then it connects."""
    sim.faults.refuse_connections(n=2)

    async def body() -> list[int]:
        statuses = []
        for _ in range(2):
            with pytest.raises(InvalidStatus) as info:
                async with connect(sim.stream_url):
                    pass
            statuses.append(info.value.response.status_code)
        async with connect(sim.stream_url) as ws:
            assert (await call(ws, "ping"))["result"] == "pong"
        return statuses

    assert run(body()) == [503, 503]


def test_refuse_connections_for_a_while(sim: Simulator) -> None:
    """refuse_connections(seconds=...) rejects every handshake until cleared."""
    sim.faults.refuse_connections(seconds=60)

    async def body() -> None:
        with pytest.raises(InvalidStatus):
            async with connect(sim.stream_url):
                pass
        sim.faults.clear()
        async with connect(sim.stream_url) as ws:
            await subscribe(ws)

    run(body())


def test_wrong_path_is_404(sim: Simulator) -> None:
    """Only /v1 is a Stream endpoint."""

    async def body() -> int:
        with pytest.raises(InvalidStatus) as info:
            async with connect(sim.stream_url.replace("/v1", "/v2")):
                pass
        return info.value.response.status_code

    assert run(body()) == 404


def test_stop_closes_stream_connections(make_sim: SimFactory) -> None:
    """Stopping the simulator ends open Stream connections."""
    sim = make_sim()

    async def body(ws: ClientConnection) -> None:
        await asyncio.to_thread(sim.stop)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), TIMEOUT)

    run(with_subscribed(sim, body))


def test_wait_for_subscribers(sim: Simulator) -> None:
    """wait_for_subscribers returns once a client subscribed."""

    async def body(ws: ClientConnection) -> bool:
        return await asyncio.to_thread(sim.wait_for_subscribers, 1, TIMEOUT)

    assert run(with_subscribed(sim, body))
