"""The REST v3 app: candles paging and bounds, errors, rate limit, settlements, ticker."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import urllib.parse
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

import pytest
from sim_helpers import NOW, SimFactory, http_get

from qx_actors.domain.timeutil import (
    FIRST_CANDLE_TIME,
    MINUTE,
    floor_minute,
    format_rfc3339_ms,
    parse_rfc3339,
)
from qx_actors.domain.values import Candle
from qx_actors.simulator import Simulator

CANDLES = "/v3/futures/candles"
SETTLEMENTS = "/v3/futures/funding-settlements"
TICKER = "/v3/futures/ticker"


def iso(value: datetime) -> str:
    return format_rfc3339_ms(value)


def to_candle(item: dict[str, Any]) -> Candle:
    return Candle(
        time=parse_rfc3339(item["time"]),
        open=item["open"],
        high=item["high"],
        low=item["low"],
        close=item["close"],
        volume=item["volume"],
    )


def page_all(sim: Simulator, path: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Follow ``nextCursor`` to the end; returns the items and the number of requests."""
    items: list[dict[str, Any]] = []
    cursor = None
    requests = 0
    while True:
        extra: dict[str, str] = {} if cursor is None else {"cursor": cursor}
        reply = http_get(sim.rest_url, path, **params, **extra)
        requests += 1
        assert reply.status == 200, reply.body
        body = reply.json()
        items.extend(body["data"])
        cursor = body["nextCursor"]
        if cursor is None:
            return items, requests


def test_paging_covers_a_range_exactly_once(sim: Simulator) -> None:
    """Paging backwards with the cursor returns every candle once, equal to the truth."""
    start = datetime(2024, 2, 28, 22, 0, tzinfo=UTC)
    end = start + timedelta(minutes=2499)
    items, requests = page_all(sim, CANDLES, **{"from": iso(start), "to": iso(end)}, limit=1000)
    assert requests == 3
    candles = [to_candle(i) for i in items]
    assert sim.market.final_candles(start, end) == list(reversed(candles))


@pytest.mark.parametrize(
    ("from_inclusive", "to_inclusive"), [(True, True), (True, False), (False, True), (False, False)]
)
def test_bound_inclusivity_is_configurable(
    make_sim: SimFactory, from_inclusive: bool, to_inclusive: bool
) -> None:
    """``from``/``to`` on whole minutes are included or not as configured."""
    sim = make_sim(from_inclusive=from_inclusive, to_inclusive=to_inclusive)
    start = datetime(2024, 1, 1, 10, 0, tzinfo=UTC)
    end = start + 10 * MINUTE
    body = http_get(sim.rest_url, CANDLES, **{"from": iso(start), "to": iso(end)}).json()
    times = [parse_rfc3339(c["time"]) for c in body["data"]]
    assert (end if to_inclusive else end - MINUTE) == times[0]
    assert (start if from_inclusive else start + MINUTE) == times[-1]
    assert body["nextCursor"] is None


def test_cursor_is_exclusive(sim: Simulator) -> None:
    """Only candles strictly older than the cursor are returned."""
    cursor = datetime(2024, 1, 1, 10, 0, tzinfo=UTC)
    body = http_get(sim.rest_url, CANDLES, cursor=iso(cursor), limit=2).json()
    assert [iso(cursor - MINUTE), iso(cursor - 2 * MINUTE)] == [c["time"] for c in body["data"]]
    assert iso(cursor - 2 * MINUTE) == body["nextCursor"]


def test_newest_is_the_current_minute(sim: Simulator) -> None:
    """Without bounds the newest candle is the forming minute; nothing after now."""
    body = http_get(sim.rest_url, CANDLES, limit=3, to=iso(NOW + timedelta(days=1))).json()
    times = [c["time"] for c in body["data"]]
    assert [iso(floor_minute(NOW) - i * MINUTE) for i in range(3)] == times


def test_nothing_before_history(sim: Simulator) -> None:
    """The oldest candle is 2020-03-01T00:00Z and the last page has no cursor."""
    to = FIRST_CANDLE_TIME + 2 * MINUTE
    body = http_get(sim.rest_url, CANDLES, **{"from": "2019-01-01T00:00:00.000Z", "to": iso(to)})
    data = body.json()
    assert [iso(to), iso(to - MINUTE), iso(FIRST_CANDLE_TIME)] == [c["time"] for c in data["data"]]
    assert data["nextCursor"] is None


def test_last_full_page_has_no_cursor(sim: Simulator) -> None:
    """A page that ends exactly at ``from`` has ``nextCursor: null``."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    body = http_get(
        sim.rest_url, CANDLES, **{"from": iso(start), "to": iso(start + 4 * MINUTE)}, limit=5
    ).json()
    assert len(body["data"]) == 5
    assert body["nextCursor"] is None


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 1001},
        {"limit": "ten"},
        {"range": "5m"},
        {"range": "7x"},
        {"from": "yesterday"},
        {"cursor": "2024-01-01"},
        {"from": "2024-01-02T00:00:00.000Z", "to": "2024-01-01T00:00:00.000Z"},
    ],
)
def test_bad_parameters_are_400(sim: Simulator, params: dict[str, Any]) -> None:
    """Bad candle parameters answer 400 with a JSON message and code."""
    reply = http_get(sim.rest_url, CANDLES, **params)
    assert reply.status == 400
    body = reply.json()
    assert body["code"] == "BAD_REQUEST"
    assert body["message"]


def test_unknown_path_is_404(sim: Simulator) -> None:
    """An unknown path answers 404 JSON."""
    assert http_get(sim.rest_url, "/v3/futures/nope").status == 404


def test_rate_limit_answers_429_with_retry_after(make_sim: SimFactory) -> None:
    """Over the rate limit: 429, Retry-After in seconds, a JSON body; the log records it."""
    sim = make_sim(rate_limit_per_s=0.5)
    assert http_get(sim.rest_url, TICKER).status == 200
    reply = http_get(sim.rest_url, TICKER)
    assert reply.status == 429
    assert 1 <= int(reply.headers["Retry-After"]) <= 2
    assert reply.json()["code"] == "RATE_LIMITED"
    assert sim.request_count("ticker", status=429) == 1
    sim.set_rate_limit(None)
    assert http_get(sim.rest_url, TICKER).status == 200


def test_fail_next(sim: Simulator) -> None:
    """fail_next answers the next N requests with the status, JSON or plain text."""
    sim.faults.fail_next(1, status=500)
    sim.faults.fail_next(1, status=502, plain_text=True)
    first = http_get(sim.rest_url, TICKER)
    second = http_get(sim.rest_url, TICKER)
    assert (first.status, first.json()["code"]) == (500, "INTERNAL_SERVER_ERROR")
    assert (second.status, second.body) == (502, b"502 Bad Gateway")
    assert http_get(sim.rest_url, TICKER).status == 200


def test_fault_endpoint_filter(sim: Simulator) -> None:
    """A fault armed for one endpoint leaves the others alone."""
    sim.faults.fail_next(1, status=503, endpoint="candles")
    assert http_get(sim.rest_url, TICKER).status == 200
    assert http_get(sim.rest_url, CANDLES, limit=1).status == 503
    assert http_get(sim.rest_url, CANDLES, limit=1).status == 200


def test_rate_limit_burst_fault(sim: Simulator) -> None:
    """rate_limit_next answers 429 with the given Retry-After."""
    sim.faults.rate_limit_next(2, retry_after=3)
    replies = [http_get(sim.rest_url, TICKER) for _ in range(3)]
    assert [r.status for r in replies] == [429, 429, 200]
    assert replies[0].headers["Retry-After"] == "3"


def test_error_fraction_is_seeded(make_sim: SimFactory) -> None:
    """A seeded error fraction gives the same pattern for the same seed."""
    patterns = []
    for _ in range(2):
        sim = make_sim()
        sim.faults.set_error_fraction(0.5, status=503, seed=4)
        patterns.append([http_get(sim.rest_url, TICKER).status for _ in range(12)])
        sim.stop()
    assert patterns[0] == patterns[1]
    assert {200, 503} == set(patterns[0])


def test_delay_next(sim: Simulator) -> None:
    """delay_next slows the next response down (a client timeout shorter than it fails)."""
    sim.faults.delay_next(1, 2.0)
    with pytest.raises(TimeoutError):
        http_get(sim.rest_url, TICKER, _timeout=0.3)
    assert http_get(sim.rest_url, TICKER).status == 200


def test_hang_until_released(sim: Simulator) -> None:
    """A hanging request answers once released."""
    import concurrent.futures

    sim.faults.hang_next(1)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(http_get, sim.rest_url, TICKER)
        assert sim.faults.wait_hung(1)
        assert not future.done()
        sim.faults.release_hung()
        assert future.result(5).status == 200


def test_stop_is_prompt_with_hanging_requests(make_sim: SimFactory) -> None:
    """stop() returns while a request hangs; the client sees an answer or the connection end."""
    import concurrent.futures

    sim = make_sim()
    sim.faults.hang_next(1)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(http_get, sim.rest_url, TICKER)
        assert sim.faults.wait_hung(1)
        sim.stop()
        assert not sim.is_running
        assert 0 == sim.faults.hung_count()  # released, not left waiting
        # the client is not left hanging: answered or disconnected (a generous wait)
        with contextlib.suppress(OSError):
            future.result(30)
        assert future.done()
    sim.stop()  # idempotent


def test_malformed_json(sim: Simulator) -> None:
    """malformed_next serves, whole, a body that is not JSON (the real body's first half)."""
    whole = http_get(sim.rest_url, CANDLES, limit=5)
    sim.faults.malformed_next(1, endpoint="candles")
    reply = http_get(sim.rest_url, CANDLES, limit=5)
    assert reply.status == 200
    assert int(reply.headers["Content-Length"]) == len(reply.body) == len(whole.body) // 2
    assert whole.body.startswith(reply.body)
    with pytest.raises(json.JSONDecodeError):
        reply.json()
    assert http_get(sim.rest_url, CANDLES, limit=5).body == whole.body


def _read_raw(base: str, path: str, query: str) -> tuple[int, int, bytes, bool]:
    """GET over a raw socket: status, declared Content-Length, body bytes received before the
    server closed the connection, and whether it closed it."""
    url = urllib.parse.urlsplit(base)
    assert url.hostname is not None and url.port is not None
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        request = f"GET {path}?{query} HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n"
        sock.sendall(request.encode())
        data = b""
        closed = False
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep and b"content-length: " in head.lower():
                declared = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                if len(body) >= declared:
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    declared = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return status, declared, body, closed


def test_truncate_next_cuts_the_body_in_transit(sim: Simulator) -> None:
    """truncate_next declares the whole Content-Length, sends half the body and closes the
    connection; the endpoint filter and the counter hold; later answers are whole."""
    query = "limit=20"
    whole = http_get(sim.rest_url, CANDLES, limit=20).body
    sim.faults.truncate_next(2, endpoint="candles")
    assert http_get(sim.rest_url, TICKER).status == 200  # other endpoints untouched
    status, declared, body, closed = _read_raw(sim.rest_url, CANDLES, query)
    assert (status, declared, closed) == (200, len(whole), True)
    assert body == whole[: len(whole) // 2]
    with pytest.raises(http.client.IncompleteRead):  # what an HTTP client sees
        http_get(sim.rest_url, CANDLES, limit=20)
    assert _read_raw(sim.rest_url, CANDLES, query) == (200, len(whole), whole, False)
    assert 4 == sim.request_count("candles", status=200)  # the two cut ones included


@pytest.mark.parametrize("status", [400, 404, 408, 418, 429, 451, 500, 502, 503, 504, 599])
@pytest.mark.parametrize("plain_text", [False, True])
def test_fail_next_serves_any_error_status(sim: Simulator, status: int, plain_text: bool) -> None:
    """fail_next answers any HTTP error code 400..599, JSON ``{"message", "code"}`` or plain
    text with the reason phrase, and is logged with its status."""
    sim.faults.fail_next(1, status=status, endpoint="candles", plain_text=plain_text)
    reply = http_get(sim.rest_url, CANDLES, limit=1)
    assert reply.status == status
    reason = HTTPStatus(status).phrase if status != 599 else "Error"
    if plain_text:
        assert reply.body == f"{status} {reason}".encode()
    else:
        body = reply.json()
        assert body["message"] == reason
        assert body["code"] == "".join(c if c.isalnum() else "_" for c in reason.upper())
    assert 1 == sim.request_count("candles", status=status)
    assert http_get(sim.rest_url, CANDLES, limit=1).status == 200


@pytest.mark.parametrize("status", [200, 302, 399, 600])
def test_fail_next_refuses_a_status_that_is_not_an_error(sim: Simulator, status: int) -> None:
    """A success or redirect status is not a failure: ValueError."""
    with pytest.raises(ValueError, match=r"400\.\.599"):
        sim.faults.fail_next(1, status=status)


def test_wrong_types(sim: Simulator) -> None:
    """wrong_types_next puts a string where a number belongs."""
    sim.faults.wrong_types_next(1, endpoint="candles")
    sim.faults.wrong_types_next(1, endpoint="funding-settlements")
    candles = http_get(sim.rest_url, CANDLES, limit=3).json()["data"]
    settlements = http_get(sim.rest_url, SETTLEMENTS, limit=3).json()["data"]
    assert candles[0]["open"] == "abc"
    assert isinstance(candles[1]["open"], float)
    assert settlements[0]["fundingRate"] == "abc"


def test_unordered_candles(sim: Simulator) -> None:
    """unordered_next breaks the strictly descending order once."""
    sim.faults.unordered_next(1)
    to = iso(NOW - timedelta(hours=3))
    bad = [
        parse_rfc3339(c["time"])
        for c in http_get(sim.rest_url, CANDLES, to=to, limit=10).json()["data"]
    ]
    good = [
        parse_rfc3339(c["time"])
        for c in http_get(sim.rest_url, CANDLES, to=to, limit=10).json()["data"]
    ]
    assert sorted(bad, reverse=True) == good
    assert bad != good


def test_unrounded_candle_times(sim: Simulator) -> None:
    """unrounded_next shifts one candle time off the minute."""
    sim.faults.unrounded_next(1)
    times = [c["time"] for c in http_get(sim.rest_url, CANDLES, limit=10).json()["data"]]
    assert sum(1 for t in times if t.endswith(":30.000Z")) == 1


def test_hidden_candles_appear_when_revealed(sim: Simulator) -> None:
    """Hidden candles are missing until reveal_hidden(); paging skips the hole."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    end = start + 9 * MINUTE
    sim.faults.hide_candles(start + 3 * MINUTE, start + 6 * MINUTE)
    bounds = {"from": iso(start), "to": iso(end)}
    items, _ = page_all(sim, CANDLES, **bounds, limit=4)
    assert len(items) == 7
    assert iso(start + 2 * MINUTE) == items[-3]["time"]
    sim.faults.reveal_hidden()
    assert len(page_all(sim, CANDLES, **bounds, limit=4)[0]) == 10


def test_hidden_until_a_time(make_sim: SimFactory) -> None:
    """Candles hidden until a time reappear when the market clock passes it."""
    from qx_actors.simulator import ManualClock

    clock = ManualClock(NOW)
    sim = make_sim(clock=clock)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    sim.faults.hide_candles(start, start + MINUTE, until=NOW + timedelta(minutes=5))
    bounds = {"from": iso(start), "to": iso(start)}
    assert http_get(sim.rest_url, CANDLES, **bounds).json()["data"] == []
    clock.advance(timedelta(minutes=5))
    assert len(http_get(sim.rest_url, CANDLES, **bounds).json()["data"]) == 1


def test_downtime_is_permanent(make_sim: SimFactory) -> None:
    """Configured downtime is never served, and a page across it still pages on."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    sim = make_sim(downtime=((start + MINUTE, start + 3 * MINUTE),))
    body = http_get(
        sim.rest_url, CANDLES, **{"from": iso(start), "to": iso(start + 3 * MINUTE)}, limit=1
    ).json()
    assert [iso(start + 3 * MINUTE)] == [c["time"] for c in body["data"]]
    assert iso(start + 3 * MINUTE) == body["nextCursor"]
    sim.faults.reveal_hidden()
    items, _ = page_all(sim, CANDLES, **{"from": iso(start), "to": iso(start + 3 * MINUTE)})
    assert [iso(start + 3 * MINUTE), iso(start)] == [c["time"] for c in items]


def test_unstable_candles_are_served_revised(make_sim: SimFactory) -> None:
    """Candles younger than 1 h differ from the truth; older ones equal it."""
    sim = make_sim()
    items = http_get(sim.rest_url, CANDLES, limit=70).json()["data"]
    served = [to_candle(c) for c in items]
    truth = {c.time: c for c in sim.market.final_candles(served[-1].time, served[0].time)}
    young = [c for c in served if NOW - c.time < timedelta(hours=1)]
    old = [c for c in served if NOW - c.time >= timedelta(hours=1)]
    assert len(young) == 60
    assert all(truth[c.time] != c for c in young)
    assert all(truth[c.time] == c for c in old)


def test_settlements_paging_and_bounds(sim: Simulator) -> None:
    """Settlements come newest first, bounds inclusive, paged once each across phases."""
    start, end = datetime(2021, 12, 1, 8, tzinfo=UTC), datetime(2021, 12, 12, 12, tzinfo=UTC)
    items, requests = page_all(sim, SETTLEMENTS, **{"from": iso(start), "to": iso(end)}, limit=7)
    truth = sim.market.settlements(start, end)
    assert requests == 4
    assert [s.time for s in reversed(truth)] == [parse_rfc3339(i["time"]) for i in items]
    assert [s.id for s in reversed(truth)] == [i["id"] for i in items]
    assert iso(end) == items[0]["time"] and iso(start) == items[-1]["time"]


def test_off_grid_and_hidden_settlements(sim: Simulator) -> None:
    """An injected off-grid settlement is served; hidden ones come back when revealed."""
    day = datetime(2024, 3, 5, tzinfo=UTC)
    bounds = {"from": iso(day), "to": iso(day + timedelta(hours=23))}
    sim.faults.add_off_grid_settlement(day + timedelta(hours=3))
    sim.faults.hide_settlements(day + timedelta(hours=12), day + timedelta(hours=12))
    times = [i["time"] for i in http_get(sim.rest_url, SETTLEMENTS, **bounds).json()["data"]]
    assert [iso(day + timedelta(hours=h)) for h in (20, 4, 3)] == times
    sim.faults.reveal_hidden()
    times = [i["time"] for i in http_get(sim.rest_url, SETTLEMENTS, **bounds).json()["data"]]
    assert [iso(day + timedelta(hours=h)) for h in (20, 12, 4, 3)] == times


def test_ticker(sim: Simulator) -> None:
    """The ticker carries the price now and the next funding time."""
    body = http_get(sim.rest_url, TICKER).json()
    assert sim.market.price_at(NOW) == body["lastPrice"]
    assert iso(datetime(2025, 6, 1, 16, tzinfo=UTC)) == body["fundingTime"]
    assert {"index", "lastPrice", "prices", "fundingRate", "fundingTime"} == set(body)


def test_request_log(sim: Simulator) -> None:
    """Every answered request is logged with its endpoint, query and status."""
    http_get(sim.rest_url, CANDLES, limit=2)
    http_get(sim.rest_url, CANDLES, limit=0)
    records = sim.requests()
    assert [(r.endpoint, r.query["limit"], r.status) for r in records] == [
        ("candles", "2", 200),
        ("candles", "0", 400),
    ]


def test_same_seed_same_answers(make_sim: SimFactory) -> None:
    """Two simulators with one seed serve identical candles and settlements."""
    one, two, other = make_sim(seed=5), make_sim(seed=5), make_sim(seed=6)
    params = {"to": "2023-03-03T03:03:00.000Z", "limit": 500}
    for path in (CANDLES, SETTLEMENTS):
        assert (
            http_get(one.rest_url, path, **params).body
            == http_get(two.rest_url, path, **params).body
        )
    assert (
        http_get(one.rest_url, CANDLES, **params).body
        != http_get(other.rest_url, CANDLES, **params).body
    )


def test_settlements_bad_parameters(sim: Simulator) -> None:
    """Bad settlement parameters answer 400."""
    assert http_get(sim.rest_url, SETTLEMENTS, limit=0).status == 400
    assert http_get(sim.rest_url, SETTLEMENTS, to="soon").status == 400


def test_stop_is_prompt_with_slow_responses(make_sim: SimFactory) -> None:
    """stop() does not wait for a response delayed by a minute."""
    import concurrent.futures

    sim = make_sim()
    sim.faults.set_delay(60)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(http_get, sim.rest_url, TICKER)
        assert sim.wait_in_flight(1)
        sim.stop()
        assert not sim.is_running
        # the delayed response was cut off, not waited for: the client sees the connection end
        # (a generous wait, far below the minute of delay)
        assert isinstance(future.exception(30), OSError | http.client.HTTPException)
