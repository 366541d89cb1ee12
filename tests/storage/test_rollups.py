"""Rollups (schema version 3): the buckets the writer keeps equal consolidating the stored
minutes, whatever was written, rewritten or flagged; the upgrade from version 2 (and 1) builds
them once; the read API answers from them, also as Arrow.

Every comparison is against a brute-force consolidation of the rows of ``ohlc_candles`` read
back with a plain driver connection. Volumes are multiples of 1/4, so sums are exact in any
order and the comparison can be exact.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_helpers import BASE, minute, run_sql, run_statements, wipe

from qx_actors.domain.timeutil import MINUTE
from qx_actors.domain.values import Candle
from qx_actors.errors import StorageError
from qx_actors.storage import (
    BUCKET_SECONDS,
    ROLLUP_LEVELS,
    SCHEMA_VERSION,
    CandleRow,
    Database,
    Storage,
    open_storage,
    rollup_table,
)
from qx_actors.storage._backend import guard
from qx_actors.storage._models import (
    MODELS,
    ROLLUP_MODELS,
    VIEW_ROLLUPS,
    OhlcCoverage,
    QxSchema,
    as_utc,
    bind_models,
    from_utc_text,
)
from qx_actors.storage._open import open_backend
from qx_actors.storage._queries import rebuild_coverage
from qx_actors.storage._schema import _EXTRA_DDL

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
DAYS = 3
SPAN = DAYS * 1440
#: a clock after every written minute: every bucket has ended
LATER = minute(SPAN + 2 * 1440)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Bucket = tuple[datetime, float, float, float, float, float, int, bool, bool]
Minute = tuple[datetime, float, float, float, float, float, bool, bool]


def as_time(value: Any) -> datetime:
    """A time column value of either backend as an aware UTC datetime."""
    return from_utc_text(value) if isinstance(value, str) else as_utc(value)


MINUTES_SQL = (
    "SELECT time, open, high, low, close, volume, stable, gap FROM ohlc_candles ORDER BY time"
)


def as_minutes(rows: list[tuple[Any, ...]]) -> list[Minute]:
    """Rows of :data:`MINUTES_SQL`: (time, o, h, l, c, v, stable, gap)."""
    return [(as_time(t), o, h, lo, c, v, bool(s), bool(g)) for t, o, h, lo, c, v, s, g in rows]


def stored_minutes(url: str) -> list[Minute]:
    """Every row of ``ohlc_candles``: (time, o, h, l, c, v, stable, gap), oldest first."""
    return as_minutes(run_sql(url, MINUTES_SQL))


def brute_buckets(
    minutes: Iterable[Minute],
    seconds: int,
) -> list[Bucket]:
    """Consolidate minutes into epoch-aligned buckets the obvious way (stable as stored)."""
    step = timedelta(seconds=seconds)
    groups: dict[datetime, list[Any]] = {}
    for row in sorted(minutes):
        groups.setdefault(EPOCH + (row[0] - EPOCH) // step * step, []).append(row)
    return [
        (
            start,
            rows[0][1],
            max(r[2] for r in rows),
            min(r[3] for r in rows),
            rows[-1][4],
            sum(r[5] for r in rows),
            len(rows),
            all(r[6] for r in rows),
            any(r[7] for r in rows),
        )
        for start, rows in sorted(groups.items())
    ]


def rollup_sql(name: str) -> str:
    """Every row of a rollup table, oldest first."""
    return (
        "SELECT time, open, high, low, close, volume, minutes, stable, gap "
        f"FROM {rollup_table(name)} ORDER BY time"
    )


def as_buckets(rows: list[tuple[Any, ...]]) -> list[Bucket]:
    """Rows of :func:`rollup_sql`."""
    return [
        (as_time(t), o, h, lo, c, v, int(m), bool(s), bool(g))
        for t, o, h, lo, c, v, m, s, g in rows
    ]


def rollup_rows(url: str, name: str) -> list[Bucket]:
    """Every row of a rollup table, oldest first."""
    return as_buckets(run_sql(url, rollup_sql(name)))


def assert_rollups_match(url: str) -> None:
    """Every rollup table equals the brute-force consolidation of the stored minutes (all
    read through one connection)."""
    rows, *levels = run_statements(
        url, [(MINUTES_SQL, ()), *((rollup_sql(name), ()) for name, _, _ in ROLLUP_LEVELS)]
    )
    minutes = as_minutes(rows)
    for (name, seconds, _), level_rows in zip(ROLLUP_LEVELS, levels, strict=True):
        assert brute_buckets(minutes, seconds) == as_buckets(level_rows), name


def as_candle_rows(buckets: list[Bucket], seconds: int, now: datetime) -> list[CandleRow]:
    """Buckets as the read API returns them (stable: as stored and ended by ``now``)."""
    step = timedelta(seconds=seconds)
    return [
        CandleRow(t, o, h, lo, c, v, s and t + step <= now, g, m)
        for t, o, h, lo, c, v, m, s, g in buckets
    ]


@pytest.fixture
def storage(storage_url: str) -> Iterator[Storage]:
    """An open storage on a fresh database."""
    with open_storage(storage_url) as opened:
        yield opened


def candles_at(minutes: Iterable[int], price: float, volume_quarters: int) -> list[Candle]:
    """Candles at ``minutes`` whose values depend on the minute and ``price``."""
    out = []
    for n in minutes:
        base = price + (n * 7919 % 1000) / 8
        spread = (n * 104729 % 50) / 4
        out.append(
            Candle(
                minute(n), base, base + spread + 1.0, base - spread, base + spread / 2,
                ((n % 5) + volume_quarters) / 4,
            )
        )  # fmt: skip
    return out


minute_batches = st.one_of(
    # a page: a contiguous block, newest first as the exchange sends it (or not)
    st.tuples(st.integers(0, SPAN - 1), st.integers(1, 700), st.booleans()).map(
        lambda t: list(range(t[0], min(t[0] + t[1], SPAN)))[:: -1 if t[2] else 1]
    ),
    # scattered minutes, duplicates and any order
    st.lists(st.integers(0, SPAN - 1), min_size=1, max_size=30),
)
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("upsert"),
            minute_batches,
            st.floats(1.0, 100_000.0, allow_nan=False),
            st.integers(0, 40),
            # the writer's clock: late (every minute stable) or among the minutes (young ones)
            st.one_of(st.just(SPAN + 1440), st.integers(0, SPAN + 60)),
        ),
        st.tuples(
            st.just("holes"),
            st.lists(
                st.tuples(st.integers(0, SPAN - 1), st.integers(0, 30)), min_size=1, max_size=3
            ),
        ),
        st.tuples(
            st.just("empty"),
            st.lists(
                st.tuples(st.integers(0, SPAN - 1), st.integers(0, 120)), min_size=1, max_size=3
            ),
        ),
    ),
    min_size=1,
    max_size=8,
)


@SETTINGS
@given(ops=operations)
def test_rollups_equal_consolidating_the_stored_minutes(
    storage: Storage, storage_url: str, ops: list[tuple[Any, ...]]
) -> None:
    """After random writes, rewrites (new values, stable or not), flagged holes and
    verified-empty ranges, every bucket at every level equals consolidating the stored
    minutes: open/high/low/close/volume, ``minutes``, unstable if one minute is, gap if one
    minute is. Verified-empty minutes are simply absent. The read API answers the same."""
    wipe(storage_url)
    for op in ops:
        if op[0] == "upsert":
            _, batch, price, quarters, now = op
            storage.upsert_candles(candles_at(batch, price, quarters), now=minute(now))
        elif op[0] == "holes":
            storage.flag_holes([(minute(a), minute(a + n)) for a, n in op[1]])
        else:
            storage.record_verified_empty([(minute(a), minute(a + n)) for a, n in op[1]], now=LATER)
    assert_rollups_match(storage_url)

    minutes = stored_minutes(storage_url)
    # with the catalog (3m ... 45m consolidated with Arrow from its minutes) and without it
    # (a SQL GROUP BY of the database's minutes)
    with Database(storage_url) as reader, Database(storage_url, catalog=False) as plain:
        for resolution in ("3m", "45m", "1h", "1d", "2h"):
            seconds = BUCKET_SECONDS[resolution]
            expected = as_candle_rows(brute_buckets(minutes, seconds), seconds, LATER)
            assert expected == reader.candles(BASE, minute(SPAN), resolution, now=LATER)
            assert expected == plain.candles(BASE, minute(SPAN), resolution, now=LATER)


def test_a_rewritten_minute_updates_its_buckets_at_every_level(storage: Storage) -> None:
    """A re-fetched minute with new values changes the bucket of every level holding it."""
    late = minute(SPAN + 1440)
    storage.upsert_candles(candles_at(range(0, 1440), 100.0, 0), now=late)
    storage.upsert_candles([Candle(minute(700), 50.0, 1_000_000.0, 1.0, 60.0, 1000.0)], now=late)
    url = storage._backend.url
    assert_rollups_match(url)
    for name, _, _ in ROLLUP_LEVELS:
        highs = [row[2] for row in rollup_rows(url, name)]
        assert 1_000_000.0 == max(highs), name
        assert 1 == highs.count(1_000_000.0), name


def test_young_minutes_make_their_buckets_unstable_until_rewritten(storage: Storage) -> None:
    """Minutes written less than an hour before the writer's clock are unstable, and so is
    every bucket holding one; rewritten once old enough, the buckets become stable."""
    url = storage._backend.url
    storage.upsert_candles(candles_at(range(0, 1440), 100.0, 0), now=minute(1440 + 30))
    day = rollup_rows(url, "1d")
    assert [(BASE, 1440, False)] == [(t, m, s) for t, *_, m, s, _ in day]
    hours = rollup_rows(url, "1h")
    # minutes from 1410 on are younger than an hour: the last hour only
    assert [True] * 23 + [False] == [s for *_, s, _ in hours]
    storage.upsert_candles(candles_at(range(1380, 1440), 100.0, 0), now=minute(3 * 1440))
    assert [True] * 24 == [s for *_, s, _ in rollup_rows(url, "1h")]
    assert [True] == [s for *_, s, _ in rollup_rows(url, "1d")]
    assert_rollups_match(url)


def test_partial_buckets_count_their_minutes(storage: Storage) -> None:
    """``minutes`` tells how complete a bucket is; a bucket with no stored minute is absent."""
    url = storage._backend.url
    storage.upsert_candles(candles_at([0, 1, 2, 5, 61, 62], 10.0, 0), now=LATER)
    assert [(minute(0), 4), (minute(60), 2)] == [
        (t, m) for t, *_, m, _s, _g in rollup_rows(url, "1h")
    ]
    assert [(minute(0), 3), (minute(3), 1), (minute(60), 2)] == [
        (t, m) for t, *_, m, _s, _g in rollup_rows(url, "3m")
    ]


# --- upgrade ---------------------------------------------------------------------------------


def create_old_database(url: str, version: int, minutes: Iterable[int]) -> None:
    """A database as schema ``version`` (1 or 2) created it, holding candles at ``minutes``
    (some unstable, some flagged ``gap``), written with plain SQL."""
    backend = open_backend(url)
    try:
        models = bind_models(backend.db)
        absent = set(ROLLUP_MODELS) | ({OhlcCoverage} if version < 2 else set())
        with backend.write_txn():
            backend.db.create_tables([models[m] for m in MODELS if m not in absent], safe=True)
            for ddl in _EXTRA_DDL:
                backend.execute(ddl)
            for v in range(1, version + 1):
                models[QxSchema].insert(version=v, applied_at=LATER).execute()
            tp = backend.time_param
            for c in candles_at(minutes, 500.0, 3):
                n = (c.time - BASE) // MINUTE
                backend.execute(
                    "INSERT INTO ohlc_candles (time, open, high, low, close, volume, "
                    "created_at, updated_at, gap, stable) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (tp(c.time), c.open, c.high, c.low, c.close, c.volume, tp(LATER),
                     tp(LATER), n % 97 == 0, n % 13 != 0),
                )  # fmt: skip
            if version >= 2:
                rebuild_coverage(backend)
    finally:
        backend.close()


@pytest.mark.parametrize("version", [2, 1])
def test_upgrade_builds_the_rollups_once_from_the_stored_candles(
    storage_url: str, version: int
) -> None:
    """Opening a version-2 (or version-1) database for writing creates the rollup tables,
    builds them from the stored candles and records versions 3, 4 and 5; a reader of the old
    database (consolidating its minutes) and of the upgraded one (reading the rollups) agree;
    writes keep the rollups from then on."""
    rng = random.Random(version)
    minutes = {n for n in range(SPAN) if rng.random() < 0.9} - set(range(1500, 2100))
    create_old_database(storage_url, version, minutes)
    with Database(storage_url) as reader:
        before = {r: reader.candles(BASE, minute(SPAN), r, now=LATER) for r in BUCKET_SECONDS}

    with open_storage(storage_url) as storage:
        assert SCHEMA_VERSION == storage.schema_version() == 5
        assert_rollups_match(storage_url)
        with Database(storage_url) as reader:
            after = {r: reader.candles(BASE, minute(SPAN), r, now=LATER) for r in BUCKET_SECONDS}
        assert before == after
        storage.upsert_candles(candles_at(range(1500, 2100), 7.0, 1), now=LATER)
        assert_rollups_match(storage_url)
    assert [(v,) for v in range(1, 6)] == run_sql(
        storage_url, "SELECT version FROM qx_schema ORDER BY version"
    )
    # opening again builds nothing twice
    with open_storage(storage_url):
        assert_rollups_match(storage_url)
    assert [(5,)] == run_sql(storage_url, "SELECT MAX(version) FROM qx_schema")


def create_version_4_database(url: str, minutes: Iterable[int]) -> None:
    """A database as schema version 4 left it: every rollup a table, and the four that version
    5 no longer keeps (3m ... 30m) holding a bucket that disagrees with the minutes (what a
    table nobody keeps any more would soon hold)."""
    create_old_database(url, 2, minutes)
    with open_storage(url):  # -> version 5; then back to version 4's layout
        pass
    backend = open_backend(url)
    try:
        like = (
            "(LIKE ohlc_rollup_1h INCLUDING ALL)"
            if backend.name == "postgresql"
            else "AS SELECT * FROM ohlc_rollup_1h WHERE FALSE"
        )
        with backend.write_txn():
            for name in VIEW_ROLLUPS:
                backend.execute(f"DROP VIEW {rollup_table(name)}")
                backend.execute(f"CREATE TABLE {rollup_table(name)} {like}")
                backend.execute(
                    f"INSERT INTO {rollup_table(name)} (time, open, high, low, close, volume, "
                    "minutes, stable, gap) VALUES (?, 1, 2, 0.5, 1, 1, 1, TRUE, FALSE)",
                    (backend.time_param(BASE),),
                )
            backend.execute("DELETE FROM qx_schema WHERE version = 5")
    finally:
        backend.close()


def test_upgrade_from_version_4_makes_the_finer_rollups_views(storage_url: str) -> None:
    """A version-4 database whose 3m ... 30m tables are stale: a reader of the new version
    answers every resolution from the minutes (not from the stale tables), opening it for
    writing records version 5 with views of the same names equal to the minutes' buckets,
    and reads are unchanged by the upgrade."""
    rng = random.Random(4)
    minutes = {n for n in range(SPAN) if rng.random() < 0.9}
    create_version_4_database(storage_url, minutes)
    assert [(4,)] == run_sql(storage_url, "SELECT MAX(version) FROM qx_schema")
    stored = stored_minutes(storage_url)
    with Database(storage_url) as reader:
        before = {r: reader.candles(BASE, minute(SPAN), r, now=LATER) for r in BUCKET_SECONDS}
    for resolution, seconds in BUCKET_SECONDS.items():
        expected = as_candle_rows(brute_buckets(stored, seconds), seconds, LATER)
        assert expected == before[resolution], resolution

    with open_storage(storage_url) as storage:
        assert SCHEMA_VERSION == storage.schema_version() == 5
        assert_rollups_match(storage_url)
        storage.upsert_candles(candles_at(range(SPAN - 100, SPAN), 9.0, 2), now=LATER)
        assert_rollups_match(storage_url)
    with Database(storage_url) as reader:
        after = reader.candles(BASE, minute(SPAN - 100), "5m", now=LATER)
    assert before["5m"][: len(after)] == after


# --- Arrow ---------------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", ["1m", "5m", "45m", "1h", "3h", "1d"])
def test_candles_arrow_equals_candles(storage: Storage, storage_url: str, resolution: str) -> None:
    """``candles_arrow`` holds exactly what ``candles`` returns, times as UTC timestamps."""
    import pyarrow as pa

    storage.upsert_candles(candles_at(range(0, 2000, 1), 300.0, 2), now=minute(1990))
    storage.flag_holes([(minute(2000), minute(2005))])
    now = minute(1990)
    with Database(storage_url) as reader:
        rows = reader.candles(minute(17), minute(1999), resolution, now=now)
        table = reader.candles_arrow(minute(17), minute(1999), resolution, now=now)
        empty = reader.candles_arrow(minute(5000), minute(6000), resolution, now=now)
    assert pa.timestamp("us", tz="UTC") == table.schema.field("time").type
    assert [pa.float64()] * 5 == table.schema.types[1:6]
    assert [pa.bool_(), pa.bool_(), pa.int32()] == table.schema.types[6:]
    assert 0 == empty.num_rows and table.schema == empty.schema
    as_rows = [CandleRow(**record) for record in table.to_pylist()]
    assert rows == as_rows
    assert all(r.time.tzinfo is not None and r.time.utcoffset() == timedelta(0) for r in as_rows)


def test_the_reader_writes_nothing(storage_url: str, storage: Storage) -> None:
    """The read API's connection is read-only (SQLite ``mode=ro``, PostgreSQL read-only
    transactions): even a statement sent by mistake can't write."""
    storage.upsert_candles(candles_at(range(10), 1.0, 0), now=LATER)
    with Database(storage_url) as reader:
        backend = reader._backend
        with (
            pytest.raises(StorageError, match=r"read-only|readonly"),
            guard(backend, "write"),
            backend.read_txn(),
        ):
            backend.execute("DELETE FROM ohlc_candles")
        assert 10 == len(reader.candles(BASE, minute(10), now=LATER))
