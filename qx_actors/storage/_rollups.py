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
import itertools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ._backend import Backend
from ._models import KEPT_ROLLUP_LEVELS, VIEW_ROLLUPS, bucket_seconds, rollup_table
from ._postgres import PostgresBackend
from ._sqlite import SQLITE_ROWS_PER_STATEMENT

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
    return (
        f"SELECT {bucket} AS time, "
        "(array_agg(open ORDER BY time))[1] AS open, MAX(high) AS high, MIN(low) AS low, "
        "(array_agg(close ORDER BY time DESC))[1] AS close, SUM(volume) AS volume, "
        f"{minutes} AS minutes, bool_and(stable) AS stable, bool_or(gap) AS gap "
        f"FROM {table} {where}GROUP BY 1"
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
    not), at every level. Run it in the write transaction that changed those minutes."""
    if not spans:
        return
    tp = backend.time_param
    epoch_spans = [(_epoch(first), _epoch(last)) for first, last in spans]
    statements: list[str] = []
    values: list[Any] = []
    cursor = backend.cursor()
    for level in KEPT_ROLLUP_LEVELS:
        ranges = _aligned(epoch_spans, level[1])
        sql = refresh_sql(backend, level, ranged=True)
        params = [
            (tp(_EPOCH + timedelta(seconds=lo)), tp(_EPOCH + timedelta(seconds=hi)))
            for lo, hi in ranges
        ]
        if isinstance(backend, PostgresBackend):
            # every level in one round trip (each statement sees the ones before it)
            statements += [sql] * len(params)
            values += itertools.chain.from_iterable(params)
        elif len(params) == 1:
            cursor.execute(sql, params[0])
        else:
            cursor.executemany(sql, params)
    if statements:
        cursor.execute(";\n".join(statements), values)


#: one rollup row of a multi-row SQLite upsert: the bucket start as epoch seconds, formatted by
#: SQLite as the fixed-width UTC text (as the candle upsert does)
_SQLITE_ROLLUP_ROW = (
    "(strftime('%Y-%m-%dT%H:%M:%S', ?, 'unixepoch') || '.000000Z', ?, ?, ?, ?, ?, ?, ?, ?)"
)


@functools.lru_cache(maxsize=256)
def _sqlite_upsert_sql(name: str, rows: int) -> str:
    values = ", ".join([_SQLITE_ROLLUP_ROW] * rows)
    return (
        f"INSERT INTO {rollup_table(name)} ({_COLUMNS}) VALUES {values} "
        f"ON CONFLICT (time) DO UPDATE SET {_SET}"
    )


def refresh_after_upsert(
    backend: Backend, rows: Sequence[tuple[Any, ...]], spans: Sequence[tuple[datetime, datetime]]
) -> None:
    """Bring the rollups up to date after an upsert of ``rows`` (``(time, o, h, l, c, v,
    stable)``) whose minutes form ``spans``.

    The usual batch — one page of consecutive minutes, ascending, no duplicate: every bucket
    lying wholly inside the page holds exactly the page's minutes (no other can be stored
    there), so it is computed here from the page's values, at every level, and written with
    one multi-row upsert per level; only the (at most two per level) buckets at the page's
    ends, which may hold stored minutes too, are recomputed in SQL from their source (SQLite).
    PostgreSQL, and any other batch, go through :func:`refresh_rollups`.
    """
    if (
        # PostgreSQL aggregates a page faster than a multi-row VALUES is sent and planned
        isinstance(backend, PostgresBackend)
        or len(spans) != 1
        or _epoch(spans[0][1]) - _epoch(spans[0][0]) != (len(rows) - 1) * 60
        or rows[0][0] != spans[0][0]
    ):
        refresh_rollups(backend, spans)
        return
    # (the caller checked the times strictly ascending: consecutive minutes, one row each)
    first = _epoch(spans[0][0])
    after = first + 60 * len(rows)
    _, opens, highs, lows, closes, volumes, stables = zip(*rows, strict=True)
    plan: list[tuple[tuple[str, int, str | None], list[Any], list[int]]] = []
    for level in KEPT_ROLLUP_LEVELS:
        seconds = level[1]
        size = seconds // 60
        inner_first = -(-first // seconds) * seconds  # the first bucket starting in the page
        inner_after = after // seconds * seconds  # the end of the last bucket ending in it
        params: list[Any] = []
        if inner_after > inner_first:
            a0 = (inner_first - first) // 60
            end = (inner_after - first) // 60
            high, low, volume, stable = _bucket_columns(
                highs, lows, volumes, stables, a0, end, size
            )
            # in the order of a rollup row: time, open, high, low, close, volume, minutes,
            # stable, gap (every minute of the page was just written: gap cleared)
            params = list(
                itertools.chain.from_iterable(
                    zip(
                        range(inner_first, inner_after, seconds),
                        opens[a0:end:size],
                        high,
                        low,
                        closes[a0 + size - 1 : end : size],
                        volume,
                        itertools.repeat(size),
                        stable,
                        itertools.repeat(False),
                    )
                )
            )
        edges = {first // seconds * seconds, (after - 1) // seconds * seconds}
        edges -= set(range(inner_first, inner_after, seconds))
        plan.append((level, params, sorted(edges)))
    _sqlite_refresh(backend, plan)


def _bucket_columns(
    highs: Sequence[float],
    lows: Sequence[float],
    volumes: Sequence[float],
    stables: Sequence[bool],
    a0: int,
    end: int,
    size: int,
) -> tuple[Iterable[float], Iterable[float], Iterable[float], Iterable[bool]]:
    """Per bucket of ``size`` consecutive minutes in ``[a0, end)``: max high, min low, summed
    volume (in time order), all stable. Small buckets go through ``zip`` of strided slices
    (C speed), large ones slice by slice."""
    if size <= 30:

        def groups(values: Sequence[Any]) -> Iterable[tuple[Any, ...]]:
            return zip(*(values[a0 + j : end : size] for j in range(size)), strict=True)

        return (
            map(max, groups(highs)),
            map(min, groups(lows)),
            map(sum, groups(volumes)),
            map(all, groups(stables)),
        )
    starts = range(a0, end, size)
    return (
        [max(highs[a : a + size]) for a in starts],
        [min(lows[a : a + size]) for a in starts],
        [sum(volumes[a : a + size]) for a in starts],
        [all(stables[a : a + size]) for a in starts],
    )


def _edge_params(backend: Backend, lo: int, seconds: int) -> tuple[Any, Any]:
    tp = backend.time_param
    return tp(_EPOCH + timedelta(seconds=lo)), tp(_EPOCH + timedelta(seconds=lo + seconds))


def _sqlite_refresh(
    backend: Backend, plan: list[tuple[tuple[str, int, str | None], list[Any], list[int]]]
) -> None:
    cursor = backend.cursor()
    step = SQLITE_ROWS_PER_STATEMENT * 9
    for level, params, edges in plan:
        for chunk in range(0, len(params), step):
            part = params[chunk : chunk + step]
            cursor.execute(_sqlite_upsert_sql(level[0], len(part) // 9), part)
        sql = refresh_sql(backend, level, ranged=True)
        for lo in edges:
            cursor.execute(sql, _edge_params(backend, lo, level[1]))


def rebuild_rollups(backend: Backend) -> None:
    """Replace every rollup with the buckets of the stored candles (the schema migration and a
    new schema over existing candles). Run it inside a write transaction."""
    for level in KEPT_ROLLUP_LEVELS:
        backend.execute(f"DELETE FROM {rollup_table(level[0])}")
        backend.execute(refresh_sql(backend, level, ranged=False))
