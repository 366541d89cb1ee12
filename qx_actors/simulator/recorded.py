"""A market source backed by a qx_actors database: what ``qx-actors serve`` answers with.

:class:`RecordedMarket` answers the REST v3 requests the engine makes (candles with ``from`` /
``to`` / ``cursor`` / ``limit`` / ``range``, the consolidated ranges included; funding
settlements; the ticker) from what the database holds, as the exchange would: newest first,
``limit`` 1..1000, an exclusive ``cursor`` paging backwards, ``nextCursor`` while older items
remain within the bounds, bounds inclusive. Nothing after the source's clock is served (a
replay serves up to its replayed instant). The database is opened read-only: serving beside
a live engine is safe. The simulator's servers do the HTTP and the Stream API
(:class:`~qx_actors.simulator.Simulator` ``(source=...)``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

import msgspec

from qx_actors.domain.timeutil import (
    FIRST_CANDLE_TIME,
    FIRST_SETTLEMENT_TIME,
    format_rfc3339_ms,
    from_epoch_ms,
    parse_rfc3339,
    utc_now,
)
from qx_actors.domain.values import RESOLUTIONS
from qx_actors.storage import CandleRow, Database

__all__ = ["MAX_LIMIT", "RecordedMarket"]

#: The most items per page (as the exchange).
MAX_LIMIT = 1000
_MICRO = timedelta(microseconds=1)
_encoder = msgspec.json.Encoder()


def _time(name: str, text: str) -> datetime:
    try:
        return from_epoch_ms(int(text)) if text.isdigit() else parse_rfc3339(text)
    except (ValueError, OverflowError):
        raise ValueError(f"invalid '{name}': {text!r} is not an RFC 3339 time") from None


def _limit(text: str | None) -> int:
    if text is None:
        return MAX_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise ValueError(f"invalid 'limit': {text!r} is not in 1..{MAX_LIMIT}")
    return int(text)


class RecordedMarket:
    """REST v3 answers from a database (see the module docstring); thread-safe."""

    def __init__(self, url: str, clock: Callable[[], datetime] = utc_now) -> None:
        self._url = url
        self.clock = clock
        self._local = threading.local()
        self._databases: list[Database] = []
        self._lock = threading.Lock()
        self.database()  # fails now (no database, unreadable) rather than at the first request

    def database(self) -> Database:
        """This thread's read-only connection."""
        database: Database | None = getattr(self._local, "database", None)
        if database is None:
            database = Database(self._url, catalog=False)
            self._local.database = database
            with self._lock:
                self._databases.append(database)
        return database

    def close(self) -> None:
        """Close every connection."""
        with self._lock:
            databases, self._databases = self._databases, []
        for database in databases:
            database.close()

    # -- REST bodies ---------------------------------------------------------------------

    def _bounds(self, query: Mapping[str, str], first: datetime) -> tuple[datetime, datetime]:
        """The page's ``[from, to]`` (inclusive): ``from`` or ``first``, ``to`` or now, never
        past now, and before ``cursor`` when there is one."""
        lo = _time("from", query["from"]) if "from" in query else first
        hi = _time("to", query["to"]) if "to" in query else self.clock()
        if lo > hi:
            raise ValueError("'from' must not be after 'to'")
        hi = min(hi, self.clock())
        if "cursor" in query:
            hi = min(hi, _time("cursor", query["cursor"]) - _MICRO)
        return lo, hi

    def candles_body(self, query: Mapping[str, str]) -> bytes:
        """``GET /v3/futures/candles``; ``ValueError`` for a bad parameter (400)."""
        resolution = query.get("range", "1m")
        if resolution not in RESOLUTIONS:
            raise ValueError(f"invalid 'range': {resolution!r}")
        step = RESOLUTIONS[resolution]
        limit = _limit(query.get("limit"))
        lo, hi = self._bounds(query, FIRST_CANDLE_TIME)
        rows: list[CandleRow] = []
        more = False
        window = step * limit
        top = hi + _MICRO  # reads are [start, end): up to hi inclusive
        database = self.database()
        while top > lo and len(rows) <= limit:
            bottom = max(lo, top - window)
            found = database.candles(bottom, top, resolution, now=self.clock())
            found = [r for r in found if lo <= r.time < top]
            rows += found[::-1]
            top = bottom
            window *= 4
        if len(rows) > limit:
            rows, more = rows[:limit], True
        data = [
            {
                "time": format_rfc3339_ms(r.time),
                "open": r.open,
                "high": r.high,
                "low": r.low,
                "close": r.close,
                "volume": r.volume,
            }
            for r in rows
        ]
        cursor = format_rfc3339_ms(rows[-1].time) if more and rows else None
        return _encoder.encode({"data": data, "nextCursor": cursor})

    def settlements_body(self, query: Mapping[str, str]) -> bytes:
        """``GET /v3/futures/funding-settlements``; ``ValueError`` for a bad parameter."""
        limit = _limit(query.get("limit"))
        lo, hi = self._bounds(query, FIRST_SETTLEMENT_TIME)
        found = self.database().settlements(lo, hi + _MICRO) if lo <= hi else []
        newest = found[::-1]
        page, more = newest[:limit], len(newest) > limit
        data = [
            {
                "id": s.id,
                "time": format_rfc3339_ms(s.time),
                "fixingPrice": s.fixing_price,
                "fundingRate": s.funding_rate,
            }
            for s in page
        ]
        cursor = format_rfc3339_ms(page[-1].time) if more and page else None
        return _encoder.encode({"data": data, "nextCursor": cursor})

    def ticker_body(self) -> bytes:
        """``GET /v3/futures/ticker``: the last stored price at the clock (tick, else the last
        candle's close)."""
        now = self.clock()
        database = self.database()
        ticks = database.ticks(now - timedelta(hours=1), now + _MICRO)
        if ticks:
            last = ticks[-1].last_price
        else:
            candles = database.candles(now - timedelta(days=1), now + _MICRO, "1m", now=now)
            last = candles[-1].close if candles else 0.0
        body = {
            "index": last,
            "lastPrice": last,
            "prices": [
                {"minSize": 1, "maxSize": 250_000, "bidPrice": last - 0.5, "askPrice": last + 0.5}
            ],
            "fundingRate": 0.0,
            "fundingTime": format_rfc3339_ms(now),
        }
        return _encoder.encode(body)
