"""The HTTP layer under :class:`~qx_actors.lnmarkets.rest.RestClient`, replaceable in tests.

A transport sends one GET and returns the whole answer (:class:`HttpResponse`); the client
adds pacing, the timeout, retries and the error mapping on top. :class:`AiohttpTransport`
talks to real sockets; :class:`MockTransport` (httpx's ``MockTransport`` is the model) hands
each :class:`HttpRequest` to a function that returns the answer, so unit tests need no socket.

What a transport raises when there is no answer: ``OSError`` or ``aiohttp.ClientError``
(connection refused, reset), ``TimeoutError``, or :class:`IncompleteBody` when the headers
came and the body did not arrive whole.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import yarl

__all__ = [
    "AiohttpTransport",
    "Handler",
    "HttpRequest",
    "HttpResponse",
    "IncompleteBody",
    "MockTransport",
    "Transport",
]


@dataclass(frozen=True)
class HttpRequest:
    """One GET: the full ``url`` (without query) and its query ``params``."""

    url: str
    params: Mapping[str, str]

    @property
    def path(self) -> str:
        """The URL's path, e.g. ``/v3/futures/candles``."""
        return yarl.URL(self.url).path


@dataclass(frozen=True)
class HttpResponse:
    """A whole answer: status, reason phrase, headers and body."""

    status: int
    body: bytes = b""
    reason: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)


class IncompleteBody(Exception):
    """The headers came (``status``) but the body did not arrive whole (``detail`` says how)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Transport(Protocol):
    """What :class:`~qx_actors.lnmarkets.rest.RestClient` needs from the HTTP layer."""

    async def get(self, request: HttpRequest) -> HttpResponse:
        """Send ``request``; the whole answer, whatever its status."""
        ...

    async def close(self) -> None:
        """Release connections (idempotent); a later :meth:`get` may open new ones."""
        ...


class AiohttpTransport:
    """Real sockets through one ``aiohttp.ClientSession`` per event loop."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            # A session belongs to its loop; one left on a finished loop can only be dropped.
            self._session_loop = loop
            # The client bounds each request with asyncio.timeout (which covers the body too).
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None),
                headers={"Accept": "application/json"},
                raise_for_status=False,
            )
        return self._session

    async def get(self, request: HttpRequest) -> HttpResponse:
        """Send ``request`` over the session of the running loop."""
        status = 0
        try:
            async with self._get_session().get(request.url, params=request.params) as resp:
                status = resp.status
                return HttpResponse(status, await resp.read(), resp.reason or "", resp.headers)
        except aiohttp.ClientPayloadError as exc:
            raise IncompleteBody(status, _payload_error_text(exc)) from exc

    async def close(self) -> None:
        """Close the session (idempotent)."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


#: A fake exchange: the answer to one request (or an exception to raise), sync or async.
Handler = Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]]


class MockTransport:
    """A transport that asks ``handler`` instead of a server; ``requests`` lists what was
    sent, in order."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.requests: list[HttpRequest] = []

    async def get(self, request: HttpRequest) -> HttpResponse:
        """The handler's answer to ``request``."""
        self.requests.append(request)
        answer = self._handler(request)
        if inspect.isawaitable(answer):
            return await answer
        return answer

    async def close(self) -> None:
        """Nothing to release."""


def _payload_error_text(exc: aiohttp.ClientPayloadError) -> str:
    """What went wrong with a body, e.g. ``Not enough data to satisfy content length header
    (received 23 of 46 bytes).`` (aiohttp's parser message when it has one)."""
    cause = exc.__cause__
    message = getattr(cause, "message", None)
    if isinstance(message, str) and message:
        return message
    return str(exc) or type(exc).__name__
