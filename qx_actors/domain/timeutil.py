"""UTC time helpers shared by every layer: minute arithmetic and the exchange's time format."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = [
    "DAY",
    "FIRST_CANDLE_TIME",
    "FIRST_SETTLEMENT_TIME",
    "HOUR",
    "MINUTE",
    "UNSTABLE_AGE",
    "ceil_minute",
    "floor_day",
    "floor_minute",
    "format_optional_utc",
    "format_rfc3339_ms",
    "format_utc",
    "from_epoch_ms",
    "is_whole_minute",
    "parse_rfc3339",
    "require_utc",
    "to_epoch_ms",
    "utc_now",
]

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

#: The first 1-minute candle LN Markets has.
FIRST_CANDLE_TIME = datetime(2020, 3, 1, tzinfo=UTC)
#: The first funding settlement LN Markets has.
FIRST_SETTLEMENT_TIME = datetime(2021, 1, 11, 8, tzinfo=UTC)
#: Candles younger than this may still be revised by the exchange.
UNSTABLE_AGE = HOUR

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def require_utc(value: datetime, what: str = "time") -> datetime:
    """Return ``value`` converted to UTC; a naive datetime is a ``ValueError`` naming ``what``."""
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {value.isoformat()}")
    return value.astimezone(UTC)


def floor_minute(value: datetime) -> datetime:
    """The start of the minute containing ``value``."""
    return value.replace(second=0, microsecond=0)


def ceil_minute(value: datetime) -> datetime:
    """The first whole minute at or after ``value``."""
    floored = floor_minute(value)
    return floored if floored == value else floored + MINUTE


def floor_day(value: datetime) -> datetime:
    """Midnight UTC of the day containing ``value``."""
    return value.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def is_whole_minute(value: datetime) -> bool:
    """Whether ``value`` has no seconds or sub-seconds."""
    return value.second == 0 and value.microsecond == 0


def format_rfc3339_ms(value: datetime) -> str:
    """The exchange's time format: ``2026-01-01T00:00:00.000Z``."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 / ISO 8601 time; a missing offset is a ``ValueError``."""
    # 3.11 parses "Z", not RFC 3339's lowercase "z"
    parsed = datetime.fromisoformat(text.replace("z", "Z"))
    return require_utc(parsed, f"time {text!r}")


def to_epoch_ms(value: datetime) -> int:
    """Milliseconds since the Unix epoch."""
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def from_epoch_ms(ms: float) -> datetime:
    """UTC datetime from milliseconds since the Unix epoch."""
    return _EPOCH + timedelta(milliseconds=ms)


def format_utc(value: datetime) -> str:
    """A time as ISO 8601 UTC with a ``Z`` suffix, for messages: ``2026-01-01T00:00:30Z``."""
    if value.tzinfo is None:
        return value.isoformat() + " (naive)"
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def format_optional_utc(value: datetime | None) -> str | None:
    """:func:`format_utc`, ``None`` kept (for JSON-ready summaries)."""
    return None if value is None else format_utc(value)
