"""The tick spool: an append-only local file for the ticks the WS feed receives during a
database outage (``sync.tick_spool``): the feed appends what it holds in batches, at least every
second or 1000 ticks (:data:`~qx_actors.actors._ws_feed.SPOOL_FLUSH_S`,
:data:`~qx_actors.actors._ws_feed.SPOOL_BATCH_TICKS`), so that a crash loses at most the last
batch not appended yet.

**Format.** UTF-8 text, one tick per line, in the order the ticks were received::

    <microseconds since the Unix epoch, UTC> <last price>\\n

(``1767225600123000 97412.5``; the price as Python's ``repr`` of the float, which reads back
exactly). A line is a record only with its newline.

**Guarantees.** :meth:`TickSpool.append` writes a batch with one ``write``, then flushes and
``fsync`` s it: once it returned, the batch survives a crash of the process or of the machine; a
crash loses at most the batch being written. A last line without its newline (torn by a crash)
is cut off with a warning (``tick_spool_torn_record``) when the file is opened again; a line
that does not parse is skipped with a warning (``tick_spool_bad_record``).

**Replay.** :meth:`TickSpool.read` hands the records out in order, a chunk at a time, from a
cursor; :meth:`TickSpool.confirm` says the database holds everything up to a chunk's end (the
next chunk starts there after :meth:`TickSpool.rewind`). Once every record is confirmed the
file is removed (:attr:`TickSpool.done`, :meth:`TickSpool.clear`): a spool that exists holds
ticks still to store (the next start replays it first). Records may be sent more than once (a
rewind after a failed write, a replay after a crash): the database ignores a tick time stored
twice.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from qx_actors.domain.values import PriceTick
from qx_actors.logs import get_logger

__all__ = ["SpoolChunk", "TickSpool", "decode_record", "encode_record"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Bytes read at once when counting, checking or replaying the file.
_BLOCK = 1 << 16


def encode_record(tick: PriceTick) -> bytes:
    """One tick as its spool line (newline included)."""
    delta = tick.time - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return f"{micros} {tick.last_price!r}\n".encode()


def decode_record(line: bytes) -> PriceTick:
    """The tick of one spool line (without its newline); ``ValueError`` (or
    ``OverflowError``, ``UnicodeDecodeError``) if it is no record."""
    micros_text, price_text = line.decode().split(" ")
    price = float(price_text)
    if not price > 0 or price == float("inf"):
        raise ValueError(f"not a price: {price_text!r}")
    return PriceTick(_EPOCH + timedelta(microseconds=int(micros_text)), price)


@dataclass(frozen=True)
class SpoolChunk:
    """Records read from the spool: their ticks, and where they end (byte offset, and the
    number of records from the start of the file up to there)."""

    ticks: tuple[PriceTick, ...]
    end: int
    records_through: int


class TickSpool:
    """An append-only tick file with a replay cursor; open it with :meth:`open`."""

    def __init__(self, path: Path, fd: int | None, size: int, records: int, log: Any) -> None:
        self.path = path
        self._fd = fd
        self._size = size
        #: records in the file
        self.records = records
        # the replay cursor, and what the database is known to hold
        self._cursor = (0, 0)
        self._confirmed = (0, 0)
        self._log = log

    @classmethod
    def open(cls, path: str | Path, *, log: Any = None) -> TickSpool:
        """Open the spool at ``path`` (created at the first append): an existing file's records
        are counted, a torn last record is cut off. ``OSError`` if the file can't be used."""
        spool_path = Path(path)
        log = log if log is not None else get_logger(actor="tick_spool")
        if not spool_path.exists():
            return cls(spool_path, None, 0, 0, log)
        fd = os.open(spool_path, os.O_RDWR | os.O_APPEND)
        try:
            size = os.fstat(fd).st_size
            complete = _end_of_last_line(fd, size)
            if complete < size:
                log.warning(
                    "tick_spool_torn_record", path=str(spool_path), dropped_bytes=size - complete
                )
                os.ftruncate(fd, complete)
                os.fsync(fd)
                size = complete
            records = _count_lines(fd, size)
        except BaseException:
            os.close(fd)
            raise
        return cls(spool_path, fd, size, records, log)

    # -- writing -----------------------------------------------------------------------------

    def append(self, ticks: Sequence[PriceTick]) -> None:
        """Append ``ticks`` as one batch: written, flushed and fsync'ed before this returns."""
        if not ticks:
            return
        data = b"".join(encode_record(tick) for tick in ticks)
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            _fsync_directory(self.path.parent)  # the new name survives a crash too
        written = 0
        while written < len(data):
            written += os.write(self._fd, data[written:])
        os.fsync(self._fd)
        self._size += len(data)
        self.records += len(ticks)

    # -- replaying ---------------------------------------------------------------------------

    @property
    def unread(self) -> bool:
        """Whether records lie past the replay cursor."""
        return self._cursor[0] < self._size

    @property
    def waiting(self) -> int:
        """Records the database is not known to hold."""
        return self.records - self._confirmed[1]

    @property
    def done(self) -> bool:
        """Whether the database holds every record (nothing left to replay)."""
        return self._confirmed[0] >= self._size

    def read(self, limit: int) -> SpoolChunk:
        """Up to ``limit`` records from the cursor on (the cursor moves past them); a record
        that does not parse is skipped with a warning."""
        offset, through = self._cursor
        ticks: list[PriceTick] = []
        pending, start, read_to = b"", 0, offset  # bytes of the file from offset on
        while len(ticks) < limit:
            newline = pending.find(b"\n", start)
            if newline < 0:
                if read_to >= self._size or self._fd is None:
                    break  # the file holds whole lines only: nothing is left over
                block = os.pread(self._fd, min(_BLOCK, self._size - read_to), read_to)
                if not block:
                    break
                pending, start, read_to = pending[start:] + block, 0, read_to + len(block)
                continue
            line = pending[start:newline]
            offset += newline + 1 - start
            start = newline + 1
            through += 1
            try:
                ticks.append(decode_record(line))
            except (ValueError, OverflowError, UnicodeDecodeError) as exc:
                self._log.warning(
                    "tick_spool_bad_record", path=str(self.path), record=through, error=str(exc)
                )
        self._cursor = (offset, through)
        return SpoolChunk(tuple(ticks), offset, through)

    def confirm(self, end: int, records_through: int) -> None:
        """The database holds every record up to ``end`` (a chunk's end)."""
        if end > self._confirmed[0]:
            self._confirmed = (end, records_through)

    def rewind(self) -> None:
        """Move the cursor back to the first record not known to be stored."""
        self._cursor = self._confirmed

    def clear(self) -> None:
        """Remove the file (every record is stored); the spool is empty and open again."""
        self.close()
        self.path.unlink(missing_ok=True)
        self._size = self.records = 0
        self._cursor = self._confirmed = (0, 0)

    def close(self) -> None:
        """Close the file (it stays, with whatever it holds)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _end_of_last_line(fd: int, size: int) -> int:
    """The offset just past the file's last newline (0 without one)."""
    end = size
    while end > 0:
        start = max(0, end - _BLOCK)
        block = os.pread(fd, end - start, start)
        newline = block.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


def _count_lines(fd: int, size: int) -> int:
    count, offset = 0, 0
    while offset < size:
        block = os.pread(fd, min(_BLOCK * 16, size - offset), offset)
        if not block:
            break
        count += block.count(b"\n")
        offset += len(block)
    return count


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
