"""The DB writer's group commit: candle pages waiting in its inbox share one transaction, each
page is acknowledged, and a failed transaction fails every page in it (none half-written)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from qx_actors.actors import RunThreads
from qx_actors.actors._db_writer import DbWriterActor
from qx_actors.actors.messages import PageStored, StoreCandlePage
from qx_actors.domain.values import Candle
from qx_actors.errors import StorageError
from qx_actors.storage import Database, Storage, open_storage
from tests.helpers import RecordingInbox

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
NOW = T0 + timedelta(days=2)


class _CountingStorage:
    """A storage whose ``upsert_candles`` calls (transactions) are recorded, or fail."""

    def __init__(self, storage: Storage, *, fail: bool) -> None:
        self._storage = storage
        self._fail = fail
        self.upserts: list[int] = []

    def upsert_candles(self, candles: Sequence[Candle], **kwargs: Any) -> int:
        self.upserts.append(len(candles))
        if self._fail:
            raise StorageError("disk I/O error (injected)")
        return self._storage.upsert_candles(candles, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)


def _page(start: datetime, minutes: int) -> tuple[Candle, ...]:
    """Consecutive minutes from ``start``, newest first (as the exchange sends them)."""
    times = [start + MINUTE * i for i in range(minutes)]
    return tuple(Candle(t, 1.0, 2.0, 0.5, 1.5, 1.0) for t in reversed(times))


def _write(
    url: str, pages: list[tuple[tuple[Candle, ...], datetime]], *, fail: bool
) -> tuple[list[object], list[int]]:
    """Queue ``pages`` (candles, asked at) while the writer opens its storage, then let it go:
    what it acknowledged and the sizes of its upserts."""
    opening = threading.Event()
    proceed = threading.Event()
    made: list[_CountingStorage] = []

    def opener() -> Storage:
        opening.set()
        assert proceed.wait(30)
        storage = _CountingStorage(open_storage(url), fail=fail)
        made.append(storage)
        return storage  # type: ignore[return-value]

    inbox = RecordingInbox.start()
    writer = DbWriterActor.start(
        threads=RunThreads(),
        open_storage=opener,
        writer_holder="test",
        engine=inbox,
        run_id="test",
        clock=lambda: NOW,
    )
    try:
        assert opening.wait(30)
        for n, (candles, asked) in enumerate(pages):
            writer.tell(StoreCandlePage(candles, inbox, n, asked_at=asked))
        proceed.set()
    finally:
        writer.stop()  # after every page before it
        messages = inbox.ask("messages")
        inbox.stop()
    return [m for m in messages if isinstance(m, PageStored)], made[0].upserts


def test_waiting_pages_share_one_transaction_and_each_is_acknowledged(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'qx.db'}"
    # a backfill: newest page first, each an older run of minutes, all long final
    pages = [(_page(T0 + MINUTE * 100 * (3 - n), 100), NOW) for n in range(4)]
    acks, upserts = _write(url, pages, fail=False)
    assert acks == [PageStored(n) for n in range(4)]
    assert upserts == [400]
    with Database(url) as db:
        stored = db.candles(T0, T0 + timedelta(days=1), "1m")
    assert [c.time for c in stored] == [T0 + MINUTE * i for i in range(400)]


def test_a_failed_group_fails_every_page_in_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'qx.db'}"
    pages = [(_page(T0 + MINUTE * 100 * (3 - n), 100), NOW) for n in range(3)]
    acks, upserts = _write(url, pages, fail=True)
    assert [m.request_id for m in acks] == [0, 1, 2]  # type: ignore[attr-defined]
    assert all(isinstance(m.error, StorageError) for m in acks)  # type: ignore[attr-defined]
    assert upserts == [300]
    with Database(url) as db:
        assert db.candles(T0, T0 + timedelta(days=1), "1m") == []


@pytest.mark.parametrize(
    "second",
    [
        pytest.param(lambda: (_page(T0 + MINUTE * 50, 100), NOW), id="overlapping minutes"),
        pytest.param(lambda: (_page(NOW - timedelta(minutes=30), 10), NOW), id="not final yet"),
        pytest.param(
            lambda: (_page(T0, 10) * 2, NOW),
            id="a minute twice in the page",
        ),
    ],
)
def test_pages_that_would_not_write_the_same_go_alone(tmp_path: Path, second: Any) -> None:
    url = f"sqlite:///{tmp_path / 'qx.db'}"
    first = (_page(T0 + MINUTE * 100, 100), NOW)
    acks, upserts = _write(url, [first, second()], fail=False)
    assert acks == [PageStored(0), PageStored(1)]
    assert upserts == [100, len(second()[0])]
