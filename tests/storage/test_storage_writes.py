"""Storage writes: time round-trips, candle upserts and flags, verified-empty ranges, ticks,
settlements (each test on SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from storage_helpers import BASE, candle, minute, run_sql

from qx_actors.domain.values import Candle, FundingSettlement, PriceTick
from qx_actors.errors import StorageError
from qx_actors.storage import Database, Storage, open_storage
from qx_actors.storage._backend import guard

NOW = BASE + timedelta(days=1)


@pytest.fixture
def storage(storage_url: str) -> Iterator[Storage]:
    """An open storage on a fresh database."""
    with open_storage(storage_url) as opened:
        yield opened


@pytest.fixture
def reader(storage: Storage, storage_url: str) -> Iterator[Database]:
    """A read-only view of the same database."""
    with Database(storage_url) as db:
        yield db


def _candle_rows(url: str) -> dict[datetime, tuple[bool, bool]]:
    with Database(url) as db:
        return {c.time: (c.gap, c.stable) for c in db.candles(minute(-1000), minute(1000))}


def test_times_round_trip_exactly(storage: Storage, reader: Database) -> None:
    """Candle, tick and settlement times come back equal, as UTC, to the microsecond."""
    times = [
        datetime(2020, 3, 1, tzinfo=UTC),
        datetime(2026, 12, 31, 23, 59, tzinfo=UTC),
        datetime(2099, 6, 15, 12, 1, tzinfo=UTC),
    ]
    storage.upsert_candles([Candle(t, 1.5, 2.25, 0.125, 1.0, 3.0) for t in times], now=NOW)
    got = reader.candles(times[0], times[-1] + timedelta(minutes=1))
    assert times == [c.time for c in got]
    assert all(c.time.tzinfo is UTC for c in got)
    assert (got[0].open, got[0].high, got[0].low, got[0].close, got[0].volume) == (
        1.5,
        2.25,
        0.125,
        1.0,
        3.0,
    )

    tick_times = [
        BASE + timedelta(microseconds=123_456),
        BASE + timedelta(seconds=1, milliseconds=7),
    ]
    storage.insert_new_ticks([PriceTick(t, 100.5) for t in tick_times])
    ticks = reader.ticks(BASE, BASE + timedelta(seconds=2))
    assert tick_times == [t.time for t in ticks]
    assert all(t.time.tzinfo is UTC for t in ticks)

    settle = datetime(2025, 4, 11, 16, tzinfo=UTC)
    sid = "0b4c6c10-8d5f-4a57-9d64-1f5a1e0d7c11"
    storage.upsert_settlements([FundingSettlement(sid, settle, 80_000.5, 0.0001)])
    assert [FundingSettlement(sid, settle, 80_000.5, 0.0001)] == reader.settlements(
        settle, settle + timedelta(seconds=1)
    )


def test_sqlite_time_text_is_fixed_width_utc(tmp_path: object) -> None:
    """On SQLite a time is stored as readable, sortable ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` text."""
    url = f"sqlite:///{tmp_path}/t.db"
    with open_storage(url) as storage:
        storage.upsert_candles([candle(0)], now=NOW)
        storage.insert_new_ticks([PriceTick(BASE + timedelta(microseconds=5), 1.0)], now=NOW)
    assert run_sql(url, "SELECT time FROM ohlc_candles") == [("2026-01-01T00:00:00.000000Z",)]
    assert run_sql(url, "SELECT time FROM price_ticks") == [("2026-01-01T00:00:00.000005Z",)]
    assert run_sql(url, "SELECT created_at FROM price_ticks") == [("2026-01-02T00:00:00.000000Z",)]


def test_upsert_is_idempotent_and_keeps_created_at(storage: Storage, storage_url: str) -> None:
    """A second upsert of the same minute updates the values and updated_at, not created_at."""
    first, later = NOW, NOW + timedelta(minutes=5)
    assert storage.upsert_candles([candle(0), candle(1)], now=first) == 2
    assert storage.upsert_candles([candle(1, price=200.0), candle(0)], now=later) == 2
    rows = run_sql(
        storage_url, "SELECT time, open, created_at, updated_at FROM ohlc_candles ORDER BY time"
    )
    assert len(rows) == 2
    assert [r[1] for r in rows] == [100.0, 200.0]
    for row in rows:
        created = row[2] if isinstance(row[2], datetime) else datetime.fromisoformat(row[2])
        updated = row[3] if isinstance(row[3], datetime) else datetime.fromisoformat(row[3])
        assert (first, later) == (created, updated)


def test_duplicate_minutes_in_one_batch_last_wins(storage: Storage, reader: Database) -> None:
    """A batch holding the same minute twice stores the last one."""
    storage.upsert_candles([candle(0, price=1.0), candle(0, price=2.0)], now=NOW)
    assert [c.open for c in reader.candles(minute(0), minute(1))] == [2.0]


def test_stable_is_older_than_one_hour(storage: Storage, reader: Database) -> None:
    """Candles younger than one hour at ``now`` are unstable; writing clears ``gap``."""
    now = minute(120)
    storage.upsert_candles([candle(n) for n in (0, 59, 60, 61, 119)], now=now)
    got = {c.time: c.stable for c in reader.candles(minute(0), minute(120), now=now)}
    assert {
        minute(0): True,
        minute(59): True,
        minute(60): False,
        minute(61): False,
        minute(119): False,
    } == got


def test_non_whole_minute_candle_is_refused(storage: Storage) -> None:
    """Candle times must be whole minutes."""
    with pytest.raises(ValueError, match="whole minute"):
        storage.upsert_candles([Candle(BASE + timedelta(seconds=30), 1, 1, 1, 1, 1)], now=NOW)


def test_flag_holes_marks_gap_and_neighbours(storage: Storage, storage_url: str) -> None:
    """The candle after a hole gets ``gap``; five stored candles on each side lose ``stable``."""
    storage.upsert_candles([candle(n) for n in range(30) if not 10 <= n <= 12], now=NOW)
    storage.flag_holes([(minute(10), minute(12))])
    flags = _candle_rows(storage_url)
    assert {minute(13)} == {t for t, (gap, _) in flags.items() if gap}
    expected_unstable = {minute(n) for n in [5, 6, 7, 8, 9, 13, 14, 15, 16, 17]}
    assert expected_unstable == {t for t, (_, stable) in flags.items() if not stable}
    facts = storage.price_history_facts()
    assert minute(5) == facts.earliest_unstable
    storage.upsert_candles([candle(13)], now=NOW)
    assert _candle_rows(storage_url)[minute(13)] == (False, True)


def test_verified_empty_shrinks_splits_and_disappears(storage: Storage) -> None:
    """Candles written inside a verified-empty range carve it up; a full cover deletes it."""
    storage.record_verified_empty([(minute(10), minute(20))], now=NOW)
    assert ((minute(10), minute(20)),) == storage.price_history_facts().verified_empty
    storage.upsert_candles([candle(15), candle(12)], now=NOW)
    assert (
        (minute(10), minute(11)),
        (minute(13), minute(14)),
        (minute(16), minute(20)),
    ) == storage.price_history_facts().verified_empty
    storage.upsert_candles([candle(n) for n in (10, 11, 13, 14, 16, 17, 18, 19, 20)], now=NOW)
    assert storage.price_history_facts().verified_empty == ()


def test_record_verified_empty_merges_and_skips_stored_candles(storage: Storage) -> None:
    """Adjacent/overlapping ranges are merged; minutes holding candles are left out."""
    storage.upsert_candles([candle(7)], now=NOW)
    storage.record_verified_empty([(minute(0), minute(4))], now=NOW)
    storage.record_verified_empty([(minute(5), minute(9)), (minute(3), minute(6))], now=NOW)
    assert (
        (minute(0), minute(6)),
        (minute(8), minute(9)),
    ) == storage.price_history_facts().verified_empty


def test_ticks_dedup_and_prune(storage: Storage, reader: Database) -> None:
    """Known tick times are ignored (and not returned); prune deletes up to a time inclusive."""
    t = [BASE + timedelta(seconds=s) for s in range(4)]
    first = [PriceTick(t[0], 1.0), PriceTick(t[1], 2.0)]
    assert first == storage.insert_new_ticks(first)
    assert [PriceTick(t[2], 3.0)] == storage.insert_new_ticks(
        [PriceTick(t[1], 9.0), PriceTick(t[2], 3.0), PriceTick(t[2], 3.5)]
    )
    assert [] == storage.insert_new_ticks([PriceTick(t[0], 1.0)])
    assert [x.last_price for x in reader.ticks(t[0], t[3])] == [1.0, 2.0, 3.0]
    assert storage.prune_ticks(t[1]) == 2
    assert [t[2]] == [x.time for x in reader.ticks(t[0], t[3])]


def test_ticks_known_among_new_over_several_statements(storage: Storage, reader: Database) -> None:
    """A batch larger than one statement, with known times scattered among new ones: exactly
    the new ticks are returned, in order, and stored once; the known ones keep their price."""
    times = [BASE + timedelta(milliseconds=ms) for ms in range(2500)]
    known = [PriceTick(t, 1.0) for t in times[::7]]
    assert known == storage.insert_new_ticks(known)
    batch = [PriceTick(t, 2.0) for t in times]
    assert [tick for tick in batch if tick.time not in set(times[::7])] == (
        storage.insert_new_ticks(batch)
    )
    stored = reader.ticks(times[0], times[-1] + timedelta(seconds=1))
    assert times == [tick.time for tick in stored]
    assert [1.0 if i % 7 == 0 else 2.0 for i in range(2500)] == [t.last_price for t in stored]
    assert [] == storage.insert_new_ticks(batch)


def test_ticks_written_meanwhile_by_another_storage(storage: Storage, storage_url: str) -> None:
    """Ticks stored by another connection after this one's last batch (no writer lock taken)
    are still told apart: only the ticks this batch added are returned."""
    t = [BASE + timedelta(seconds=s) for s in range(6)]
    assert [PriceTick(t[0], 1.0)] == storage.insert_new_ticks([PriceTick(t[0], 1.0)])
    with open_storage(storage_url) as other:
        assert [PriceTick(t[2], 2.0)] == other.insert_new_ticks([PriceTick(t[2], 2.0)])
    batch = [PriceTick(t[1], 3.0), PriceTick(t[2], 3.0), PriceTick(t[3], 3.0)]
    assert [batch[0], batch[2]] == storage.insert_new_ticks(batch)
    later = [PriceTick(t[4], 4.0), PriceTick(t[5], 4.0)]
    with open_storage(storage_url) as other:
        assert later[:1] == other.insert_new_ticks(later[:1])
    assert later[1:] == storage.insert_new_ticks(later)


def test_deferred_statements_run_in_order_within_the_batch(storage: Storage) -> None:
    """Inside ``batched()`` a deferred statement is seen by the next statement (sent before it,
    on PostgreSQL in the same round trip) and sent at the end of the block; a failing one fails
    the transaction, and nothing of it is committed."""
    backend = storage._backend
    with guard(backend, "test"), backend.write_txn(), backend.batched():
        backend.defer(
            "INSERT INTO ohlc_coverage (first_minute, last_minute) VALUES (?, ?)",
            (backend.time_param(minute(0)), backend.time_param(minute(5))),
        )
        assert [(1,)] == backend.execute("SELECT COUNT(*) FROM ohlc_coverage").fetchall()
        backend.defer("UPDATE ohlc_coverage SET last_minute = ?", (backend.time_param(minute(9)),))
    assert [(minute(0), minute(9))] == storage.coverage()
    with (
        pytest.raises(StorageError),
        guard(backend, "test"),
        backend.write_txn(),
        backend.batched(),
    ):
        backend.defer("DELETE FROM ohlc_coverage")
        backend.defer("INSERT INTO no_such_table VALUES (1)")
    assert [(minute(0), minute(9))] == storage.coverage()


def test_settlements_idempotent(storage: Storage, reader: Database) -> None:
    """Storing the same settlements again adds nothing; facts list the times in the scan."""
    times = [datetime(2025, 4, 12, h, tzinfo=UTC) for h in (0, 8, 16)]
    rows = [
        FundingSettlement(f"00000000-0000-4000-8000-00000000000{i}", t, 80_000.0 + i, 0.0001)
        for i, t in enumerate(times)
    ]
    assert storage.upsert_settlements(rows) == 3
    assert storage.upsert_settlements(rows) == 0
    assert (
        storage.upsert_settlements([FundingSettlement(rows[0].id.upper(), times[0], 1.0, 1.0)]) == 0
    )
    assert rows == reader.settlements(times[0], times[-1] + timedelta(hours=1))
    facts = storage.funding_facts(scan_from=times[1])
    assert (times[0], times[-1], tuple(times[1:])) == (
        facts.earliest,
        facts.latest,
        facts.stored_times_in_scan,
    )


def test_empty_database_facts(storage: Storage) -> None:
    """An empty database has no bounds, holes or unstable candles."""
    facts = storage.price_history_facts()
    assert (
        facts.earliest,
        facts.latest,
        facts.holes,
        facts.verified_empty,
        facts.earliest_unstable,
    ) == (None, None, (), (), None)
    funding = storage.funding_facts(scan_from=BASE)
    assert (funding.earliest, funding.latest, funding.stored_times_in_scan) == (None, None, ())


def test_unsupported_url_is_a_storage_error() -> None:
    """An unknown URL scheme is a StorageError naming the URL without its password."""
    with pytest.raises(StorageError, match=r"mysql://u:\*\*\*@h/db"):
        open_storage("mysql://u:secret@h/db")


def test_insert_new_ticks_returns_exactly_the_new_ones(storage: Storage, reader: Database) -> None:
    """insert_new_ticks stores and returns only ticks whose time was not stored, in order."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    first = [PriceTick(base + timedelta(milliseconds=i), 100.0 + i) for i in (0, 1, 2)]
    assert first == storage.insert_new_ticks(first)
    again = [
        PriceTick(base + timedelta(milliseconds=1), 999.0),
        PriceTick(base + timedelta(milliseconds=5), 105.0),
        PriceTick(base + timedelta(milliseconds=5), 106.0),
        PriceTick(base + timedelta(milliseconds=3), 103.0),
    ]
    assert [again[1], again[3]] == storage.insert_new_ticks(again)
    stored = reader.ticks(base, base + timedelta(seconds=1))
    assert [100.0, 101.0, 102.0, 103.0, 105.0] == [t.last_price for t in stored]


def test_insert_new_ticks_over_several_statements(storage: Storage, reader: Database) -> None:
    """A batch larger than one statement, every other tick already stored, out of order: the
    new ones come back in the batch's order and each time is stored once."""
    times = [BASE + timedelta(milliseconds=7 * i) for i in range(2500)]
    known = [PriceTick(t, 1.0) for t in times[::2]]
    assert known == storage.insert_new_ticks(known)
    batch = [PriceTick(t, 2.0) for t in reversed(times)]
    assert batch[::2] == storage.insert_new_ticks(batch)
    stored = reader.ticks(times[0], times[-1] + timedelta(seconds=1))
    assert times == [t.time for t in stored]
    assert [1.0, 2.0] * 1250 == [t.last_price for t in stored]
