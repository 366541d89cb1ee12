"""The read API for users of the data: candles (1m or consolidated), ticks, settlements."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import msgspec

from qx_actors.domain.funding import FundingSettlementsFacts
from qx_actors.domain.history import PriceHistoryFacts
from qx_actors.domain.timeutil import require_utc, utc_now
from qx_actors.domain.values import FundingSettlement, PriceTick
from qx_actors.errors import StorageError

from . import _queries
from ._backend import Backend, guard, open_backend
from ._schema import check_schema, stored_version

#: resolution name -> bucket length in seconds; buckets are aligned to multiples of it
#: since the Unix epoch (so 1d buckets start at 00:00 UTC)
RESOLUTIONS: dict[str, int] = {
    "1m": 60,
    "3m": 180,
    "5m": 300,
    "10m": 600,
    "15m": 900,
    "30m": 1_800,
    "45m": 2_700,
    "1h": 3_600,
    "2h": 7_200,
    "3h": 10_800,
    "4h": 14_400,
    "1d": 86_400,
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class CandleRow(msgspec.Struct, frozen=True, gc=False):
    """A stored candle (1m) or a bucket of them (3m ... 1d); ``time`` is the bucket start.

    ``stable``: every minute in it is stable and the bucket has ended. ``gap``: some minute in
    it is the first after a hole. ``minutes``: how many 1-minute candles it was built from.
    """

    time: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    stable: bool
    gap: bool
    minutes: int


def bucket_start(time: datetime, seconds: int) -> datetime:
    """The start of the epoch-aligned bucket of ``seconds`` containing ``time``."""
    offset = (time - _EPOCH) // timedelta(seconds=seconds)
    return _EPOCH + timedelta(seconds=offset * seconds)


def consolidate(
    rows: list[tuple[datetime, float, float, float, float, float, bool, bool]],
    seconds: int,
    now: datetime,
) -> list[CandleRow]:
    """Group time-ordered 1m rows ``(time, o, h, l, c, v, stable, gap)`` into buckets (one pass)."""
    step = timedelta(seconds=seconds)
    out: list[CandleRow] = []
    i, n = 0, len(rows)
    while i < n:
        time, open_, high, low, close, volume, stable, gap = rows[i]
        first = _EPOCH + ((time - _EPOCH) // step) * step
        after = first + step
        count = 1
        i += 1
        while i < n and rows[i][0] < after:
            _, _, h, lo, close, v, s, g = rows[i]
            high = max(high, h)
            low = min(low, lo)
            volume += v
            stable = stable and s
            gap = gap or g
            count += 1
            i += 1
        out.append(
            CandleRow(first, open_, high, low, close, volume, stable and after <= now, gap, count)
        )
    return out


class Database:
    """A database opened for reading (safe to use while an engine writes to it).

    Time ranges are half-open ``[start, end)``. Each thread gets its own connection.
    """

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            path = url[len("sqlite:///") :]
            if path != ":memory:" and not os.path.exists(path):
                raise StorageError(f"no database at {path}")
        self._backend: Backend = open_backend(url, read_only=True)
        try:
            check_schema(self._backend)
            with guard(self._backend, "schema version"):
                version = stored_version(self._backend)
        except BaseException:
            self._backend.close()
            raise
        #: schema 2 keeps the runs of stored minutes; an older database is scanned instead
        self._coverage = version is not None and version >= 2

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._backend.name

    def candles(
        self,
        start: datetime,
        end: datetime,
        resolution: str = "1m",
        *,
        now: datetime | None = None,
    ) -> list[CandleRow]:
        """Candles of every bucket overlapping ``[start, end)``, oldest first.

        Each bucket is built from all its stored minutes (open of the first, highest high,
        lowest low, close of the last, summed volume); buckets without candles are absent.
        ``now`` (default: the clock) decides whether a bucket has ended.
        """
        try:
            seconds = RESOLUTIONS[resolution]
        except KeyError:
            raise ValueError(
                f"unknown resolution {resolution!r}; expected one of {', '.join(RESOLUTIONS)}"
            ) from None
        start, end = require_utc(start, "start"), require_utc(end, "end")
        if end <= start:
            return []
        lo = bucket_start(start, seconds)
        hi = bucket_start(end - timedelta(microseconds=1), seconds) + timedelta(seconds=seconds)
        backend = self._backend
        tp, tv = backend.time_param, backend.time_value
        with guard(backend, "read candles"), backend.read_txn():
            cursor = backend.execute(
                "SELECT time, open, high, low, close, volume, stable, gap FROM ohlc_candles "
                "WHERE time >= ? AND time < ? ORDER BY time",
                (tp(lo), tp(hi)),
            )
            raw = cursor.fetchall()
        rows = [(tv(t), o, h, low, c, v, bool(s), bool(g)) for t, o, h, low, c, v, s, g in raw]
        return consolidate(rows, seconds, now or utc_now())

    def ticks(self, start: datetime, end: datetime) -> list[PriceTick]:
        """Stored ticks with ``start <= time < end``, oldest first."""
        backend = self._backend
        tp, tv = backend.time_param, backend.time_value
        with guard(backend, "read ticks"):
            cursor = backend.execute(
                "SELECT time, last_price FROM price_ticks WHERE time >= ? AND time < ? "
                "ORDER BY time",
                (tp(require_utc(start)), tp(require_utc(end))),
            )
            return [PriceTick(time=tv(t), last_price=p) for t, p in cursor.fetchall()]

    def settlements(self, start: datetime, end: datetime) -> list[FundingSettlement]:
        """Stored funding settlements with ``start <= time < end``, oldest first."""
        backend = self._backend
        tp, tv = backend.time_param, backend.time_value
        with guard(backend, "read settlements"):
            cursor = backend.execute(
                "SELECT id, time, fixing_price, funding_rate FROM funding_settlements "
                "WHERE time >= ? AND time < ? ORDER BY time",
                (tp(require_utc(start)), tp(require_utc(end))),
            )
            return [
                FundingSettlement(id=str(i), time=tv(t), fixing_price=f, funding_rate=r)
                for i, t, f, r in cursor.fetchall()
            ]

    def price_history_facts(self, *, scan_from: datetime | None = None) -> PriceHistoryFacts:
        """Bounds, every hole between them, verified-empty ranges, earliest unstable candle.

        ``scan_from`` is accepted for compatibility and ignored: holes are reported wherever
        they are (from ``ohlc_coverage``; from a scan of the candles on a schema-1 database).
        """
        del scan_from
        return _queries.price_history_facts(self._backend, coverage=self._coverage)

    def funding_facts(self, *, scan_from: datetime) -> FundingSettlementsFacts:
        """Settlement bounds and stored settlement times since ``scan_from``."""
        return _queries.funding_facts(self._backend, scan_from)

    def close(self) -> None:
        """Close this thread's connection."""
        with guard(None, "close"):
            self._backend.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
