"""Adopting a quantoxide database: what is detected, what is added, what is never touched.

Every database here is a real PostgreSQL database; the quantoxide ones are built from
quantoxide 0.5.4's or 0.6.0's own migration SQL (``tests/quantoxide_db.py``; the tests of a
quantoxide database run once per release) and filled with rows the way quantoxide writes
them. "Unchanged" is checked on the catalog (columns, types, defaults, constraints, indexes,
triggers, the trigger function) and on every row of every quantoxide table.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from qx_actors.domain.timeutil import MINUTE
from qx_actors.domain.values import Candle, FundingSettlement, PriceTick
from qx_actors.errors import SchemaError
from qx_actors.simulator import ManualClock
from qx_actors.simulator.market import Market
from qx_actors.storage import (
    SCHEMA_VERSION,
    AdoptOutcome,
    AdoptRefused,
    Database,
    DatabaseKind,
    QuantoxideDatabaseError,
    adopt_database,
    classify_database,
    create_schema,
    open_storage,
    rollup_table,
)
from qx_actors.storage._backend import Backend
from qx_actors.storage._models import MODELS
from qx_actors.storage._open import open_backend
from tests.quantoxide_db import (
    QUANTOXIDE_MIGRATIONS,
    QUANTOXIDE_RELEASES,
    QUANTOXIDE_TABLE_NAMES,
    connect,
    create_quantoxide_schema,
    fill_quantoxide,
    rows,
    snapshot,
    tables,
)

pytestmark = pytest.mark.postgres

#: a fixed instant: the stored rows' flags depend on it, never on the wall clock
NOW = datetime(2026, 3, 4, 13, 37, tzinfo=UTC)
START = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
LAST = NOW - 20 * MINUTE
#: a hole quantoxide left in the stored candles (e.g. exchange downtime)
HOLE = (datetime(2026, 3, 3, 10, 0, tzinfo=UTC), datetime(2026, 3, 3, 10, 14, tzinfo=UTC))

#: the tables adoption adds: every table of ours that quantoxide does not have
ADDED = {m._meta.table_name for m in MODELS} - set(QUANTOXIDE_TABLE_NAMES)


@pytest.fixture(scope="module")
def market() -> Market:
    return Market(seed=7, clock=ManualClock(NOW))


@pytest.fixture(params=list(QUANTOXIDE_RELEASES))
def release(request: pytest.FixtureRequest) -> str:
    """A quantoxide release whose databases are adopted: 0.5.4, 0.6.0."""
    return str(request.param)


@pytest.fixture
def quantoxide_url(postgres_db_url: str, market: Market, release: str) -> str:
    """A quantoxide database of ``release`` with three days of candles (one hole), ticks,
    settlements and a running trade."""
    create_quantoxide_schema(postgres_db_url, release=release)
    fill_quantoxide(postgres_db_url, market, start=START, last=LAST, now=NOW)
    with connect(postgres_db_url) as cursor:
        cursor.execute(
            "DELETE FROM ohlc_candles WHERE time >= %s AND time <= %s", (HOLE[0], HOLE[1])
        )
    return postgres_db_url


@pytest.fixture
def backend_of() -> Iterator[Any]:
    opened: list[Backend] = []

    def open_(url: str) -> Backend:
        backend = open_backend(url, read_only=True)
        opened.append(backend)
        return backend

    yield open_
    for backend in opened:
        backend.close()


def brute_runs(times: list[datetime]) -> list[tuple[datetime, datetime]]:
    runs: list[list[datetime]] = []
    for time in sorted(times):
        if runs and runs[-1][1] + MINUTE == time:
            runs[-1][1] = time
        else:
            runs.append([time, time])
    return [(a, b) for a, b in runs]


# --- detection and refusal ------------------------------------------------------------------


def test_a_quantoxide_database_is_recognised_and_refused_naming_adopt(
    quantoxide_url: str, backend_of: Any
) -> None:
    """Opening it to write (sync) or to read (status, export, plan) raises
    ``QuantoxideDatabaseError`` naming ``qx-actors adopt --database URL``; nothing changes."""
    before = snapshot(quantoxide_url)
    found = classify_database(backend_of(quantoxide_url))
    assert DatabaseKind.QUANTOXIDE is found.kind
    with pytest.raises(QuantoxideDatabaseError, match="qx-actors adopt --database URL"):
        open_storage(quantoxide_url)
    with pytest.raises(QuantoxideDatabaseError, match="qx-actors adopt --database URL"):
        Database(quantoxide_url)
    assert before == snapshot(quantoxide_url)
    assert set(QUANTOXIDE_TABLE_NAMES) == tables(quantoxide_url)


# --- adoption -------------------------------------------------------------------------------


def test_adopt_adds_only_our_tables_and_changes_nothing_of_quantoxides(
    quantoxide_url: str, market: Market, release: str
) -> None:
    """Only our tables are added; quantoxide's catalog and every row stay as they were; the
    coverage holds the runs of the stored candles, the rollups their buckets. The release is
    recognised by its migrations and named."""
    before = snapshot(quantoxide_url)
    result = adopt_database(quantoxide_url)
    assert AdoptOutcome.ADOPTED is result.outcome
    assert release == result.quantoxide_version
    assert f"adopted the quantoxide {release} database" in result.message
    running = {c[0] for c in before["catalog"]["running_trades"]["columns"]}
    assert ("account_id" in running) is (release == "0.6.0")
    assert 1 == len(before["rows"]["running_trades"])
    assert ADDED == set(result.tables_added)
    assert set(QUANTOXIDE_TABLE_NAMES) | ADDED == tables(quantoxide_url)
    assert before == snapshot(quantoxide_url)
    # volume stays BIGINT, the trigger and quantoxide's partial index stay
    columns = {c[0]: c[1] for c in before["catalog"]["ohlc_candles"]["columns"]}
    assert "bigint" == columns["volume"]
    assert {("trigger_ohlc_candles_updated_at", "UPDATE", "BEFORE")} == {
        t[:3] for t in before["catalog"]["ohlc_candles"]["triggers"]
    }
    assert "idx_ohlc_candles_gaps" in {i[0] for i in before["catalog"]["ohlc_candles"]["indexes"]}

    times = [row[0] for row in rows(quantoxide_url, "ohlc_candles")]
    expected_runs = brute_runs(times)
    assert 2 == len(expected_runs)  # the hole splits the history
    assert len(times) == result.candles
    assert len(expected_runs) == result.coverage_runs
    with connect(quantoxide_url) as cursor:
        cursor.execute("SELECT first_minute, last_minute FROM ohlc_coverage ORDER BY 1")
        assert expected_runs == [tuple(row) for row in cursor.fetchall()]
        cursor.execute("SELECT MAX(version) FROM qx_schema")
        assert [(SCHEMA_VERSION,)] == cursor.fetchall()
        cursor.execute(f"SELECT time, volume, minutes FROM {rollup_table('1h')} ORDER BY time")
        hourly = cursor.fetchall()
    # every hour's rollup: the sum of its stored volumes and how many minutes it holds
    by_hour: dict[datetime, list[int]] = {}
    for row in rows(quantoxide_url, "ohlc_candles"):
        by_hour.setdefault(row[0].replace(minute=0), []).append(row[5])
    assert [(h, float(sum(v)), len(v)) for h, v in sorted(by_hour.items())] == [
        (t, v, m) for t, v, m in hourly
    ]
    # the read API answers from the adopted tables, values as stored
    with Database(quantoxide_url) as db:
        stored = db.candles(START, LAST + MINUTE, now=NOW)
        daily = db.candles(START, LAST + MINUTE, "1d", now=NOW)
        facts = db.price_history_facts()
    assert [(c.time, c.open, c.high, c.low, c.close, c.volume) for c in stored] == [
        (c.time, c.open, c.high, c.low, c.close, c.volume)
        for c in market.final_candles(START, LAST)
        if not HOLE[0] <= c.time <= HOLE[1]
    ]
    assert sum(c.minutes for c in daily) == len(times)
    assert (HOLE,) == facts.holes
    assert START == facts.earliest and LAST == facts.latest


def test_adopted_database_takes_our_writes_and_quantoxides_schema_survives_them(
    quantoxide_url: str, market: Market
) -> None:
    """Our writer on an adopted database: float volumes land in the BIGINT column exactly,
    quantoxide's trigger sets ``updated_at`` on rewritten candles, ``created_at`` is kept,
    settlements known by time are ignored, and the catalog is still quantoxide's."""
    adopt_database(quantoxide_url)
    before = snapshot(quantoxide_url)
    old = {row[0]: row for row in before["rows"]["ohlc_candles"]}
    young = LAST - 5 * MINUTE  # stored unstable by quantoxide
    assert old[young][9] is False
    fresh = [
        Candle(LAST + n * MINUTE, 70_000.5, 70_010.25, 69_990.0, 70_001.0, 12_345.0) for n in (1, 2)
    ]
    rewritten = Candle(young, 1.5, 2.5, 0.5, 2.0, 777.0)
    hole_fill = market.final_candles(*HOLE)
    known = market.settlements(START, NOW)[-1]
    new_settlement = FundingSettlement(
        "0b7e3c4a-35f6-4f4e-9a57-5a0d2bb0c001", NOW + timedelta(hours=2), 70_000.0, 0.0001
    )
    with open_storage(quantoxide_url) as storage:
        storage.acquire_writer_lock("test-writer")
        assert 2 == storage.upsert_candles(fresh, now=NOW)
        assert 1 == storage.upsert_candles([rewritten], now=NOW)
        assert len(hole_fill) == storage.upsert_candles(hole_fill, now=NOW)
        twin = FundingSettlement(
            "0b7e3c4a-35f6-4f4e-9a57-5a0d2bb0c002",
            known.time,
            known.fixing_price,
            known.funding_rate,
        )
        assert 1 == storage.upsert_settlements([twin, new_settlement], now=NOW)
        tick = PriceTick(NOW + MINUTE, 70_000.0)
        assert [tick] == storage.insert_new_ticks([tick], now=NOW)
        facts = storage.price_history_facts()
    assert () == facts.holes and LAST + 2 * MINUTE == facts.latest

    after = snapshot(quantoxide_url)
    assert before["catalog"] == after["catalog"]
    now_rows = {row[0]: row for row in after["rows"]["ohlc_candles"]}
    for n, candle in enumerate(fresh, start=1):
        row = now_rows[LAST + n * MINUTE]
        assert (candle.open, candle.high, candle.low, candle.close) == row[1:5]
        assert 12_345 == row[5] and isinstance(row[5], int)
    row = now_rows[young]
    assert (1.5, 2.5, 0.5, 2.0, 777) == row[1:6]
    assert old[young][6] == row[6]  # created_at kept
    assert row[7] > old[young][7]  # updated_at: the trigger's NOW()
    touched = {c.time for c in [*fresh, rewritten, *hole_fill]}
    assert {t: r for t, r in old.items() if t not in touched} == {
        t: r for t, r in now_rows.items() if t in old and t not in touched
    }
    settlements = {row[1]: row for row in after["rows"]["funding_settlements"]}
    assert str(known.id) == str(settlements[known.time][0])  # quantoxide's row wins
    assert new_settlement.time in settlements
    with Database(quantoxide_url) as db:
        hourly = db.candles(HOLE[0].replace(minute=0), HOLE[0].replace(minute=0) + MINUTE, "1h")
    assert 60 == hourly[0].minutes


def test_adopt_twice_is_a_no_op(quantoxide_url: str) -> None:
    """Adopting an adopted database changes nothing."""
    adopt_database(quantoxide_url)
    before = snapshot(quantoxide_url)
    again = adopt_database(quantoxide_url)
    assert AdoptOutcome.ALREADY is again.outcome
    assert f"schema version {SCHEMA_VERSION}" in again.message
    assert before == snapshot(quantoxide_url)


def test_adopt_on_a_qx_actors_database_is_a_no_op(storage_url: str) -> None:
    """A database qx_actors created (either backend) is left as it is."""
    with open_storage(storage_url) as storage:
        storage.upsert_candles([Candle(START, 1.0, 2.0, 0.5, 1.5, 3.0)], now=NOW)
    result = adopt_database(storage_url)
    assert AdoptOutcome.ALREADY is result.outcome
    with Database(storage_url) as db:
        assert [START] == [c.time for c in db.candles(START, START + MINUTE, now=NOW)]


def test_adopt_on_an_empty_database_creates_nothing(postgres_db_url: str, tmp_path: Path) -> None:
    """Nothing to adopt: no table is created (``sync`` creates them); no SQLite file either."""
    result = adopt_database(postgres_db_url)
    assert AdoptOutcome.EMPTY is result.outcome
    assert set() == tables(postgres_db_url)
    missing = tmp_path / "nothing.db"
    assert AdoptOutcome.EMPTY is adopt_database(f"sqlite:///{missing}").outcome
    assert not missing.exists()
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert AdoptOutcome.EMPTY is adopt_database(f"sqlite:///{empty}").outcome


def _unrelated(url: str) -> None:
    with connect(url) as cursor:
        cursor.execute("CREATE TABLE orders (id BIGINT PRIMARY KEY, note TEXT)")
        cursor.execute("INSERT INTO orders VALUES (1, 'keep me')")


def _quantoxide_before_funding(url: str) -> None:
    create_quantoxide_schema(url, migrations=[m[0] for m in QUANTOXIDE_MIGRATIONS[:3]])


def _no_sqlx_bookkeeping(url: str) -> None:
    create_quantoxide_schema(url)
    with connect(url) as cursor:
        cursor.execute("DROP TABLE _sqlx_migrations")


def _double_volume(url: str) -> None:
    create_quantoxide_schema(url)
    with connect(url) as cursor:
        cursor.execute("ALTER TABLE ohlc_candles ALTER COLUMN volume TYPE DOUBLE PRECISION")


def _half_adopted(url: str) -> None:
    create_quantoxide_schema(url)
    with connect(url) as cursor:
        cursor.execute("CREATE TABLE ohlc_coverage (first_minute TIMESTAMPTZ PRIMARY KEY)")


@pytest.mark.parametrize(
    ("build", "why"),
    [
        (_unrelated, "none of its tables (orders)"),
        (_quantoxide_before_funding, "no funding_settlements table (a quantoxide older than"),
        (_no_sqlx_bookkeeping, "no _sqlx_migrations table"),
        (_double_volume, "ohlc_candles.volume is double precision, quantoxide's is bigint"),
        (_half_adopted, "qx_actors tables without a schema version: ohlc_coverage"),
    ],
)
def test_adopt_refuses_any_other_database_and_changes_nothing(
    postgres_db_url: str, build: Any, why: str
) -> None:
    build(postgres_db_url)
    names = tables(postgres_db_url)
    before = snapshot_of(postgres_db_url, names)
    with pytest.raises(AdoptRefused, match="neither empty, a qx_actors database nor a quantoxide"):
        adopt_database(postgres_db_url)
    try:
        adopt_database(postgres_db_url)
    except AdoptRefused as exc:
        assert why in str(exc) and "nothing changed" in str(exc)
    assert names == tables(postgres_db_url)
    assert before == snapshot_of(postgres_db_url, names)
    if "ohlc_candles" in names:
        # sync refuses it too, without naming adopt (it can't be adopted)
        with pytest.raises(SchemaError, match="not a qx_actors database") as raised:
            open_storage(postgres_db_url)
        assert not isinstance(raised.value, QuantoxideDatabaseError)
        assert why in str(raised.value)


def _failed_migration(url: str) -> None:
    create_quantoxide_schema(url, release="0.6.0")
    with connect(url) as cursor:
        cursor.execute("UPDATE _sqlx_migrations SET success = FALSE WHERE version = 20260420143038")


def _newer_quantoxide(url: str) -> None:
    create_quantoxide_schema(url, release="0.6.0")
    with connect(url) as cursor:
        cursor.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, "
            "execution_time) VALUES (20270101000000, 'something new', TRUE, '\\x00', 1)"
        )


def _migration_not_recorded(url: str) -> None:
    create_quantoxide_schema(url)
    with connect(url) as cursor:
        cursor.execute("DELETE FROM _sqlx_migrations WHERE version = 20251204134907")


@pytest.mark.parametrize(
    ("build", "why"),
    [
        (_failed_migration, "migration 20260420143038 did not succeed"),
        (_newer_quantoxide, "migration 20270101000000 is unknown: a quantoxide newer than 0.6.0"),
        (_migration_not_recorded, "quantoxide 0.5.4's migration 20251204134907 is not recorded"),
    ],
)
def test_adopt_refuses_the_migrations_of_no_release_and_changes_nothing(
    postgres_db_url: str, build: Any, why: str
) -> None:
    """Tables shaped as quantoxide's, but ``_sqlx_migrations`` records no release's set (0.5.4's
    or 0.6.0's, every one successful): refused naming the migration, nothing changed."""
    build(postgres_db_url)
    before = snapshot(postgres_db_url)
    with pytest.raises(AdoptRefused, match="can't adopt") as e:
        adopt_database(postgres_db_url)
    assert why in str(e.value) and "nothing changed" in str(e.value), str(e.value)
    assert before == snapshot(postgres_db_url)
    assert set(QUANTOXIDE_TABLE_NAMES) == tables(postgres_db_url)


def test_adopt_refuses_another_sqlite_database(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE ohlc_candles (time TEXT PRIMARY KEY, volume INTEGER)")
    with pytest.raises(AdoptRefused, match="quantoxide databases are PostgreSQL databases"):
        adopt_database(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        assert [("ohlc_candles",)] == conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        ).fetchall()


def test_adopt_rolls_back_if_creating_our_tables_would_change_quantoxides(
    quantoxide_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should ``create_schema`` ever alter quantoxide's tables, adoption refuses and nothing of
    it stays (one transaction)."""
    real = create_schema

    def altering(backend: Backend) -> Any:
        models = real(backend)
        backend.execute("ALTER TABLE ohlc_candles ALTER COLUMN volume SET DEFAULT 0")
        return models

    monkeypatch.setattr("qx_actors.storage._adopt.create_schema", altering)
    before = snapshot(quantoxide_url)
    with pytest.raises(AdoptRefused, match="would change quantoxide's ohlc_candles"):
        adopt_database(quantoxide_url)
    assert before == snapshot(quantoxide_url)
    assert set(QUANTOXIDE_TABLE_NAMES) == tables(quantoxide_url)


def snapshot_of(url: str, names: set[str]) -> dict[str, Any]:
    """Every row of every table (unordered tables sorted), for databases of any shape."""
    out: dict[str, Any] = {}
    with connect(url) as cursor:
        for name in sorted(names):
            cursor.execute(f"SELECT * FROM {name}")
            # bytea comes back as a memoryview, whose repr is its address: compare the bytes
            out[name] = sorted(
                repr(tuple(bytes(v) if isinstance(v, memoryview) else v for v in row))
                for row in cursor.fetchall()
            )
            cursor.execute(
                "SELECT column_name, data_type, column_default FROM information_schema.columns "
                "WHERE table_name = %s ORDER BY ordinal_position",
                (name,),
            )
            out[f"{name} columns"] = cursor.fetchall()
            cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", (name,))
            out[f"{name} indexes"] = sorted(cursor.fetchall())
    return out
