"""A local, protocol-faithful LN Markets simulator: REST v3 + Stream API, with faults on demand.

It serves one deterministic synthetic BTC/USD market (seeded) from 2020-03-01 up to now, so
candles, ticks and funding settlements agree. Use it to test a market-data pipeline without
the real exchange.

Usage
-----
::

    from qx_actors.simulator import Simulator, SimulatorConfig

    with Simulator(SimulatorConfig(seed=7, rate_limit_per_s=None)) as sim:
        sim.rest_url            # http://127.0.0.1:PORT   (GET /v3/futures/candles, ...)
        sim.stream_url          # ws://127.0.0.1:PORT2/v1 (JSON-RPC 2.0)
        sim.faults.fail_next(2, status=503)
        ...
        sim.market.final_candles(start, end)  # the truth, to compare a database with
        sim.sent_ticks()                       # every tick a subscriber took
        sim.published_ticks()                  # every tick published, received or not

``Simulator.start()`` serves from a background thread and returns once listening;
``stop()`` is idempotent and prompt (hanging responses are released, connections closed).
``await Simulator(cfg).serve_forever()`` serves on the current event loop;
``run_simulator_blocking(cfg, on_ready)`` serves until SIGINT/SIGTERM (for ``qx-actors
simulate``). Pass ``clock=ManualClock(t)`` to ``Simulator`` to control the market's time, or
``clock=OffsetClock(t)`` to serve as if it were ``t`` now, ticking with real time (give the same
clock to ``SyncEngine(config, clock=...)`` so both agree; the tests pin the hour that way).

Configuration (:class:`SimulatorConfig`, frozen): ``seed=42``, ``host="127.0.0.1"``,
``port=0`` / ``stream_port=0`` (0 = a free port), ``rate_limit_per_s=1.0`` (``None``/0 = off),
``rate_limit_burst=1``, ``tick_rate_per_s=5.0`` (0 = ticks only on ``push_ticks``),
``publish_without_subscribers=False`` (``True``: ticks are published and recorded whether or
not anyone listens, as on the real exchange; ``sim.set_publish_without_subscribers(flag)``),
``from_inclusive=True`` / ``to_inclusive=True`` (candle bounds), ``downtime=()`` (permanent
holes), ``cache_days=96``.

The market (:class:`Market`)
----------------------------
* Candles: a daily anchor walk plus per-day Brownian-bridge minute paths (0.5 USD steps; the
  open of a minute is the close of the previous one). ``final_candle(t)``, ``final_candles(a,
  b)`` give the truth; ``candles(a, b)`` what is served now.
* Candles younger than 1 h are unstable: served wicks/volume differ from the final values and
  change every minute; the current minute is still forming. At 1 h of age they are final.
* Ticks follow ``open -> low -> high -> close`` (rising minute) or ``open -> high -> low ->
  close`` inside each minute, so each tick lies within its minute's final ``low..high``.
* Funding settlements exactly on LN Markets' schedule: daily 08:00 (2021-01-11 08:00 ..
  2021-12-07 08:00), 04/12/20 (2021-12-07 20:00 .. 2025-04-11 04:00), 00/08/16 (from
  2025-04-11 16:00); ``uuid5`` ids; ``fixingPrice`` = market price then.
* ``market.add_downtime(start, end)``: exchange downtime, no candle in ``[start, end)`` ever.

REST (as LN Markets' REST v3 behaves)
-------------------------------------
``GET /v3/futures/candles?from=&to=&limit=&range=1m&cursor=``: newest first, ``limit`` 1..1000
(default 1000), only ``range=1m`` (others 400), ``cursor`` exclusive (only older candles);
``nextCursor`` = time of the oldest returned candle when older ones exist within the bounds,
else ``null``. ``GET /v3/futures/funding-settlements?from=&to=&limit=&cursor=`` (bounds
inclusive). ``GET /v3/futures/ticker``. Bad parameters: 400 ``{"message", "code"}``. Over the
rate limit: 429 with ``Retry-After`` (seconds). Times accept RFC 3339 or epoch ms.

Stream (``/v1``)
----------------
JSON-RPC 2.0: ``subscribe``/``unsubscribe`` (``params.topics``; only
``futures/inverse/btc_usd/lastPrice``), ``ping`` -> ``"pong"``, ``time`` -> epoch ms,
``hello`` -> server info; errors -32700/-32600/-32601/-32602. Notifications carry
``{"time": <epoch ms>, "lastPrice": n}``; tick times are unique and strictly increasing
(``max(previous + 1 ms, now)``, so above 1000 ticks/s they run ahead of the wall clock).

Fault switches (``sim.faults``, thread-safe; ``endpoint`` = ``"candles"``,
``"funding-settlements"``, ``"ticker"`` or ``None`` for any)
---------------------------------------------------------------------------------------------
REST:

* ``fail_next(n, status=503, endpoint=None, plain_text=False)`` — the next n answers are HTTP
  ``status``, any error code 400..599 (a stray 400, 408, 418, 500, 502, 503, 504 ...), with a
  JSON body ``{"message", "code"}`` (``plain_text=True``: ``"503 Service Unavailable"``).
* ``rate_limit_next(n, retry_after=1, endpoint=None)`` — next n answers are 429
  (``retry_after=None``: no header).
* ``set_error_fraction(fraction, status=503, seed=0, endpoint=None)`` — seeded random errors.
* ``set_delay(seconds)`` / ``delay_next(n, seconds, endpoint=None)`` — slow answers.
* ``hang_next(n, endpoint=None)`` — requests that hang until ``release_hung()`` or stop;
  ``hung_count()`` tells how many hang now.
* ``malformed_next(n, endpoint=None)`` — bodies that are not JSON: the first half of the real
  body, delivered whole (a matching ``Content-Length``).
* ``truncate_next(n=1, endpoint=None)`` — bodies cut off in transit: the full
  ``Content-Length`` is declared, half of the body is sent, then the connection is closed.
* ``wrong_types_next(n, endpoint=None, field=None, value="abc")`` — e.g. ``"open": "abc"``.
* ``unordered_next(n, endpoint="candles")`` — two middle candles (``"funding-settlements"``:
  settlements) swapped.
* ``unrounded_next(n, offset_s=30)`` — one candle time like ``12:00:30.000Z``.
* ``bad_candle(time, field="low", value=None)`` — every answer holding that minute serves it
  with ``field`` set to ``value`` (default: OHLC made inconsistent) until ``clear()``.
* ``hide_candles(start, end, until=None)`` — candles in ``[start, end)`` hidden until
  ``reveal_hidden()`` or until the market clock reaches ``until``.
* ``add_off_grid_settlement(time)`` — an extra settlement off the schedule (e.g. 03:00).
* ``hide_settlements(start, end, until=None)`` — settlements in ``[start, end]`` hidden.
* ``sim.set_rate_limit(per_s, burst=1)`` — change the rate limit at run time.

Stream:

* ``drop_stream(close_frame=True)`` — drop every connection now (close frame 1011, or TCP
  abort without a close frame); ``drop_stream_after(n_ticks, close_frame=True)``.
* ``set_stream_silent(True)`` — no more ticks, the socket stays open.
* ``set_ignore_pings(True)`` — JSON-RPC ``ping`` goes unanswered.
* ``duplicate_ticks_next(n)``, ``out_of_order_ticks_next(n)`` (a tick is held back and sent
  after the next one), ``malformed_frames_next(n)`` (an invalid frame before a tick).
* ``refuse_connections(n=None, seconds=None)`` — handshakes answered with HTTP 503.

``faults.clear()`` switches everything off.

Recorded data (``qx-actors serve``): ``Simulator(cfg, clock, source=RecordedMarket(url))``
answers the REST API from a qx_actors database (read-only) and sends on the Stream API what
``sim.send_ticks(ticks)`` is given.

Observations and controls (thread-safe, for tests): ``sim.requests()`` (``RequestRecord``:
endpoint, path, query, status) / ``sim.request_count(endpoint, status)``,
``sim.wait_in_flight(n)`` (requests being answered, e.g. delayed), ``faults.wait_hung(n)``,
``faults.corrupted_pages()`` (the pages served with bad data in them),
``sim.sent_ticks()`` / ``sim.published_ticks()`` (``PriceTick`` lists),
``sim.push_ticks(n)`` (broadcast n ticks now), ``sim.set_tick_rate(r)``,
``sim.wait_for_subscribers(n)``, ``sim.stream.wait_for_connections(n)``.
"""

from __future__ import annotations

from .faults import Faults
from .market import ManualClock, Market, OffsetClock
from .recorded import RecordedMarket
from .rest import RequestRecord
from .server import Simulator, SimulatorConfig, run_simulator_blocking
from .stream import LAST_PRICE_TOPIC

__all__ = [
    "LAST_PRICE_TOPIC",
    "Faults",
    "ManualClock",
    "Market",
    "OffsetClock",
    "RecordedMarket",
    "RequestRecord",
    "Simulator",
    "SimulatorConfig",
    "run_simulator_blocking",
]
