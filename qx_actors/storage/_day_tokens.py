"""Day tokens (``ohlc_day_tokens``): what tells a reader which days of the columnar copy are
current.

The writer calls :func:`touch_days` in every transaction that changes 1-minute candles, with
the UTC days those candles fall in: each gets a new random token. A copy of a day taken in a
snapshot where its token was ``t`` is exactly the day's candles in any later snapshot whose
token is still ``t`` (tokens are random 63-bit numbers: a restored backup or another database
at the same path never presents the token of a different state). No pyarrow here: the writer
needs none.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from qx_actors.domain.timeutil import DAY

from ._backend import Backend
from ._postgres import PostgresBackend

__all__ = [
    "DAY",
    "TOKENS_TABLE",
    "day_number",
    "day_start",
    "days_of_spans",
    "new_token",
    "read_tokens",
    "rebuild_tokens",
    "touch_days",
]

TOKENS_TABLE = "ohlc_day_tokens"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: days per multi-row statement (2 parameters each)
_ROWS_PER_STATEMENT = 400


def new_token() -> int:
    """A random positive 63-bit token (fits a signed BIGINT)."""
    return int.from_bytes(os.urandom(8), "big") >> 1


def day_number(time: datetime) -> int:
    """Days since 1970-01-01 of the UTC day holding ``time``."""
    return (time - _EPOCH) // DAY


def day_start(day: int) -> datetime:
    """The start (UTC midnight) of the day numbered ``day``: the inverse of :func:`day_number`."""
    return _EPOCH + day * DAY


def days_of_spans(spans: Iterable[tuple[datetime, datetime]]) -> list[int]:
    """The day numbers holding a minute of the inclusive ``spans``, ascending, once each."""
    days: set[int] = set()
    for first, last in spans:
        days.update(range(day_number(first), day_number(last) + 1))
    return sorted(days)


def touch_days(backend: Backend, days: Sequence[int]) -> None:
    """Give ``days`` (day numbers) one new token; run it in the transaction that changed
    their candles."""
    if not days:
        return
    tp = backend.time_param
    token = new_token()
    for at in range(0, len(days), _ROWS_PER_STATEMENT):
        chunk = days[at : at + _ROWS_PER_STATEMENT]
        values = ", ".join(["(?, ?)"] * len(chunk))
        params = [v for d in chunk for v in (tp(day_start(d)), token)]
        backend.defer(
            f"INSERT INTO {TOKENS_TABLE} (day, token) VALUES {values} "
            "ON CONFLICT (day) DO UPDATE SET token = excluded.token",
            params,
        )


def read_tokens(backend: Backend, first_day: int, after_day: int) -> dict[int, int]:
    """Day number -> token of the days in ``[first_day, after_day)`` that have one."""
    tp, tv = backend.time_param, backend.time_value
    cursor = backend.execute(
        f"SELECT day, token FROM {TOKENS_TABLE} WHERE day >= ? AND day < ?",
        (tp(day_start(first_day)), tp(day_start(after_day))),
    )
    return {day_number(tv(day)): int(token) for day, token in cursor.fetchall()}


def rebuild_tokens(backend: Backend) -> None:
    """A new token for every day holding a stored candle, nothing else (a new schema over
    existing candles, the migration). Run it inside a write transaction."""
    backend.execute(f"DELETE FROM {TOKENS_TABLE}")
    if isinstance(backend, PostgresBackend):
        backend.execute(
            f"INSERT INTO {TOKENS_TABLE} (day, token) SELECT d, "
            "floor(random() * 9.2e18)::bigint FROM "
            "(SELECT DISTINCT date_trunc('day', time) AS d FROM ohlc_candles) AS t"
        )
        return
    backend.execute(
        f"INSERT INTO {TOKENS_TABLE} (day, token) "
        "SELECT substr(time, 1, 10) || 'T00:00:00.000000Z', random() & 9223372036854775807 "
        "FROM ohlc_candles GROUP BY substr(time, 1, 10)"
    )
