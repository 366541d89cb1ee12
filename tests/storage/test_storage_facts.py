"""Facts and read-API consolidation equal a straightforward recomputation (Hypothesis)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_helpers import BASE, minute, run_sql, wipe

from qx_actors.domain.timeutil import MINUTE
from qx_actors.domain.values import Candle
from qx_actors.storage import BUCKET_SECONDS, CandleRow, Database, Storage, open_storage

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture
def opened(storage_url: str) -> Iterator[tuple[Storage, Database, str]]:
    """A storage, a reader on it, and the URL."""
    with open_storage(storage_url) as storage, Database(storage_url) as reader:
        yield storage, reader, storage_url


def wipe_all(url: str) -> None:
    """Delete every stored row, the coverage runs included."""
    wipe(url)
    run_sql(url, "DELETE FROM ohlc_coverage")


@SETTINGS
@given(
    minutes=st.sets(st.integers(0, 240), max_size=80),
    now_minute=st.integers(0, 320),
)
def test_price_history_facts_match_recomputation(
    opened: tuple[Storage, Database, str], minutes: set[int], now_minute: int
) -> None:
    """Bounds, every hole (wherever it is) and the earliest unstable candle match a Python
    pass."""
    storage, reader, url = opened
    wipe_all(url)
    stored = sorted(minutes)
    now = minute(now_minute)
    storage.upsert_candles([Candle(minute(n), 1.0, 2.0, 0.5, 1.5, 1.0) for n in stored], now=now)
    facts = reader.price_history_facts()

    holes = tuple(
        (minute(a + 1), minute(b - 1)) for a, b in itertools.pairwise(stored) if b > a + 1
    )
    unstable = [n for n in stored if minute(n) >= now - timedelta(hours=1)]
    assert (minute(stored[0]) if stored else None) == facts.earliest
    assert (minute(stored[-1]) if stored else None) == facts.latest
    assert holes == facts.holes
    assert (minute(unstable[0]) if unstable else None) == facts.earliest_unstable
    assert facts == storage.price_history_facts()


def _expected(
    candles: list[Candle], start: datetime, end: datetime, seconds: int, now: datetime
) -> list[CandleRow]:
    step = timedelta(seconds=seconds)
    epoch = datetime(1970, 1, 1, tzinfo=BASE.tzinfo)
    buckets: dict[datetime, list[Candle]] = {}
    for c in sorted(candles, key=lambda c: c.time):
        first = epoch + ((c.time - epoch) // step) * step
        if first < end and first + step > start:
            buckets.setdefault(first, []).append(c)
    return [
        CandleRow(
            time=first,
            open=parts[0].open,
            high=max(p.high for p in parts),
            low=min(p.low for p in parts),
            close=parts[-1].close,
            volume=sum(p.volume for p in parts),
            stable=all(p.time < now - timedelta(hours=1) for p in parts) and first + step <= now,
            gap=False,
            minutes=len(parts),
        )
        for first, parts in sorted(buckets.items())
    ]


@SETTINGS
@given(
    rows=st.dictionaries(
        st.integers(0, 3 * 1440),
        st.tuples(*[st.integers(1, 1000)] * 4, st.integers(0, 50)),
        max_size=60,
    ),
    resolution=st.sampled_from(sorted(BUCKET_SECONDS)),
    start=st.integers(-100, 3 * 1440),
    length=st.integers(1, 3 * 1440),
    now_minute=st.integers(0, 4 * 1440),
)
def test_consolidation_matches_recomputation(
    opened: tuple[Storage, Database, str],
    rows: dict[int, tuple[int, int, int, int, int]],
    resolution: str,
    start: int,
    length: int,
    now_minute: int,
) -> None:
    """Every resolution gives open-first, max high, min low, close-last, summed volume."""
    storage, reader, url = opened
    wipe_all(url)
    now = minute(now_minute)
    candles = [
        Candle(
            minute(n), float(o), float(max(o, h, lo, c)), float(min(o, h, lo, c)), float(c), v / 4
        )
        for n, (o, h, lo, c, v) in rows.items()
    ]
    storage.upsert_candles(candles, now=now)
    got = reader.candles(minute(start), minute(start + length), resolution, now=now)
    expected = _expected(
        candles, minute(start), minute(start + length), BUCKET_SECONDS[resolution], now
    )
    assert expected == got


def test_unknown_resolution_is_refused(opened: tuple[Storage, Database, str]) -> None:
    """An unknown resolution name is a ValueError listing the known ones."""
    with pytest.raises(ValueError, match="1m, 3m"):
        opened[1].candles(BASE, BASE + MINUTE, "7m")


def test_gap_flag_propagates_to_buckets(opened: tuple[Storage, Database, str]) -> None:
    """A bucket containing a candle flagged ``gap`` is flagged too."""
    storage, reader, _ = opened
    storage.upsert_candles([Candle(minute(n), 1, 1, 1, 1, 1) for n in (0, 1, 7, 8)], now=BASE)
    storage.flag_holes([(minute(2), minute(6))])
    assert [r.gap for r in reader.candles(minute(0), minute(10), "5m")] == [False, True]
