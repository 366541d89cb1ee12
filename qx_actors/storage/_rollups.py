"""Rollups: the consolidated candles (1h, 4h, 1d) kept by the writer beside the 1-minute ones,
and the views of the finer ones (3m ... 30m).

Each rollup table ``ohlc_rollup_<resolution>`` of :data:`~._models.KEPT_ROLLUP_LEVELS` holds
one row per epoch-aligned bucket that has at least one stored minute (see
:class:`~._models.OhlcRollup`). The writer refreshes the buckets a write touched, in the same
transaction, level by level: 1h from the minutes, 4h from 1h, 1d from 4h. A refresh
recomputes a bucket from its source rows (never adds a delta), so rewriting a minute,
flagging it unstable or marking it a gap gives the same bucket as building everything again.
The finer rollups (schema version 5) are views over ``ohlc_candles`` of the same name and
columns, and the reader consolidates them from the minutes of the range it reads
(:func:`grouped_minutes_sql`): never stale, and no rows for the writer to keep.

Volume is a sum of floats: a bucket's volume equals the sum of its minutes' volumes up to the
rounding of the order in which they are added (exact for volumes that add exactly).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from ._backend import Backend
from ._models import KEPT_ROLLUP_LEVELS, VIEW_ROLLUPS, bucket_seconds, rollup_table
from ._postgres import PostgresBackend

CANDLES = "ohlc_candles"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: ranges of buckets at most this many buckets apart are refreshed by one statement
_JOIN_WITHIN = 16

_SET = (
    "open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close, "
    "volume = excluded.volume, minutes = excluded.minutes, stable = excluded.stable, "
    "gap = excluded.gap"
)
_COLUMNS = "time, open, high, low, close, volume, minutes, stable, gap"


def _source(source: str | None) -> tuple[str, str]:
    """(table, minutes expression) of a level's source."""
    if source is None:
        return CANDLES, "COUNT(*)"
    return rollup_table(source), "SUM(minutes)"


def _sqlite_select(seconds: int, source: str | None, where: str) -> str:
    """The buckets of ``seconds`` of a source's rows (``where``: its filter, or empty), as
    rollup rows named like the columns, in no particular order."""
    table, minutes = _source(source)
    # open/close: the row at the group's first/last time, looked up by primary key
    return (
        "SELECT strftime('%Y-%m-%dT%H:%M:%S', g.b, 'unixepoch') || '.000000Z' AS time, "
        f"(SELECT open FROM {table} WHERE time = g.t0) AS open, g.high AS high, g.low AS low, "
        f"(SELECT close FROM {table} WHERE time = g.t1) AS close, g.volume AS volume, "
        "g.minutes AS minutes, g.stable AS stable, g.gap AS gap "
        f"FROM (SELECT unixepoch(time) / {seconds} * {seconds} AS b, MIN(time) AS t0, "
        "MAX(time) AS t1, MAX(high) AS high, MIN(low) AS low, SUM(volume) AS volume, "
        f"{minutes} AS minutes, MIN(stable) AS stable, MAX(gap) AS gap FROM {table} "
        f"{where}GROUP BY b) AS g"
    )


@functools.cache
def _sqlite_sql(name: str, seconds: int, source: str | None, ranged: bool) -> str:
    where = "WHERE time >= ? AND time < ? " if ranged else ""
    return (
        f"INSERT INTO {rollup_table(name)} ({_COLUMNS}) {_sqlite_select(seconds, source, where)} "
        # WHERE true: SQLite's parser needs it between SELECT ... and ON CONFLICT
        f"WHERE true ORDER BY 1 ON CONFLICT (time) DO UPDATE SET {_SET}"
    )


def _postgres_select(seconds: int, source: str | None, where: str, date_bin: bool) -> str:
    """As :func:`_sqlite_select`, for PostgreSQL."""
    table, minutes = _source(source)
    # date_bin (PostgreSQL >= 14) is ~4x faster than the epoch arithmetic (numeric)
    bucket = (
        f"date_bin('{seconds} seconds', time, TIMESTAMPTZ '1970-01-01 00:00:00+00')"
        if date_bin
        else f"to_timestamp(floor(extract(epoch FROM time) / {seconds}) * {seconds})"
    )
    # open/close: the row at the group's first/last time, looked up by primary key (~35 %
    # faster than array_agg(... ORDER BY time), which sorts every group)
    return (
        f"SELECT g.b AS time, (SELECT open FROM {table} WHERE time = g.t0) AS open, "
        f"g.high AS high, g.low AS low, (SELECT close FROM {table} WHERE time = g.t1) AS close, "
        "g.volume AS volume, g.minutes AS minutes, g.stable AS stable, g.gap AS gap "
        f"FROM (SELECT {bucket} AS b, MIN(time) AS t0, MAX(time) AS t1, MAX(high) AS high, "
        f"MIN(low) AS low, SUM(volume) AS volume, {minutes} AS minutes, "
        f"bool_and(stable) AS stable, bool_or(gap) AS gap FROM {table} {where}GROUP BY 1) AS g"
    )


@functools.cache
def _postgres_sql(name: str, seconds: int, source: str | None, ranged: bool, date_bin: bool) -> str:
    where = "WHERE time >= %s AND time < %s " if ranged else ""
    return (
        f"INSERT INTO {rollup_table(name)} ({_COLUMNS}) "
        f"{_postgres_select(seconds, source, where, date_bin)} "
        f"ON CONFLICT (time) DO UPDATE SET {_SET}"
    )


def _date_bin(backend: PostgresBackend) -> bool:
    return backend.server_version() >= 140000


def grouped_minutes_sql(backend: Backend, seconds: int, columns: str) -> str:
    """A query of the buckets of ``seconds`` holding a stored minute of ``[?, ?)`` (two time
    parameters, bucket-aligned), oldest first, as rollup rows: ``columns`` of them."""
    where = "WHERE time >= ? AND time < ? "
    if isinstance(backend, PostgresBackend):
        grouped = _postgres_select(seconds, None, where, _date_bin(backend))
    else:
        grouped = _sqlite_select(seconds, None, where)
    return f"SELECT {columns} FROM ({grouped}) AS r ORDER BY time"


def view_sql(backend: Backend, name: str) -> str:
    """The ``CREATE VIEW`` of the rollup ``name`` consolidating every stored minute."""
    seconds = bucket_seconds(name)
    if isinstance(backend, PostgresBackend):
        select = _postgres_select(seconds, None, "", _date_bin(backend))
        return f"CREATE OR REPLACE VIEW {rollup_table(name)} AS {select}"
    return f"CREATE VIEW IF NOT EXISTS {rollup_table(name)} AS {_sqlite_select(seconds, None, '')}"


def create_rollup_views(backend: Backend) -> None:
    """Make each rollup of :data:`VIEW_ROLLUPS` a view (dropping the table it was before
    schema version 5, whose rows would go stale). Run it inside a write transaction."""
    tables = set(backend.db.get_tables())
    for name in VIEW_ROLLUPS:
        if rollup_table(name) in tables:
            backend.execute(f"DROP TABLE {rollup_table(name)}")
        backend.execute(view_sql(backend, name))


def refresh_sql(backend: Backend, level: tuple[str, int, str | None], *, ranged: bool) -> str:
    """The statement (re)building a level's buckets from its source; ``ranged``: only the
    source rows with ``lo <= time < hi`` (two time parameters, both bucket-aligned)."""
    name, seconds, source = level
    if isinstance(backend, PostgresBackend):
        return _postgres_sql(name, seconds, source, ranged, _date_bin(backend))
    return _sqlite_sql(name, seconds, source, ranged)


def _epoch(time: datetime) -> int:
    return (time - _EPOCH) // timedelta(seconds=1)


def _aligned(spans: Iterable[tuple[int, int]], seconds: int) -> list[tuple[int, int]]:
    """Half-open epoch ranges of whole buckets covering the inclusive ``spans``, nearby ones
    joined (recomputing a few untouched buckets costs less than another statement)."""
    ranges: list[tuple[int, int]] = []
    for first, last in sorted(spans):
        lo = first // seconds * seconds
        hi = last // seconds * seconds + seconds
        if ranges and lo <= ranges[-1][1] + _JOIN_WITHIN * seconds:
            if hi > ranges[-1][1]:
                ranges[-1] = (ranges[-1][0], hi)
        else:
            ranges.append((lo, hi))
    return ranges


def refresh_rollups(backend: Backend, spans: Sequence[tuple[datetime, datetime]]) -> None:
    """Recompute every bucket holding a minute of the inclusive minute ``spans`` (sorted or
    not), at every level: one ``INSERT ... SELECT ... GROUP BY ... ON CONFLICT DO UPDATE`` per
    level and range of buckets (a page of minutes: three statements, the just-written minutes
    read back from the page cache). Run it in the write transaction that changed them."""
    if not spans:
        return
    tp = backend.time_param
    epoch_spans = [(_epoch(first), _epoch(last)) for first, last in spans]
    for level in KEPT_ROLLUP_LEVELS:
        ranges = _aligned(epoch_spans, level[1])
        sql = refresh_sql(backend, level, ranged=True)
        params = [
            (tp(_EPOCH + timedelta(seconds=lo)), tp(_EPOCH + timedelta(seconds=hi)))
            for lo, hi in ranges
        ]
        if isinstance(backend, PostgresBackend):
            # in one round trip with the batch's other writes (each sees the ones before it)
            for pair in params:
                backend.defer_driver_sql(sql, pair)
        elif len(params) == 1:
            backend.cursor().execute(sql, params[0])
        else:
            backend.cursor().executemany(sql, params)


def rebuild_rollups(backend: Backend) -> None:
    """Replace every rollup with the buckets of the stored candles (the schema migration and a
    new schema over existing candles). Run it inside a write transaction."""
    for level in KEPT_ROLLUP_LEVELS:
        backend.execute(f"DELETE FROM {rollup_table(level[0])}")
        backend.execute(refresh_sql(backend, level, ranged=False))
