"""The tick spool file: records in order, a torn last record cut off, replay with confirmation
and rewind, the file removed once every record is stored; the WS feed with a spool: during an
outage the ticks only in memory are always fewer than a spool batch."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, cast

import pykka
import pytest
from structlog.testing import capture_logs

from qx_actors.actors._base import RunThreads
from qx_actors.actors._engine import TicksWaiting
from qx_actors.actors._tick_spool import TickSpool, decode_record, encode_record
from qx_actors.actors._ws_feed import SPOOL_FLUSH_S, WsFeedActor
from qx_actors.actors.messages import (
    ChildFailed,
    StartStream,
    StoreTicks,
    TicksStored,
    UseDbWriter,
)
from qx_actors.domain.values import PriceTick
from qx_actors.errors import DatabaseBusyError
from qx_actors.lnmarkets.stream import StreamClient

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _ticks(count: int, start: int = 0) -> list[PriceTick]:
    return [
        PriceTick(T0 + timedelta(milliseconds=250 * i, microseconds=7), 97_000.5 + i / 3)
        for i in range(start, start + count)
    ]


def _read_all(spool: TickSpool, limit: int = 1000) -> list[PriceTick]:
    ticks: list[PriceTick] = []
    while spool.unread:
        ticks += spool.read(limit).ticks
    return ticks


def test_a_record_reads_back_exactly() -> None:
    """A tick's line gives back the same time (to the microsecond) and price."""
    tick = PriceTick(T0 + timedelta(microseconds=123_457), 97_412.123456789)
    line = encode_record(tick)
    assert line.endswith(b"\n")
    assert tick == decode_record(line[:-1])


def test_appended_batches_are_read_in_order_in_chunks(tmp_path: Path) -> None:
    """Batches appended are read back in order, ``limit`` records a chunk."""
    spool = TickSpool.open(tmp_path / "ticks.spool")
    assert not (tmp_path / "ticks.spool").exists()  # created at the first append
    spool.append(_ticks(5))
    spool.append(_ticks(7, start=5))
    assert 12 == spool.records == spool.waiting
    first = spool.read(4)
    assert _ticks(4) == list(first.ticks)
    assert 4 == first.records_through
    assert _ticks(8, start=4) == _read_all(spool)
    spool.close()


def test_a_torn_last_record_is_cut_off_with_a_warning(tmp_path: Path) -> None:
    """A crash in the middle of a write: the complete records are kept, the torn one dropped
    (with a warning), and later appends start on a fresh line."""
    path = tmp_path / "ticks.spool"
    spool = TickSpool.open(path)
    spool.append(_ticks(3))
    spool.close()
    with path.open("ab") as fh:
        fh.write(encode_record(_ticks(1, start=3)[0])[:9])
    with capture_logs() as logs:
        reopened = TickSpool.open(path)
    assert ["tick_spool_torn_record"] == [e["event"] for e in logs]
    assert 3 == reopened.records
    reopened.append(_ticks(2, start=4))
    assert [*_ticks(3), *_ticks(2, start=4)] == _read_all(reopened)
    reopened.close()


def test_a_line_that_is_no_record_is_skipped_with_a_warning(tmp_path: Path) -> None:
    """Garbage between records is skipped (and said), the records around it are read."""
    path = tmp_path / "ticks.spool"
    path.write_bytes(
        encode_record(_ticks(1)[0]) + b"not a tick\n" + encode_record(_ticks(1, start=1)[0])
    )
    spool = TickSpool.open(path)
    with capture_logs() as logs:
        chunk = spool.read(10)
    assert _ticks(2) == list(chunk.ticks)
    assert 3 == chunk.records_through
    assert ["tick_spool_bad_record"] == [e["event"] for e in logs]
    spool.close()


def test_rewind_goes_back_to_the_first_record_not_confirmed(tmp_path: Path) -> None:
    """Confirmed chunks are not read again after a rewind; the others are."""
    spool = TickSpool.open(tmp_path / "ticks.spool")
    spool.append(_ticks(10))
    first = spool.read(4)
    spool.confirm(first.end, first.records_through)
    spool.read(4)
    spool.rewind()
    assert 6 == spool.waiting
    assert _ticks(6, start=4) == _read_all(spool)
    spool.close()


def test_the_file_goes_once_every_record_is_confirmed(tmp_path: Path) -> None:
    """All records confirmed: ``done``; ``clear`` removes the file, and an append after it
    starts a new one."""
    path = tmp_path / "ticks.spool"
    spool = TickSpool.open(path)
    spool.append(_ticks(3))
    chunk = spool.read(10)
    assert not spool.done
    spool.confirm(chunk.end, chunk.records_through)
    assert spool.done
    assert 0 == spool.waiting
    spool.clear()
    assert not path.exists()
    spool.append(_ticks(2, start=3))
    assert _ticks(2, start=3) == _read_all(spool)
    spool.close()


def test_a_spool_left_behind_is_counted_and_replayed(tmp_path: Path) -> None:
    """Reopened (the next start after a crash), the spool holds every appended record."""
    path = tmp_path / "ticks.spool"
    spool = TickSpool.open(path)
    for start in range(0, 3000, 1000):
        spool.append(_ticks(1000, start=start))
    spool.close()
    reopened = TickSpool.open(path)
    assert 3000 == reopened.records == reopened.waiting
    assert _ticks(3000) == _read_all(reopened, limit=700)
    reopened.close()


# -- the WS feed with a spool: what a crash during an outage can lose ---------------------------


class _FakeStream:
    """A stream client the test feeds: :meth:`push` delivers ticks to the feed on its loop and
    returns once the feed has handled them."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: asyncio.Queue[list[PriceTick]] | None = None
        self._ready = threading.Event()
        self._handled = threading.Semaphore(0)

    async def run(self, on_ticks: Any, *, on_connected: Any = None) -> NoReturn:
        self._loop, self._inbox = asyncio.get_running_loop(), asyncio.Queue()
        if on_connected is not None:
            on_connected()
        self._ready.set()
        while True:
            on_ticks(await self._inbox.get())
            self._handled.release()

    def push(self, ticks: list[PriceTick]) -> None:
        assert self._ready.wait(10), "the feed did not start its stream"
        assert self._loop is not None and self._inbox is not None
        self._loop.call_soon_threadsafe(self._inbox.put_nowait, ticks)
        assert self._handled.acquire(timeout=10), "the feed did not handle the ticks"


class _Told:
    """What an actor was told, in order; the test waits on it."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.changed = threading.Condition()

    def add(self, message: Any) -> None:
        with self.changed:
            self.messages.append(message)
            self.changed.notify_all()

    def wait_for(self, found: Callable[[list[Any]], bool], what: str) -> list[Any]:
        with self.changed:
            assert self.changed.wait_for(lambda: found(self.messages), 10), what
            return list(self.messages)


class _Recorder(pykka.ThreadingActor):
    """The Engine or a DB writer: records what it is told in ``told``; as a writer,
    acknowledges each batch if ``acks``: committed, or failed at once (``committed=False``:
    the writer keeps it for the next writer, as one does with a database down or full)."""

    def __init__(self, told: _Told, *, acks: bool = False, committed: bool = True) -> None:
        super().__init__()
        self.told = told
        self.acks = acks
        self.committed = committed

    def on_receive(self, message: Any) -> Any:
        if self.acks and isinstance(message, StoreTicks) and message.ack_to is not None:
            message.ack_to.tell(TicksStored(committed=self.committed))
        self.told.add(message)
        return None


def _batches(messages: list[Any]) -> list[tuple[PriceTick, ...]]:
    return [m.ticks for m in messages if isinstance(m, StoreTicks)]


@pytest.fixture
def spool_path(tmp_path: Path) -> Path:
    return tmp_path / "ticks.spool"


def _start_feed(
    stream: _FakeStream, writer: pykka.ActorRef[Any], engine: pykka.ActorRef[Any], spool: Path
) -> tuple[pykka.ActorRef[Any], TicksWaiting]:
    waiting = TicksWaiting()
    feed = WsFeedActor.start(
        threads=RunThreads(),
        connect_stream=lambda: cast(StreamClient, stream),
        db_writer=writer,
        engine=engine,
        run_id="test",
        # the writer's silence becomes DatabaseBusyError after this: past SPOOL_FLUSH_S
        tick_max_interval_s=1.5 * SPOOL_FLUSH_S,
        ticks_waiting=waiting,
        max_queued_ticks=BOUND,
        tick_spool=str(spool),
    )
    feed.ask(StartStream())
    return feed, waiting


#: The feed's in-memory bound in these tests: a spool batch is a quarter of it.
BOUND = 200
SPOOL_BATCH = BOUND // 4


def test_without_a_writer_every_spool_batch_goes_to_disk_at_once(spool_path: Path) -> None:
    """No DB writer (an outage): the feed appends what it holds as soon as a spool batch is
    held, so the ticks only in memory are always fewer than a batch and the file holds every
    older tick, in order; the next writer gets the file's ticks first, then the rest, and the
    file goes once they are stored."""
    stream, told = _FakeStream(), _Told()
    engine, writer = _Recorder.start(_Told()), _Recorder.start(told, acks=True)
    feed, waiting = _start_feed(stream, writer, engine, spool_path)
    feed.ask(UseDbWriter(None))
    ticks = _ticks(7 * 37)
    for start in range(0, len(ticks), 7):
        stream.push(ticks[start : start + 7])
        on_disk = _spool_file(spool_path)
        assert ticks[: len(on_disk)] == on_disk, "the oldest ticks, in order"
        # what is only in memory (a timed append may have come since: never more)
        assert start + 7 - len(on_disk) < SPOOL_BATCH
        assert waiting.in_feed < SPOOL_BATCH
    assert len(_spool_file(spool_path)) > BOUND
    feed.ask(UseDbWriter(writer))
    writer_messages = told.wait_for(
        lambda m: bool(m) and m[-1].ticks[-1] == ticks[-1], "every tick sent"
    )
    feed.ask(UseDbWriter(writer))  # the last acknowledgement is handled
    sent = [tick for batch in _batches(writer_messages) for tick in batch]
    assert ticks == sent, "the spool's ticks first, then the queue's, each once"
    assert not spool_path.exists()
    feed.stop()


def test_a_writer_that_does_not_acknowledge_starts_an_outage(spool_path: Path) -> None:
    """A batch unacknowledged for SPOOL_FLUSH_S: the batch and everything received since go to
    the spool (before the writer's silence is reported as DatabaseBusyError); a healthy writer
    before that meant no file."""
    stream, told = _FakeStream(), _Told()
    engine, stuck = _Recorder.start(told), _Recorder.start(_Told())
    feed, waiting = _start_feed(stream, stuck, engine, spool_path)
    ticks = _ticks(30 + SPOOL_BATCH)
    stream.push(ticks[:10])  # the batch the writer keeps
    stream.push(ticks[10:30])
    assert not spool_path.exists(), "no file I/O while the writer may still answer"
    told.wait_for(lambda m: any(_busy(e) for e in m), "DatabaseBusyError")
    assert ticks[:30] == _spool_file(spool_path), "the batch in flight first, then the queue"
    assert 0 == waiting.in_feed
    stream.push(ticks[30:])  # still late: a spool batch held goes at once
    assert ticks == _spool_file(spool_path)
    feed.stop()


def test_a_batch_the_writer_failed_at_once_goes_to_disk_at_once(spool_path: Path) -> None:
    """A writer that fails each batch at once (before the spool's second: a database down or
    full) keeps it in memory for the next writer: the feed appends the batch to the spool as
    soon as the writer says so, and sends it from there again; a crash can't lose it."""
    stream, told = _FakeStream(), _Told()
    engine = _Recorder.start(_Told())
    failing = _Recorder.start(told, acks=True, committed=False)
    feed, _ = _start_feed(stream, failing, engine, spool_path)
    ticks = _ticks(10)
    stream.push(ticks)
    told.wait_for(
        lambda m: sum(batch.count(ticks[-1]) for batch in _batches(m)) >= 2,
        "the failed batch sent again, from the spool",
    )
    assert ticks == _spool_file(spool_path), "on disk, once"
    feed.stop()


def _busy(message: Any) -> bool:
    return isinstance(message, ChildFailed) and isinstance(message.error, DatabaseBusyError)


def _spool_file(path: Path) -> list[PriceTick]:
    """The complete records of a spool file."""
    if not path.exists():
        return []
    return [decode_record(line) for line in path.read_bytes().split(b"\n")[:-1]]
