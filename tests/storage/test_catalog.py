"""The catalog (the columnar copy of closed days of 1-minute candles): ``candles_arrow`` reads
it and stays exactly ``candles``, whatever was written, rewritten, flagged or verified empty
between reads; a repaired hole in a closed month shows in the next read; files of another
database, or broken ones, are never trusted; rebuild and verify."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_helpers import run_sql, wipe

from qx_actors.domain.values import Candle
from qx_actors.storage import (
    CandleRow,
    Database,
    Storage,
    open_storage,
    rebuild_catalog,
    verify_catalog,
)

pa = pytest.importorskip("pyarrow")

#: two days before a month's end: the writes cross days and a month
START = datetime(2026, 1, 30, tzinfo=UTC)
DAYS = 4
SPAN = DAYS * 1440
#: a reader's clock after every written minute
LATER = START + timedelta(days=DAYS + 2)
SETTINGS = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def at(n: int) -> datetime:
    """``START`` plus ``n`` minutes."""
    return START + timedelta(minutes=n)


def candles_at(minutes: list[int], price: float) -> list[Candle]:
    """Candles at ``minutes`` whose values depend on the minute and ``price``."""
    return [
        Candle(at(n), price + n % 11, price + 20 + n % 7, price - 3, price + n % 5, n % 9 / 4)
        for n in minutes
    ]


@pytest.fixture
def catalog_dir(storage_url: str, tmp_path: Path) -> Path:
    """The catalog directory the readers use: the default beside SQLite, one for PostgreSQL."""
    if storage_url.startswith("sqlite:///"):
        return Path(storage_url[len("sqlite:///") :] + "-catalog")
    return tmp_path / "pg-catalog"


@pytest.fixture
def storage(storage_url: str) -> Iterator[Storage]:
    """An open storage on a fresh database."""
    with open_storage(storage_url) as opened:
        yield opened


def arrow_rows(table: Any) -> list[CandleRow]:
    """The rows of a ``candles_arrow`` table as :class:`CandleRow`."""
    return [CandleRow(**record) for record in table.to_pylist()]


def assert_exact(reader: Database, lo: int, hi: int, now: datetime) -> None:
    """``candles_arrow`` of ``[lo, hi)`` (minutes) equals ``candles`` of the same range."""
    expected = reader.candles(at(lo), at(hi), now=now)
    table = reader.candles_arrow(at(lo), at(hi), now=now)
    assert expected == arrow_rows(table)


minute_batches = st.one_of(
    st.tuples(st.integers(0, SPAN - 1), st.integers(1, 2000), st.booleans()).map(
        lambda t: list(range(t[0], min(t[0] + t[1], SPAN)))[:: -1 if t[2] else 1]
    ),
    st.lists(st.integers(0, SPAN - 1), min_size=1, max_size=20),
)
ranges = st.tuples(st.integers(-60, SPAN), st.integers(1, SPAN + 120))
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("upsert"),
            minute_batches,
            st.floats(1.0, 50_000.0, allow_nan=False),
            # the writer's clock: after every minute (stable) or among them (young ones)
            st.one_of(st.just(SPAN + 1440), st.integers(0, SPAN + 60)),
        ),
        st.tuples(
            st.just("holes"),
            st.lists(st.tuples(st.integers(0, SPAN - 1), st.integers(0, 30)), max_size=2),
        ),
        st.tuples(
            st.just("empty"),
            st.lists(st.tuples(st.integers(0, SPAN - 1), st.integers(0, 300)), max_size=2),
        ),
        # a read between writes: it writes the files the next writes make stale
        st.tuples(st.just("read"), ranges, st.integers(0, SPAN + 120)),
    ),
    min_size=1,
    max_size=10,
)


@SETTINGS
@given(ops=operations, last=ranges)
def test_candles_arrow_is_exactly_candles(
    storage: Storage,
    storage_url: str,
    catalog_dir: Path,
    ops: list[tuple[Any, ...]],
    last: tuple[int, int],
) -> None:
    """After any sequence of writes, rewrites, flagged holes, verified-empty ranges and reads
    (which write the catalog files), ``candles_arrow`` of any range equals ``candles``, and
    the whole span is read from files once they are current."""
    wipe(storage_url)
    with Database(storage_url, catalog_dir=catalog_dir) as reader:
        for op in ops:
            if op[0] == "upsert":
                _, batch, price, now = op
                storage.upsert_candles(candles_at(batch, price), now=at(now))
            elif op[0] == "holes":
                storage.flag_holes([(at(a), at(a + n)) for a, n in op[1]])
            elif op[0] == "empty":
                storage.record_verified_empty([(at(a), at(a + n)) for a, n in op[1]], now=LATER)
            else:
                (lo, length), now = op[1], op[2]
                assert_exact(reader, lo, lo + length, at(now))
        lo, length = last
        assert_exact(reader, lo, lo + length, LATER)
        assert_exact(reader, 0, SPAN, LATER)
    assert sorted(p.name for p in catalog_dir.glob("*.arrow")) == [
        "candles-1m-2026-01.arrow",
        "candles-1m-2026-02.arrow",
    ]
    # a fresh reader (no cache) agrees, reading the files only
    with Database(storage_url, catalog_dir=catalog_dir) as reader:
        assert_exact(reader, -5, SPAN + 5, LATER)


def test_a_repaired_hole_in_a_closed_month_shows_in_the_next_read(
    storage: Storage, storage_url: str, catalog_dir: Path
) -> None:
    """A hole repaired after the month's file was written is in the very next read; the
    reread month file holds it too."""
    minutes = [n for n in range(SPAN) if not 1000 <= n < 1100]
    storage.upsert_candles(candles_at(minutes, 100.0), now=LATER)
    with Database(storage_url, catalog_dir=catalog_dir) as reader:
        before = reader.candles_arrow(at(0), at(SPAN), now=LATER)
        assert len(minutes) == before.num_rows
        storage.upsert_candles(candles_at(list(range(1000, 1100)), 100.0), now=LATER)
        after = reader.candles_arrow(at(0), at(SPAN), now=LATER)
        assert SPAN == after.num_rows
        assert reader.candles(at(0), at(SPAN), now=LATER) == arrow_rows(after)
    with Database(storage_url, catalog_dir=catalog_dir) as reader:
        assert after.equals(reader.candles_arrow(at(0), at(SPAN), now=LATER))
    assert [] == verify_catalog(storage_url, catalog_dir=catalog_dir).problems


def test_files_of_another_database_are_not_trusted(tmp_path: Path) -> None:
    """A database replaced by another at the same path (same days, other candles): the old
    files' tokens don't match the new database's, so its own candles are read."""
    url = f"sqlite:///{tmp_path / 'qx.db'}"
    with open_storage(url) as storage:
        storage.upsert_candles(candles_at(list(range(SPAN)), 100.0), now=LATER)
    with Database(url) as reader:
        assert SPAN == reader.candles_arrow(at(0), at(SPAN), now=LATER).num_rows
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(tmp_path / f"qx.db{suffix}"):
            os.remove(tmp_path / f"qx.db{suffix}")
    assert (tmp_path / "qx.db-catalog").is_dir()
    with open_storage(url) as storage:
        storage.upsert_candles(candles_at(list(range(0, SPAN, 2)), 7.0), now=LATER)
    with Database(url) as reader:
        assert_exact(reader, 0, SPAN, LATER)
        assert SPAN // 2 == reader.candles_arrow(at(0), at(SPAN), now=LATER).num_rows


def test_a_broken_file_is_read_around_and_replaced(
    storage: Storage, storage_url: str, catalog_dir: Path
) -> None:
    """A truncated or foreign file is as good as absent: the database answers, the reader
    writes the file again, and verify reports what it found."""
    storage.upsert_candles(candles_at(list(range(SPAN)), 100.0), now=LATER)
    with Database(storage_url, catalog_dir=catalog_dir) as reader:
        reader.candles_arrow(at(0), at(SPAN), now=LATER)
    path = catalog_dir / "candles-1m-2026-01.arrow"
    path.write_bytes(path.read_bytes()[:1000])
    problems = verify_catalog(storage_url, catalog_dir=catalog_dir).problems
    assert [path.name] == [p.split(":")[0] for p in problems]
    with Database(storage_url, catalog_dir=catalog_dir) as reader:
        assert_exact(reader, 0, SPAN, LATER)
    assert [] == verify_catalog(storage_url, catalog_dir=catalog_dir).problems


def test_a_file_changed_behind_the_tokens_fails_verify(
    storage: Storage, storage_url: str, catalog_dir: Path
) -> None:
    """A candle changed without the writer (plain SQL: no new token) leaves the copy stale;
    verify says so, rebuild makes it current again."""
    storage.upsert_candles(candles_at(list(range(SPAN)), 100.0), now=LATER)
    report = rebuild_catalog(storage_url, catalog_dir=catalog_dir)
    assert 2 == report.files and SPAN == report.candles
    run_sql(storage_url, "UPDATE ohlc_candles SET close = 1.5 WHERE time = ?", (tp(storage_url),))
    problems = verify_catalog(storage_url, catalog_dir=catalog_dir).problems
    assert ["candles-1m-2026-01.arrow"] == [p.split(":")[0] for p in problems]
    rebuild_catalog(storage_url, catalog_dir=catalog_dir)
    assert [] == verify_catalog(storage_url, catalog_dir=catalog_dir).problems
    with Database(storage_url, catalog_dir=catalog_dir) as reader:
        assert 1.5 == reader.candles_arrow(at(100), at(101), now=LATER).column("close")[0].as_py()


def tp(url: str) -> Any:
    """The time of minute 100 as a driver parameter of ``url``'s backend."""
    time = at(100)
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z") if url.startswith("sqlite") else time


def test_without_a_catalog_the_database_answers(storage: Storage, storage_url: str) -> None:
    """``catalog=False``: no file is written, the same table comes back."""
    storage.upsert_candles(candles_at(list(range(3000)), 100.0), now=LATER)
    with Database(storage_url, catalog=False) as plain, Database(storage_url) as default:
        table = plain.candles_arrow(at(0), at(SPAN), now=LATER)
        assert table.equals(default.candles_arrow(at(0), at(SPAN), now=LATER))
    if storage_url.startswith("sqlite:///"):
        assert Path(storage_url[len("sqlite:///") :] + "-catalog").is_dir()


def test_the_catalog_commands(cli: Any, tmp_path: Path) -> None:
    """``qx-actors catalog rebuild`` writes the files and says how many; ``catalog verify``
    exits 0 on a sound catalog and 1, naming the file, on a broken one."""
    url = f"sqlite:///{tmp_path / 'qx.db'}"
    with open_storage(url) as storage:
        storage.upsert_candles(candles_at(list(range(SPAN)), 100.0), now=LATER)
    done = cli("catalog", "rebuild", "--database", url)
    assert 0 == done.returncode, done.stderr
    assert f"2 files, {SPAN:,} candles" in done.stdout
    assert 0 == cli("catalog", "verify", "--database", url).returncode
    path = tmp_path / "qx.db-catalog" / "candles-1m-2026-02.arrow"
    path.write_bytes(b"not arrow")
    done = cli("catalog", "verify", "--database", url)
    assert 1 == done.returncode
    assert "candles-1m-2026-02.arrow: can't be read" in done.stderr
