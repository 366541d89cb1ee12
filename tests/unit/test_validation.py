"""Validation of candle and settlement pages from the exchange."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from qx_actors.domain.timeutil import format_utc
from qx_actors.domain.validation import (
    validate_candle_page,
    validate_settlement_page,
)
from qx_actors.domain.values import Candle, FundingSettlement
from qx_actors.errors import (
    ExchangeDecodeError,
    ExchangeError,
    FatalError,
    InvalidMarketData,
    RecoverableError,
    is_recoverable,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MIN = timedelta(minutes=1)


def candle(at: datetime, **prices: float) -> Candle:
    values = {"open": 100.0, "high": 102.0, "low": 99.0, "close": 101.0, "volume": 5.0}
    values.update(prices)
    return Candle(time=at, **values)


def page(count: int, start: datetime = T0) -> list[Candle]:
    return [candle(start - i * MIN) for i in range(count)]


def settlement(
    at: datetime, fixing_price: float = 90_000.0, rate: float = 1e-4
) -> FundingSettlement:
    return FundingSettlement(id="x", time=at, fixing_price=fixing_price, funding_rate=rate)


def test_format_utc() -> None:
    """Times in messages are ISO UTC with a Z."""
    assert format_utc(T0 + timedelta(seconds=30)) == "2026-01-01T00:00:30Z"


def test_valid_pages_pass() -> None:
    """Whole, strictly descending minutes with sane prices pass; so does an empty page."""
    validate_candle_page(page(1000))
    validate_candle_page([])
    validate_candle_page([candle(T0, open=100.0, high=100.0, low=100.0, close=100.0, volume=0.0)])


def test_unrounded_time_names_it() -> None:
    """A candle not on a whole minute is InvalidMarketData (recoverable) naming it."""
    candles = [*page(3), candle(T0 - 3 * MIN + timedelta(seconds=30))]
    with pytest.raises(InvalidMarketData) as info:
        validate_candle_page(candles)
    assert str(info.value) == "candle time 2025-12-31T23:57:30Z is not a whole minute"
    assert isinstance(info.value, RecoverableError) and is_recoverable(info.value)
    assert isinstance(info.value, ExchangeError)
    assert not isinstance(info.value, FatalError)


def test_sub_second_time_is_rejected() -> None:
    """Milliseconds count as not whole."""
    with pytest.raises(InvalidMarketData, match=r"00:00:00\.001000Z is not a whole minute"):
        validate_candle_page([candle(T0 + timedelta(milliseconds=1))])


def test_naive_time_is_rejected() -> None:
    """A naive time is invalid data, not a TypeError."""
    with pytest.raises(InvalidMarketData, match="has no timezone"):
        validate_candle_page([candle(datetime(2026, 1, 1))])


def test_ascending_page_names_first_offender() -> None:
    """Ascending order is reported at the first candle out of order."""
    candles = [candle(T0), candle(T0 - MIN), candle(T0 + 5 * MIN), candle(T0 + 6 * MIN)]
    with pytest.raises(InvalidMarketData) as info:
        validate_candle_page(candles)
    assert str(info.value) == (
        "candles not strictly descending at 2026-01-01T00:05:00Z (it follows 2025-12-31T23:59:00Z)"
    )


def test_duplicate_time_is_rejected() -> None:
    """Two candles for the same minute are not strictly descending."""
    with pytest.raises(InvalidMarketData, match="not strictly descending at 2026-01-01T00:00:00Z"):
        validate_candle_page([candle(T0), candle(T0)])


@pytest.mark.parametrize(
    ("prices", "message"),
    [
        ({"high": 100.5}, "high 100.5 is below close 101.0"),
        ({"high": 99.5, "low": 98.0}, "high 99.5 is below open 100.0"),
        ({"low": 100.5}, "low 100.5 is above open 100.0"),
        ({"open": 0.0, "low": 0.0}, "open 0.0 is not a finite price > 0"),
        ({"low": -1.0}, "low -1.0 is not a finite price > 0"),
        ({"close": math.nan}, "close nan is not a finite price > 0"),
        ({"high": math.inf}, "high inf is not a finite price > 0"),
        ({"volume": -1.0}, "volume -1.0 is not a finite number >= 0"),
        ({"volume": math.nan}, "volume nan is not a finite number >= 0"),
    ],
)
def test_bad_prices_name_the_field(prices: dict[str, float], message: str) -> None:
    """Inconsistent or non-finite prices name the candle and the field."""
    with pytest.raises(InvalidMarketData) as info:
        validate_candle_page([candle(T0), candle(T0 - MIN, **prices)])
    assert f"candle 2025-12-31T23:59:00Z: {message}" == str(info.value)


def test_valid_settlement_page_passes() -> None:
    """Settlements on the schedule, newest first, pass (across a phase change)."""
    validate_settlement_page(
        [
            settlement(datetime(2025, 4, 12, 0, tzinfo=UTC)),
            settlement(datetime(2025, 4, 11, 16, tzinfo=UTC)),
            settlement(datetime(2025, 4, 11, 4, tzinfo=UTC)),
            settlement(datetime(2025, 4, 10, 20, tzinfo=UTC), rate=-3e-4),
        ]
    )


def test_off_grid_settlement_names_it() -> None:
    """A settlement off the schedule (here in the B->C dead zone) is invalid and named."""
    with pytest.raises(InvalidMarketData) as info:
        validate_settlement_page(
            [
                settlement(datetime(2025, 4, 11, 16, tzinfo=UTC)),
                settlement(datetime(2025, 4, 11, 8, tzinfo=UTC)),
            ]
        )
    assert (
        str(info.value)
        == "funding settlement time 2025-04-11T08:00:00Z is not on the settlement schedule"
    )


def test_unordered_settlements_are_rejected() -> None:
    """Settlements must be strictly descending."""
    with pytest.raises(InvalidMarketData, match="not strictly descending at 2026-01-01T08:00:00Z"):
        validate_settlement_page([settlement(T0), settlement(datetime(2026, 1, 1, 8, tzinfo=UTC))])


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (settlement(T0, fixing_price=0.0), "fixing_price 0.0 is not a finite price > 0"),
        (settlement(T0, rate=math.nan), "funding_rate nan is not finite"),
        (settlement(datetime(2026, 1, 1)), "has no timezone"),
    ],
)
def test_bad_settlement_values(item: FundingSettlement, message: str) -> None:
    """A bad fixing price, funding rate or naive time is invalid and named."""
    with pytest.raises(InvalidMarketData, match=message):
        validate_settlement_page([item])


@pytest.mark.parametrize("error_type", [InvalidMarketData, ExchangeDecodeError])
def test_bad_market_data_errors_are_recoverable_exchange_errors(error_type: type) -> None:
    """As quantoxide's SDK deserialisation errors: exchange errors that restart the mode after
    their trials, never fatal."""
    assert issubclass(error_type, ExchangeError)
    assert issubclass(error_type, RecoverableError)
    assert not issubclass(error_type, FatalError)
    assert is_recoverable(error_type("x"))


def test_invalid_market_data_names_the_endpoint_when_given() -> None:
    """The endpoint, when known, prefixes the message; the detail is kept apart."""
    detail = "candle 2026-01-01T00:00:00Z: low 2.0 is above open 1.0"
    error = InvalidMarketData(detail, endpoint="/v3/futures/candles")
    assert f"/v3/futures/candles: {detail}" == str(error)
    assert ("/v3/futures/candles", detail) == (error.endpoint, error.detail)
    assert detail == str(InvalidMarketData(detail))
