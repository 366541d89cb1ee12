"""The tick spool file: records in order, a torn last record cut off, replay with confirmation
and rewind, the file removed once every record is stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from structlog.testing import capture_logs

from qx_actors.actors._tick_spool import TickSpool, decode_record, encode_record
from qx_actors.domain.values import PriceTick

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
