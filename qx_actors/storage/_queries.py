"""Read queries shared by the writer's :class:`Storage` and the users' :class:`Database`."""

from __future__ import annotations

from datetime import datetime

from qx_actors.domain.funding import FundingSettlementsFacts
from qx_actors.domain.history import PriceHistoryFacts
from qx_actors.domain.timeutil import MINUTE

from ._backend import Backend, guard


def _first_time(backend: Backend, sql: str) -> datetime | None:
    row = backend.execute(sql).fetchone()
    return None if row is None else backend.time_value(row[0])


def price_history_facts(backend: Backend, scan_from: datetime) -> PriceHistoryFacts:
    """Bounds, holes at or after ``scan_from``, verified-empty ranges, earliest unstable candle.

    All from one snapshot. Bounds come from the primary-key index, the earliest unstable
    candle from the partial index on unstable candles; holes are found with ``LAG`` over the
    candles at or after ``scan_from`` (the scan window only).
    """
    with guard(backend, "price history facts"), backend.read_txn():
        earliest = _first_time(backend, "SELECT time FROM ohlc_candles ORDER BY time LIMIT 1")
        latest = _first_time(backend, "SELECT time FROM ohlc_candles ORDER BY time DESC LIMIT 1")
        tv = backend.time_value
        cursor = backend.execute(backend.holes_sql, (backend.time_param(scan_from),))
        holes = tuple((tv(prev) + MINUTE, tv(time) - MINUTE) for prev, time in cursor.fetchall())
        cursor = backend.execute(
            "SELECT first_minute, last_minute FROM ohlc_verified_empty ORDER BY first_minute"
        )
        verified = tuple((tv(first), tv(last)) for first, last in cursor.fetchall())
        unstable = _first_time(
            backend, "SELECT time FROM ohlc_candles WHERE NOT stable ORDER BY time LIMIT 1"
        )
    return PriceHistoryFacts(
        earliest=earliest,
        latest=latest,
        holes=holes,
        verified_empty=verified,
        earliest_unstable=unstable,
    )


def funding_facts(backend: Backend, scan_from: datetime) -> FundingSettlementsFacts:
    """Bounds and every stored settlement time at or after ``scan_from`` (one snapshot)."""
    with guard(backend, "funding settlement facts"), backend.read_txn():
        earliest = _first_time(
            backend, "SELECT time FROM funding_settlements ORDER BY time LIMIT 1"
        )
        latest = _first_time(
            backend, "SELECT time FROM funding_settlements ORDER BY time DESC LIMIT 1"
        )
        cursor = backend.execute(
            "SELECT time FROM funding_settlements WHERE time >= ? ORDER BY time",
            (backend.time_param(scan_from),),
        )
        times = tuple(backend.time_value(row[0]) for row in cursor.fetchall())
    return FundingSettlementsFacts(earliest=earliest, latest=latest, stored_times_in_scan=times)
