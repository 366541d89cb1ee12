"""Checks of the exchange's market data against its rules, before anything is stored.

Every failure is an :class:`~qx_actors.errors.InvalidMarketData` whose message names the first
offending item's time, the field and its value. The REST client runs these checks on every page
it receives, inside its retry loop: a page that fails them is asked for again
(``rest_error_max_trials`` trials, ``rest_error_cooldown_s`` apart), then the error is
recoverable (the mode restarts). A page is handed on, to be written, only once it passed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

from qx_actors.domain.settlements import is_valid_settlement_time
from qx_actors.domain.timeutil import format_utc
from qx_actors.domain.values import Candle, FundingSettlement
from qx_actors.errors import InvalidMarketData

__all__ = [
    "validate_candle_page",
    "validate_settlement_page",
]

_INF = math.inf
#: Later than any real time: the "previous" of the first item of a newest-first page.
_AFTER_ALL = datetime.max.replace(tzinfo=UTC)


def validate_candle_page(candles: Sequence[Candle]) -> None:
    """Check a page of candles as the exchange sends it (newest first).

    Times must be timezone-aware whole minutes, strictly descending; prices finite and > 0
    with ``low <= min(open, close)`` and ``high >= max(open, close)``; volume finite and >= 0.
    """
    previous = _AFTER_ALL
    for candle in candles:
        time = candle.time
        if time.second or time.microsecond or time.tzinfo is None:
            _raise_bad_time(time)
        if time >= previous:
            raise InvalidMarketData(
                f"candles not strictly descending at {format_utc(time)} "
                f"(it follows {format_utc(previous)})"
            )
        low = candle.low
        high = candle.high
        if not (
            0.0 < low <= candle.open <= high < _INF
            and low <= candle.close <= high
            and 0.0 <= candle.volume < _INF
        ):
            _raise_bad_prices(candle)
        previous = time


def _raise_bad_time(time: datetime) -> None:
    if time.tzinfo is None:
        raise InvalidMarketData(f"candle time {format_utc(time)} has no timezone")
    raise InvalidMarketData(f"candle time {format_utc(time)} is not a whole minute")


def _raise_bad_prices(candle: Candle) -> None:
    where = f"candle {format_utc(candle.time)}"
    for field in ("open", "high", "low", "close"):
        value: float = getattr(candle, field)
        if not 0.0 < value < _INF:
            raise InvalidMarketData(f"{where}: {field} {value!r} is not a finite price > 0")
    if not 0.0 <= candle.volume < _INF:
        raise InvalidMarketData(f"{where}: volume {candle.volume!r} is not a finite number >= 0")
    for field in ("open", "close"):
        value = getattr(candle, field)
        if candle.high < value:
            raise InvalidMarketData(f"{where}: high {candle.high!r} is below {field} {value!r}")
        if candle.low > value:
            raise InvalidMarketData(f"{where}: low {candle.low!r} is above {field} {value!r}")
    raise AssertionError(f"{where}: no invalid field found")  # pragma: no cover


def validate_settlement_page(settlements: Sequence[FundingSettlement]) -> None:
    """Check a page of funding settlements (newest first).

    Times must be on the settlement schedule and strictly descending; the fixing price finite
    and > 0, the funding rate finite.
    """
    previous = _AFTER_ALL
    for settlement in settlements:
        time = settlement.time
        if time.tzinfo is None:
            raise InvalidMarketData(f"funding settlement time {format_utc(time)} has no timezone")
        if not is_valid_settlement_time(time):
            raise InvalidMarketData(
                f"funding settlement time {format_utc(time)} is not on the settlement schedule"
            )
        if time >= previous:
            raise InvalidMarketData(
                f"funding settlements not strictly descending at {format_utc(time)} "
                f"(it follows {format_utc(previous)})"
            )
        if not 0.0 < settlement.fixing_price < _INF:
            raise InvalidMarketData(
                f"funding settlement {format_utc(time)}: fixing_price "
                f"{settlement.fixing_price!r} is not a finite price > 0"
            )
        if not math.isfinite(settlement.funding_rate):
            raise InvalidMarketData(
                f"funding settlement {format_utc(time)}: funding_rate "
                f"{settlement.funding_rate!r} is not finite"
            )
        previous = time
