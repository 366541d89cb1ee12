"""``ohlc_coverage``: the runs of stored minutes kept with the candles, and its migration.

The runs must equal the brute-force runs of the stored minutes after any sequence of upserts
(overlapping, duplicated, out of order), and a database created with schema version 1 (no
coverage table) gets them built once, from its candles, when opened for writing.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_helpers import BASE, candle, minute, run_sql, wipe

from qx_actors.domain.history import PriceHistoryFacts
from qx_actors.domain.timeutil import MINUTE
from qx_actors.storage import SCHEMA_VERSION, Database, Storage, open_storage
from qx_actors.storage._models import MODELS, ROLLUP_MODELS, OhlcCoverage, QxSchema, bind_models
from qx_actors.storage._open import open_backend
from qx_actors.storage._schema import _EXTRA_DDL

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
NOW = BASE + 10_000 * MINUTE

Span = tuple[datetime, datetime]


def brute_runs(minutes: Iterable[int]) -> list[Span]:
    """The maximal runs of consecutive minutes, as ``(first, last)`` times."""
    runs: list[list[int]] = []
    for n in sorted(set(minutes)):
        if runs and runs[-1][1] + 1 == n:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return [(minute(a), minute(b)) for a, b in runs]


def brute_facts_holes(minutes: Iterable[int]) -> tuple[Span, ...]:
    """The holes between the runs."""
    runs = brute_runs(minutes)
    return tuple((a[1] + MINUTE, b[0] - MINUTE) for a, b in itertools.pairwise(runs))


@pytest.fixture
def storage(storage_url: str) -> Iterator[Storage]:
    """An open storage on a fresh database."""
    with open_storage(storage_url) as opened:
        yield opened


def wipe_all(url: str) -> None:
    """Delete every stored row, the coverage runs included (between Hypothesis examples)."""
    wipe(url)
    run_sql(url, "DELETE FROM ohlc_coverage")


# one batch: minutes (duplicates allowed) in the order they are sent
batches_strategy = st.lists(
    st.one_of(
        # a contiguous block, possibly reversed (the exchange sends newest first)
        st.tuples(st.integers(0, 300), st.integers(1, 40), st.booleans()).map(
            lambda t: list(range(t[0], t[0] + t[1]))[:: -1 if t[2] else 1]
        ),
        # scattered minutes, duplicates and any order
        st.lists(st.integers(0, 340), min_size=1, max_size=25),
    ),
    min_size=1,
    max_size=12,
)


@SETTINGS
@given(batches=batches_strategy)
def test_coverage_equals_brute_force_runs(
    storage: Storage, storage_url: str, batches: list[list[int]]
) -> None:
    """After every upsert the coverage runs are the runs of the stored minutes, and the facts'
    bounds and holes follow from them."""
    wipe_all(storage_url)
    stored: set[int] = set()
    for batch in batches:
        storage.upsert_candles([candle(n) for n in batch], now=NOW)
        stored.update(batch)
        assert brute_runs(stored) == storage.coverage()
    facts = storage.price_history_facts()
    assert brute_facts_holes(stored) == facts.holes
    assert (minute(min(stored)), minute(max(stored))) == (facts.earliest, facts.latest)
    assert [(len(stored),)] == run_sql(storage_url, "SELECT COUNT(*) FROM ohlc_candles")


@SETTINGS
@given(data=st.data())
def test_coverage_after_random_fills_of_a_history(
    storage: Storage, storage_url: str, data: st.DataObject
) -> None:
    """A history filled in random pieces (as parallel fetches and gap repairs do) ends as one
    run, whatever the order; every intermediate state matches the brute force."""
    wipe_all(storage_url)
    length = data.draw(st.integers(1, 400), label="length")
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, length - 1)), max_size=8), label="cuts"))
    bounds = [0, *[c for c in cuts if 0 < c < length], length]
    pieces = [list(range(a, b)) for a, b in itertools.pairwise(bounds) if b > a]
    order = data.draw(st.permutations(pieces), label="order")
    stored: set[int] = set()
    for piece in order:
        storage.upsert_candles([candle(n) for n in reversed(piece)], now=NOW)
        stored.update(piece)
        assert brute_runs(stored) == storage.coverage()
    assert [(minute(0), minute(length - 1))] == storage.coverage()


def test_rewriting_stored_candles_leaves_coverage_alone(storage: Storage, storage_url: str) -> None:
    """Re-fetched candles (unstable ones settling) don't touch the runs."""
    storage.upsert_candles([candle(n) for n in (*range(10), *range(20, 30))], now=NOW)
    before = run_sql(storage_url, "SELECT first_minute, last_minute FROM ohlc_coverage")
    storage.upsert_candles([candle(n, price=7.0) for n in (3, 4, 25, 29)], now=NOW)
    assert before == run_sql(storage_url, "SELECT first_minute, last_minute FROM ohlc_coverage")
    assert [(minute(0), minute(9)), (minute(20), minute(29))] == storage.coverage()


# --- migration from schema version 1 -----------------------------------------------------------


def create_v1_database(url: str, minutes: Iterable[int]) -> None:
    """A database as schema version 1 created it (every table but ``ohlc_coverage`` and the
    rollups, the partial index, ``qx_schema`` = 1), holding candles at ``minutes``."""
    backend = open_backend(url)
    try:
        models = bind_models(backend.db)
        v1 = [models[m] for m in MODELS if m is not OhlcCoverage and m not in ROLLUP_MODELS]
        with backend.write_txn():
            backend.db.create_tables(v1, safe=True)
            for ddl in _EXTRA_DDL:
                backend.execute(ddl)
            models[QxSchema].insert(version=1, applied_at=NOW).execute()
            tp = backend.time_param
            for n in minutes:
                c = candle(n)
                backend.execute(
                    "INSERT INTO ohlc_candles (time, open, high, low, close, volume, "
                    "created_at, updated_at, gap, stable) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (tp(c.time), c.open, c.high, c.low, c.close, c.volume, tp(NOW), tp(NOW),
                     False, True),
                )  # fmt: skip
    finally:
        backend.close()


def test_migration_builds_coverage_from_a_version_1_database(storage_url: str) -> None:
    """Opening a schema-1 database for writing adds ``ohlc_coverage`` built from its candles
    (gaps and islands in SQL) and the rollups, records versions 2 to 5, and keeps every table
    and row as it was."""
    rng = random.Random(7)
    minutes = {n for n in range(3000) if rng.random() < 0.97}
    minutes -= set(range(500, 1700))  # a long hole, as an interrupted backfill leaves
    minutes |= {5000, 5001, 5003}
    create_v1_database(storage_url, minutes)

    # a reader of the new version on the old database: facts from a scan of the candles
    with Database(storage_url) as reader:
        old_facts = reader.price_history_facts()
    assert brute_facts_holes(minutes) == old_facts.holes

    with open_storage(storage_url) as storage:
        assert SCHEMA_VERSION == storage.schema_version() == 5
        assert brute_runs(minutes) == storage.coverage()
        assert old_facts == storage.price_history_facts()
        # maintained from then on
        storage.upsert_candles([candle(n) for n in range(500, 1700)], now=NOW)
        minutes |= set(range(500, 1700))
        assert brute_runs(minutes) == storage.coverage()
    assert [(1,), (2,), (3,), (4,), (5,)] == run_sql(
        storage_url, "SELECT version FROM qx_schema ORDER BY version"
    )
    assert [(len(minutes),)] == run_sql(storage_url, "SELECT COUNT(*) FROM ohlc_candles")

    # opening again migrates nothing twice; readers now use the coverage runs
    with open_storage(storage_url) as storage:
        assert brute_runs(minutes) == storage.coverage()
    with Database(storage_url) as reader:
        facts: PriceHistoryFacts = reader.price_history_facts()
    assert brute_facts_holes(minutes) == facts.holes


def test_migration_of_an_empty_version_1_database(storage_url: str) -> None:
    """No candles: an empty coverage table, version 5 (through 2, 3 and 4)."""
    create_v1_database(storage_url, [])
    with open_storage(storage_url) as storage:
        assert [] == storage.coverage()
        assert 5 == storage.schema_version()
        facts = storage.price_history_facts()
    assert (None, None, ()) == (facts.earliest, facts.latest, facts.holes)
