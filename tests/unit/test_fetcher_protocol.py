"""The REST fetcher's side of the protocol, without a socket (the client over a MockTransport).

One request gets exactly one Reply, from the fetcher, and only once every page it handed to
the DB writer was acknowledged: on success, when the exchange fails, and when a write fails.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pykka
import pytest

from qx_actors.actors import RunThreads
from qx_actors.actors._rest_fetcher import WRITE_BATCH_CANDLES, RestFetcherActor
from qx_actors.actors.messages import (
    CandleRangeStored,
    Envelope,
    FetchCandleRange,
    PageStored,
    Reply,
    StoreCandlePage,
)
from qx_actors.domain.history import DownloadKind, DownloadRange
from qx_actors.domain.timeutil import MINUTE, format_rfc3339_ms, format_utc, parse_rfc3339
from qx_actors.errors import (
    DatabaseUnavailable,
    ExchangeClientError,
    InvalidMarketData,
    is_recoverable,
)
from qx_actors.lnmarkets import HttpRequest, HttpResponse, MockTransport, RestClient
from tests.lnmarkets.lnm_scripted import T0, Market

WAIT_S = 30.0


class Inbox(pykka.ThreadingActor):
    """Puts every message it is told into a queue the test reads."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: queue.Queue[Any] = queue.Queue()

    def on_receive(self, message: Any) -> None:
        self.messages.put(message)


class Writer(pykka.ThreadingActor):
    """A DB writer stand-in: records the pages, acknowledges each (failing the ones asked)."""

    def __init__(self, fail_page: int | None = None) -> None:
        super().__init__()
        self.stored: list[datetime] = []
        self.pages = 0
        self._fail_page = fail_page
        self.lock = threading.Lock()

    def on_receive(self, message: Any) -> None:
        if isinstance(message, StoreCandlePage):
            self.pages += 1
            error = None
            if self.pages == self._fail_page:
                error = DatabaseUnavailable("the disk is full")
            else:
                with self.lock:
                    self.stored.extend(c.time for c in message.candles)
            # as the real writer: a fetcher that already answered (and stopped) may be gone
            with contextlib.suppress(pykka.ActorDeadError):
                message.ack_to.tell(PageStored(message.request_id, error))


def answer(market: Market) -> Callable[[HttpRequest], HttpResponse]:
    def handle(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, json.dumps(market.candle_page(dict(request.params))).encode())

    return handle


@pytest.fixture
def actors() -> Iterator[Callable[..., Any]]:
    """Starts actors; every one is stopped after the test."""
    started: list[pykka.ActorRef[Any]] = []

    def start(cls: type[pykka.Actor], **kwargs: Any) -> pykka.ActorRef[Any]:
        ref = cls.start(**kwargs)
        started.append(ref)
        return ref

    yield start
    for ref in reversed(started):
        ref.stop(block=True, timeout=WAIT_S)


def fetch(
    actors: Callable[..., Any], transport: MockTransport, writer: pykka.ActorRef[Any], minutes: int
) -> tuple[Any, pykka.ActorRef[Any]]:
    """Ask a fetcher over ``transport`` for the newest ``minutes`` of the market."""
    inbox = actors(Inbox)
    fetcher = actors(
        RestFetcherActor,
        threads=RunThreads(),
        connect_rest=lambda: RestClient(
            "http://exchange.invalid",
            transport=transport,
            rate_limit_per_s=None,
            error_cooldown_s=0.01,
            error_max_trials=2,
        ),
        db_writer=writer,
        run_id="protocol",
    )
    end = T0 + (minutes - 1) * MINUTE
    request = FetchCandleRange(DownloadRange(DownloadKind.UPPER_BOUND, T0, end), 1000)
    fetcher.tell(Envelope(7, inbox, request))
    return inbox.proxy().messages.get(), fetcher


def only_reply(messages: queue.Queue[Any], fetcher: pykka.ActorRef[Any]) -> Reply[Any]:
    """The one Reply: waits for it, then stops the fetcher and checks no second one came."""
    first = messages.get(timeout=WAIT_S)
    fetcher.stop(block=True, timeout=WAIT_S)
    assert messages.empty(), f"a second answer: {messages.get_nowait()!r}"
    assert isinstance(first, Reply)
    return first


def test_success_is_one_reply_after_every_page_is_stored(actors: Callable[..., Any]) -> None:
    minutes = 3 * WRITE_BATCH_CANDLES + 500
    market = Market(T0, minutes)
    writer = actors(Writer)
    messages, fetcher = fetch(actors, MockTransport(answer(market)), writer, minutes)
    reply = only_reply(messages, fetcher)
    assert 7 == reply.request_id and reply.error is None
    assert isinstance(reply.value, CandleRangeStored)
    assert minutes == reply.value.received_count
    assert () == reply.value.missing
    stored = writer.proxy().stored.get()
    assert sorted(market.times()) == sorted(stored)


def test_a_failed_write_is_the_one_reply(actors: Callable[..., Any]) -> None:
    minutes = 3 * WRITE_BATCH_CANDLES
    writer = actors(Writer, fail_page=2)
    messages, fetcher = fetch(actors, MockTransport(answer(Market(T0, minutes))), writer, minutes)
    reply = only_reply(messages, fetcher)
    assert reply.value is None
    assert isinstance(reply.error, DatabaseUnavailable)
    assert "the disk is full" in str(reply.error)


def test_an_exchange_error_is_the_one_reply(actors: Callable[..., Any]) -> None:
    transport = MockTransport(lambda request: HttpResponse(400, b'{"message": "bad range"}'))
    writer = actors(Writer)
    messages, fetcher = fetch(actors, transport, writer, 100)
    reply = only_reply(messages, fetcher)
    assert isinstance(reply.error, ExchangeClientError)
    assert 0 == writer.proxy().pages.get()


def spoiling(
    market: Market, bad: datetime, times: int | None = None
) -> tuple[Callable[[HttpRequest], HttpResponse], list[tuple[datetime, datetime]]]:
    """Answers from ``market``; a page holding the minute ``bad`` has its low above its open
    (the first ``times`` such pages, or every one). Also the ``(oldest, newest)`` of each page
    spoiled."""
    spoiled: list[tuple[datetime, datetime]] = []

    def handle(request: HttpRequest) -> HttpResponse:
        body = market.candle_page(dict(request.params))
        stamp = format_rfc3339_ms(bad)
        for item in body["data"]:
            if item["time"] == stamp and (times is None or len(spoiled) < times):
                item["low"] = 90005
                first, last = body["data"][-1]["time"], body["data"][0]["time"]
                spoiled.append((parse_rfc3339(first), parse_rfc3339(last)))
        return HttpResponse(200, json.dumps(body).encode())

    return handle, spoiled


def test_a_page_bad_on_every_trial_is_the_one_reply_and_none_of_it_is_stored(
    actors: Callable[..., Any],
) -> None:
    """A page that breaks the OHLC rule on both trials: the one Reply is InvalidMarketData
    (recoverable) naming the candle, the field and the value; nothing of that page reaches
    the DB writer."""
    minutes = 3 * WRITE_BATCH_CANDLES + 500
    market = Market(T0, minutes)
    bad = T0 + (minutes - 2500) * MINUTE  # inside the 3rd page of the newest part
    handle, spoiled = spoiling(market, bad)
    writer = actors(Writer)
    messages, fetcher = fetch(actors, MockTransport(handle), writer, minutes)
    reply = only_reply(messages, fetcher)
    assert isinstance(reply.error, InvalidMarketData)
    assert is_recoverable(reply.error)
    assert (
        f"/v3/futures/candles: candle {format_utc(bad)}: low 90005.0 is above open 90000.5"
    ) == str(reply.error)
    assert 2 == len(spoiled)  # error_max_trials
    assert spoiled[0] == spoiled[1]
    oldest, newest = spoiled[0]
    stored = writer.proxy().stored.get()
    assert [] == [t for t in stored if oldest <= t <= newest]
    assert bad not in stored


def test_a_page_bad_once_is_asked_again_and_everything_is_stored(
    actors: Callable[..., Any],
) -> None:
    """A page bad on its first trial only: the retry gets it right, the range is stored whole."""
    minutes = 2 * WRITE_BATCH_CANDLES
    market = Market(T0, minutes)
    handle, spoiled = spoiling(market, T0 + (minutes - 1500) * MINUTE, times=1)
    writer = actors(Writer)
    messages, fetcher = fetch(actors, MockTransport(handle), writer, minutes)
    reply = only_reply(messages, fetcher)
    assert reply.error is None
    assert 1 == len(spoiled)
    assert sorted(market.times()) == sorted(writer.proxy().stored.get())
