"""SQLite writes a batch in multi-row statements of a few fixed sizes (issue 23: a long run's
memory stays flat): every distinct row count is a prepared statement in sqlite3's cache."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qx_actors.domain.values import PriceTick
from qx_actors.storage import open_storage
from qx_actors.storage._sqlite import SQLITE_ROWS_PER_STATEMENT, statement_chunks

T0 = datetime(2026, 1, 5, tzinfo=UTC)
ALLOWED = {SQLITE_ROWS_PER_STATEMENT} | {
    1 << k for k in range(12) if 1 << k < SQLITE_ROWS_PER_STATEMENT
}


@given(st.integers(0, 5 * SQLITE_ROWS_PER_STATEMENT))
def test_chunks_cover_the_rows_in_order_with_allowed_sizes(count: int) -> None:
    chunks = list(statement_chunks(count))
    assert [first for first, _ in chunks] == [
        sum(size for _, size in chunks[:i]) for i in range(len(chunks))
    ]
    assert count == sum(size for _, size in chunks)
    assert {size for _, size in chunks} <= ALLOWED
    # the largest first: full statements, then the binary digits of the rest
    assert [size for _, size in chunks] == sorted((size for _, size in chunks), reverse=True)


def test_every_batch_size_uses_a_dozen_statements_at_most() -> None:
    sizes = {size for count in range(1, 3 * SQLITE_ROWS_PER_STATEMENT) for _, size in
             statement_chunks(count)}  # fmt: skip
    assert len(sizes) <= 11


@settings(max_examples=20, deadline=None)
@given(batches=st.lists(st.integers(1, 1500), min_size=1, max_size=6))
def test_ticks_in_batches_of_any_size_are_all_stored_once(
    tmp_path_factory: pytest.TempPathFactory, batches: list[int]
) -> None:
    """Batches of any size, each split into statements of the allowed sizes: every tick is
    stored (and said new) once; written again, none is new."""
    path = tmp_path_factory.mktemp("chunks") / "qx.db"
    storage = open_storage(f"sqlite:///{path}")
    try:
        written: list[PriceTick] = []
        for size in batches:
            at = len(written)
            batch = [
                PriceTick(time=T0 + timedelta(milliseconds=at + i), last_price=90_000.0 + i)
                for i in range(size)
            ]
            assert batch == storage.insert_new_ticks(batch)
            written += batch
        assert [] == storage.insert_new_ticks(written[::-1])
    finally:
        storage.close()
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT COUNT(*), COUNT(DISTINCT time) FROM price_ticks").fetchone()
    finally:
        conn.close()
    assert (len(written), len(written)) == row
