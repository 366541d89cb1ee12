"""StreamClient over a fake connection: subscribe, ticks and a lost connection, no socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from lnm_scripted import T0, notification
from websockets.exceptions import ConnectionClosedError

from qx_actors.domain.timeutil import to_epoch_ms
from qx_actors.domain.values import PriceTick
from qx_actors.errors import StreamError
from qx_actors.lnmarkets import StreamClient, StreamConnection

Arun = Callable[..., Any]


class _Transport:
    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


class FakeConnection:
    """Confirms the subscribe, then hands out ``frames``; then the connection is lost."""

    def __init__(self, frames: list[str]) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed = False
        self._inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._frames = frames
        self._transport = _Transport()

    @property
    def transport(self) -> _Transport:
        """The fake socket."""
        return self._transport

    async def send(self, message: str) -> None:
        """Record a request; a subscribe is confirmed and followed by the frames."""
        request = json.loads(message)
        self.sent.append(request)
        if request["method"] == "subscribe":
            result = {"subscribed": request["params"]["topics"]}
            answer = {"jsonrpc": "2.0", "id": request["id"], "result": result}
            self._inbox.put_nowait(json.dumps(answer))
            for frame in self._frames:
                self._inbox.put_nowait(frame)
            self._inbox.put_nowait(None)

    async def recv(self) -> str | bytes:
        """The next frame; the end of the script is a connection lost without a close frame."""
        frame = await self._inbox.get()
        if frame is None:
            raise ConnectionClosedError(None, None)
        return frame

    async def close(self) -> None:
        """Note the close."""
        self.closed = True


def test_ticks_then_lost_connection_over_a_fake(arun: Arun) -> None:
    """The fake's ticks arrive in order; its end is a StreamError; the connection is closed."""
    frames = [notification(to_epoch_ms(T0) + i * 1000, 90000 + i) for i in range(3)]
    connection = FakeConnection(frames)
    urls: list[str] = []

    async def connect(url: str) -> StreamConnection:
        urls.append(url)
        return connection

    ticks: list[PriceTick] = []
    connected = []

    async def main() -> StreamError:
        client = StreamClient("ws://exchange.invalid/v1", connect=connect)
        with pytest.raises(StreamError) as info:
            await client.run(ticks.extend, on_connected=lambda: connected.append(True))
        return info.value

    error = arun(main())
    assert ["ws://exchange.invalid/v1"] == urls
    assert [90000.0, 90001.0, 90002.0] == [tick.last_price for tick in ticks]
    assert [True] == connected
    assert "without a close frame" in str(error)
    assert ["subscribe"] == [request["method"] for request in connection.sent]
    assert connection.closed


def test_connect_failure_is_mapped(arun: Arun) -> None:
    """An OSError of the connect function is StreamError 'cannot connect'."""

    async def connect(url: str) -> StreamConnection:
        raise ConnectionRefusedError("refused")

    async def main() -> StreamError:
        client = StreamClient("ws://exchange.invalid/v1", connect=connect)
        with pytest.raises(StreamError) as info:
            await client.run(lambda ticks: None)
        return info.value

    assert "cannot connect: refused" in str(arun(main()))
