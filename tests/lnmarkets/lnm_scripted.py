"""Scripted LN Markets servers on 127.0.0.1 (aiohttp REST, websockets Stream API) for the
lnmarkets tests: real sockets, recorded-looking payloads."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve

from qx_actors.domain.timeutil import MINUTE, format_rfc3339_ms, parse_rfc3339

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Seen:
    """One request the scripted REST server received."""

    path: str
    query: dict[str, str]
    at: float  # time.monotonic()


@dataclass
class RestServer:
    """A running scripted REST server."""

    url: str
    seen: list[Seen] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def serve_rest(handler: Handler) -> AsyncIterator[RestServer]:
    """Serve ``handler`` for every path on an ephemeral port; records each request."""
    server = RestServer(url="")

    async def record(request: web.Request) -> web.StreamResponse:
        server.seen.append(Seen(request.path, dict(request.query), time.monotonic()))
        server.arrived.set()
        return await handler(request)

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", record)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.url = f"http://{host}:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


@dataclass
class Market:
    """Candles (or settlements) every ``step`` from ``first``, answered with configurable
    bound semantics, like the exchange might."""

    first: datetime
    count: int
    step: timedelta = MINUTE
    from_inclusive: bool = True
    to_inclusive: bool = True
    cursor_inclusive: bool = False
    cursor_on_short_page: bool = False

    def times(self) -> list[datetime]:
        """All times, newest first."""
        return [self.first + self.step * i for i in reversed(range(self.count))]

    def select(self, query: dict[str, str]) -> tuple[list[datetime], str | None]:
        """The times of one page and its nextCursor."""
        limit = int(query.get("limit", "1000"))
        lo = parse_rfc3339(query["from"]) if "from" in query else None
        hi = parse_rfc3339(query["to"]) if "to" in query else None
        cursor = parse_rfc3339(query["cursor"]) if "cursor" in query else None
        out = []
        for t in self.times():
            if lo is not None and (t < lo or (t == lo and not self.from_inclusive)):
                continue
            if hi is not None and (t > hi or (t == hi and not self.to_inclusive)):
                continue
            if cursor is not None and (t > cursor or (t == cursor and not self.cursor_inclusive)):
                continue
            out.append(t)
            if len(out) == limit:
                break
        more = out and (len(out) == limit or self.cursor_on_short_page)
        return out, format_rfc3339_ms(out[-1]) if more else None

    def candle_page(self, query: dict[str, str]) -> dict[str, Any]:
        """A candle page answering ``query``."""
        times, cursor = self.select(query)
        data = [
            {
                "time": format_rfc3339_ms(t),
                "open": 90000.5,
                "high": 90010,
                "low": 89990,
                "close": 90001,
                "volume": 1.5,
            }
            for t in times
        ]
        return {"data": data, "nextCursor": cursor}

    def settlement_page(self, query: dict[str, str]) -> dict[str, Any]:
        """A funding-settlement page answering ``query``."""
        times, cursor = self.select(query)
        data = [
            {
                "id": f"00000000-0000-4000-8000-{int(t.timestamp()):012d}",
                "time": format_rfc3339_ms(t),
                "fixingPrice": 90000,
                "fundingRate": 0.0001,
            }
            for t in times
        ]
        return {"data": data, "nextCursor": cursor}


def json_response(body: Any, status: int = 200, **headers: str) -> web.Response:
    """A JSON response."""
    return web.Response(
        body=json.dumps(body), status=status, content_type="application/json", headers=headers
    )


@dataclass
class StreamServer:
    """A running scripted Stream API server."""

    url: str
    received: list[dict[str, Any]] = field(default_factory=list)


StreamScript = Callable[[ServerConnection, StreamServer], Awaitable[None]]


@asynccontextmanager
async def serve_stream(script: StreamScript) -> AsyncIterator[StreamServer]:
    """Run ``script`` for each WebSocket connection on an ephemeral port."""
    state = StreamServer(url="")

    async def handler(ws: ServerConnection) -> None:
        await script(ws, state)

    async with serve(handler, "127.0.0.1", 0, ping_interval=None, close_timeout=0.2) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        state.url = f"ws://127.0.0.1:{port}/v1"
        yield state


async def recv_json(ws: ServerConnection, state: StreamServer) -> dict[str, Any]:
    """The next request from the client, recorded."""
    msg: dict[str, Any] = json.loads(await ws.recv())
    state.received.append(msg)
    return msg


async def confirm_subscribe(ws: ServerConnection, state: StreamServer) -> dict[str, Any]:
    """Read the subscribe request and confirm exactly the requested topics."""
    request = await recv_json(ws, state)
    topics = request["params"]["topics"]
    await ws.send(
        json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": {"subscribed": topics}})
    )
    return request


def notification(time_value: Any, price: Any, topic: str | None = None) -> str:
    """A last-price ``subscription`` notification frame."""
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "method": "subscription",
            "params": {
                "topic": topic or "futures/inverse/btc_usd/lastPrice",
                "data": {"time": time_value, "lastPrice": price},
            },
        }
    )


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
