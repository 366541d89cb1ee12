"""The catalog: a columnar copy of the closed days of 1-minute candles, one Arrow IPC file per
month, memory-mapped by readers.

A file ``candles-1m-YYYY-MM.arrow`` holds the candles of the month's days ``[first_day,
first_day + n)`` as :func:`~._read.candle_schema` columns (``stable`` as stored: whether a
bucket has ended is decided when reading), uncompressed, in time order. Its schema metadata
(``qx_catalog``, JSON) lists, for each of those days, the token the day had in
``ohlc_day_tokens`` (None: no row, the day was never written) when the file was taken, and
the row where the day starts. A reader compares these with the tokens of its own snapshot:
a day whose token matches is read from the file, any other from the database. The copy is
never wrong, only more or less current; a file that can't be read is as good as absent.

Files are written whole and renamed into place (a reader sees the old file or the new one).
Which days are written: those ended at least :data:`SETTLE` ago (the young ones are still
revised); whoever reads a month whose closed days are not all current in its file writes it
again (``Database.candles_arrow``), and :func:`rebuild_catalog` writes them all.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ._day_tokens import day_number, day_start

__all__ = [
    "CATALOG_SUFFIX",
    "SETTLE",
    "Catalog",
    "MonthFile",
    "closed_until",
    "default_catalog_dir",
    "month_days",
    "months_between",
]

#: the catalog directory of a SQLite database ``path``: ``path + CATALOG_SUFFIX``
CATALOG_SUFFIX = "-catalog"
#: a day enters the copy once it ended this long ago (its candles are final by then)
SETTLE = timedelta(hours=2)
_META_KEY = b"qx_catalog"
_FORMAT = 1


def default_catalog_dir(url: str) -> Path | None:
    """Where the catalog of the database at ``url`` goes when none is configured: beside a
    SQLite file (``qx.db`` -> ``qx.db-catalog/``); None for PostgreSQL and ``:memory:``."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :]
    if path == ":memory:" or path.startswith("file:"):
        return None
    return Path(path + CATALOG_SUFFIX)


def closed_until(now: datetime) -> int:
    """The first day number not closed at ``now`` (days before it are copied)."""
    return day_number(now - SETTLE)


def _month_start(year: int, month: int) -> datetime:
    return datetime(year, month, 1, tzinfo=UTC)


def _next_month(start: datetime) -> datetime:
    return _month_start(start.year + start.month // 12, start.month % 12 + 1)


def months_between(first_day: int, after_day: int) -> Iterator[tuple[datetime, int, int]]:
    """Each month overlapping the days ``[first_day, after_day)``: (its start, its first day
    number, the day number after it)."""
    if after_day <= first_day:
        return
    at = day_start(first_day)
    start = _month_start(at.year, at.month)
    while True:
        after = _next_month(start)
        yield start, day_number(start), day_number(after)
        if day_number(after) >= after_day:
            return
        start = after


def month_days(month: datetime) -> tuple[int, int]:
    """The day numbers ``[first, after)`` of the month starting at ``month``."""
    return day_number(month), day_number(_next_month(month))


@dataclass(frozen=True)
class MonthFile:
    """One catalog file, opened (its table memory-mapped)."""

    table: Any
    first_day: int
    #: per day from ``first_day``: its token when copied (None: no token row)
    tokens: tuple[int | None, ...]
    #: row offsets: day ``first_day + i`` is rows ``[offsets[i], offsets[i + 1])``
    offsets: tuple[int, ...]

    @property
    def after_day(self) -> int:
        """The day number after the last one held."""
        return self.first_day + len(self.tokens)

    def current(self, day: int, tokens: dict[int, int]) -> bool:
        """Whether the file's copy of ``day`` is that of a snapshot with these ``tokens``."""
        i = day - self.first_day
        return 0 <= i < len(self.tokens) and self.tokens[i] == tokens.get(day)

    def days(self, first: int, after: int) -> Any:
        """The rows of the days ``[first, after)`` (all held), a zero-copy slice."""
        lo = self.offsets[first - self.first_day]
        hi = self.offsets[after - self.first_day]
        return self.table.slice(lo, hi - lo)


def file_metadata(first_day: int, tokens: list[int | None], offsets: list[int]) -> bytes:
    """The ``qx_catalog`` metadata of a file."""
    return json.dumps(
        {"format": _FORMAT, "first_day": first_day, "tokens": tokens, "offsets": offsets},
        separators=(",", ":"),
    ).encode()


def parse_metadata(raw: bytes, rows: int) -> tuple[int, tuple[int | None, ...], tuple[int, ...]]:
    """(first_day, tokens, offsets) of a file's metadata; ValueError when it is not ours."""
    meta = json.loads(raw)
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise ValueError("not a qx_actors catalog file of a known format")
    first_day = int(meta["first_day"])
    tokens = tuple(None if t is None else int(t) for t in meta["tokens"])
    offsets = tuple(int(o) for o in meta["offsets"])
    if len(offsets) != len(tokens) + 1 or offsets[0] != 0 or offsets[-1] != rows:
        raise ValueError("inconsistent day offsets")
    if any(b < a for a, b in itertools.pairwise(offsets)):
        raise ValueError("day offsets not ascending")
    return first_day, tokens, offsets


class Catalog:
    """The catalog directory of one database, as a reader sees it."""

    def __init__(self, directory: str | os.PathLike[str], pa: Any, schema: Any) -> None:
        self.directory = Path(directory)
        self._pa = pa
        self._schema = schema
        #: path -> (stat signature, opened file)
        self._opened: dict[Path, tuple[tuple[int, int, int], MonthFile]] = {}

    def path(self, month: datetime) -> Path:
        """The file of the month starting at ``month``."""
        return self.directory / f"candles-1m-{month:%Y-%m}.arrow"

    def open(self, month: datetime) -> MonthFile | None:
        """The month's file, memory-mapped; None when there is none or it can't be read."""
        path = self.path(month)
        try:
            st = path.stat()
        except OSError:
            self._opened.pop(path, None)
            return None
        signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._opened.get(path)
        if cached is not None and cached[0] == signature:
            return cached[1]
        try:
            opened = self.load(path)
        except (OSError, ValueError, KeyError, TypeError, self._pa.ArrowException):
            self._opened.pop(path, None)
            return None
        self._opened[path] = (signature, opened)
        return opened

    def load(self, path: Path) -> MonthFile:
        """Open ``path`` (memory-mapped); raises when it is not a readable catalog file."""
        pa = self._pa
        with pa.memory_map(str(path), "r") as source:
            table = pa.ipc.open_file(source).read_all()
        raw = (table.schema.metadata or {}).get(_META_KEY)
        if raw is None:
            raise ValueError(f"{path.name} has no {_META_KEY.decode()} metadata")
        table = table.replace_schema_metadata(None)
        if not table.schema.equals(self._schema):
            raise ValueError(f"{path.name} has another schema")
        first_day, tokens, offsets = parse_metadata(raw, table.num_rows)
        return MonthFile(table, first_day, tokens, offsets)

    def write(
        self, month: datetime, table: Any, first_day: int, tokens: list[int | None]
    ) -> MonthFile:
        """Write the month's file (``table``: the rows of ``len(tokens)`` days from
        ``first_day``, time ordered) and return it opened. Written to a temporary file in
        the directory, then renamed over the old one."""
        pa = self._pa
        import pyarrow.compute as pc  # type: ignore[import-untyped]

        table = table.combine_chunks()
        bounds = pa.array(
            [day_start(first_day + i) for i in range(len(tokens) + 1)],
            type=self._schema.field("time").type,
        )
        # the rows before each day boundary (times are sorted): one pass in C
        offsets = [
            int(pc.sum(pc.less(table.column("time"), bound)).as_py() or 0) for bound in bounds
        ]
        offsets[-1] = table.num_rows
        offsets[0] = 0
        table = table.replace_schema_metadata(
            {_META_KEY: file_metadata(first_day, tokens, offsets)}
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(month)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
            os.replace(tmp, path)
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp)
            raise
        opened = self.open(month)
        if opened is None:
            raise OSError(f"the catalog file {path} just written can't be read back")
        return opened

    def files(self) -> list[Path]:
        """Every catalog file in the directory, oldest month first."""
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("candles-1m-*.arrow"))
