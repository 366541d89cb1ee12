"""The read API for users of the data: candles (1m or consolidated), ticks, settlements."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from qx_actors.domain import values
from qx_actors.domain.funding import FundingSettlementsFacts
from qx_actors.domain.history import PriceHistoryFacts
from qx_actors.domain.timeutil import MINUTE, require_utc, utc_now
from qx_actors.domain.values import Candle, FundingSettlement, PriceTick
from qx_actors.errors import DatabaseUnavailable, QxError

from . import _queries
from ._backend import Backend, Closing, guard
from ._catalog import (
    Catalog,
    MonthFile,
    closed_until,
    default_catalog_dir,
    month_days,
    months_between,
)
from ._day_tokens import day_number, day_start, read_tokens
from ._models import (
    KEPT_ROLLUP_LEVELS,
    as_utc,
    bucket_seconds,
    from_utc_text,
    rollup_table,
    to_utc_text,
)
from ._open import open_backend
from ._postgres import PostgresBackend
from ._rollups import CANDLES, grouped_minutes_sql
from ._schema import NoDatabaseError, check_schema, stored_version

#: resolution name -> bucket length in seconds (the domain's resolutions); buckets are aligned
#: to multiples of it since the Unix epoch (so 1d buckets start at 00:00 UTC)
BUCKET_SECONDS: dict[str, int] = {name: bucket_seconds(name) for name in values.RESOLUTIONS}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: resolutions answered straight from a rollup table
ROLLUP_NAMES = frozenset(name for name, _, _ in KEPT_ROLLUP_LEVELS)
#: the source of a resolution consolidated from the minutes in SQL (:func:`grouped_minutes_sql`)
_GROUPED = "(grouped minutes)"
#: rows converted per fetch (bounds the memory of the raw tuples)
_CHUNK = 65_536


class CandleRow(Candle, frozen=True, gc=False):
    """A stored candle (1m) or a bucket of them (3m ... 1d); ``time`` is the bucket start.

    A :class:`Candle` (its OHLCV, positional order kept) plus what only storage knows, which
    is why it is a type of its own: ``stable``: every minute in it is stable and the bucket has
    ended. ``gap``: some minute in it is the first after a hole. ``minutes``: how many 1-minute
    candles it was built from.
    """

    stable: bool
    gap: bool
    minutes: int


def bucket_start(time: datetime, seconds: int) -> datetime:
    """The start of the epoch-aligned bucket of ``seconds`` containing ``time``."""
    offset = (time - _EPOCH) // timedelta(seconds=seconds)
    return _EPOCH + timedelta(seconds=offset * seconds)


def consolidate(rows: Iterable[Sequence[Any]], seconds: int, now: datetime) -> list[CandleRow]:
    """Group time-ordered rows ``(time, o, h, l, c, v, stable, gap, minutes)`` (1m candles or
    finer buckets) into buckets of ``seconds`` (one pass). A bucket is stable when every row
    in it is and it has ended by ``now``."""
    step = timedelta(seconds=seconds)
    out: list[CandleRow] = []
    it = iter(rows)
    row = next(it, None)
    while row is not None:
        time, open_, high, low, close, volume, stable, gap, count = row
        first = _EPOCH + ((time - _EPOCH) // step) * step
        after = first + step
        row = next(it, None)
        while row is not None and row[0] < after:
            _, _, h, lo, close, v, s, g, m = row
            high = max(high, h)
            low = min(low, lo)
            volume += v
            stable = stable and s
            gap = gap or g
            count += m
            row = next(it, None)
        out.append(
            CandleRow(
                first, open_, high, low, close, volume, bool(stable) and after <= now, bool(gap),
                count,
            )
        )  # fmt: skip
    return out


#: the stored columns a candle read selects (rollup tables add ``minutes``)
READ_COLUMNS = "time, open, high, low, close, volume, stable, gap"


class _Selection(NamedTuple):
    """A running candle query and how to read its rows."""

    cursor: Any
    #: a bucket starting after this has not ended (now minus the rows' bucket length)
    ended_by: datetime
    #: rows of a rollup table (with ``minutes``), else 1-minute candles
    rollup: bool
    #: the rows are to be consolidated further (10m, 45m, 2h, 3h)
    merge: bool
    now: datetime


def _arrow_candles(pa: Any, schema: Any, columns: Any, rollup: bool, ended_by: Any) -> Any:
    """The candle table from the struct array of the selected rows; ``stable`` as stored when
    ``ended_by`` is None, else also requiring the bucket to start at or before it."""
    import pyarrow.compute as pc  # type: ignore[import-untyped]

    stamp = schema.field("time").type
    time = columns.field("time")
    if time.type != stamp:
        time = pc.cast(time, stamp)  # SQLite text -> timestamp (C++: no Python per row)
    stable = pc.cast(columns.field("stable"), pa.bool_())
    if ended_by is not None:
        stable = pc.and_(stable, pc.less_equal(time, pa.scalar(ended_by, type=stamp)))
    if rollup:
        minutes = pc.cast(columns.field("minutes"), pa.int32())
    else:
        minutes = pa.repeat(pa.scalar(1, pa.int32()), len(columns))
    arrays = [time, *(columns.field(name) for name in _FLOATS)]
    arrays += [stable, pc.cast(columns.field("gap"), pa.bool_()), minutes]
    return pa.Table.from_arrays(arrays, schema=schema)


def _end_buckets(pa: Any, table: Any, ended_by: datetime) -> Any:
    """``table`` (stored ``stable``) with ``stable`` false where a 1m bucket starts after
    ``ended_by`` (untouched when none does: the usual read of closed history)."""
    import pyarrow.compute as pc

    if table.num_rows == 0:
        return table
    time = table.column("time")
    if time[-1].as_py() <= ended_by:
        return table
    cut = pa.scalar(ended_by, type=time.type)
    stable = pc.and_(table.column("stable"), pc.less_equal(time, cut))
    return table.set_column(table.schema.get_field_index("stable"), "stable", stable)


#: the aggregate columns of :meth:`Database._grouped_arrow`, in :class:`CandleRow` order
_GROUPED_COLUMNS = (
    "open_first",
    "high_max",
    "low_min",
    "close_last",
    "volume_sum",
    "stable_all",
    "gap_any",
    "minutes_sum",
)


def _candle_rows_of(pa: Any, table: Any) -> list[CandleRow]:
    """The rows of a candle table (:func:`candle_schema`) as :class:`CandleRow`."""
    import pyarrow.compute as pc

    seconds = pc.divide(pc.cast(table.column("time"), pa.int64()), 1_000_000).to_pylist()
    step = timedelta(seconds=1)
    columns = [table.column(name).to_pylist() for name in CANDLE_FIELDS[1:]]
    return [
        CandleRow(_EPOCH + s * step, *values) for s, *values in zip(seconds, *columns, strict=True)
    ]


def _complete(held: MonthFile | None, first: int, after: int, tokens: dict[int, int]) -> bool:
    """Whether ``held`` holds every day of ``[first, after)`` as these ``tokens`` say."""
    return (
        held is not None
        and held.first_day <= first
        and held.after_day >= after
        and all(held.current(day, tokens) for day in range(first, after))
    )


class ArrowUnavailable(QxError, ImportError):
    """pyarrow (the ``arrow`` extra) is not installed."""


def import_pyarrow() -> Any:
    """The ``pyarrow`` module, or :class:`ArrowUnavailable` naming the extra to install."""
    try:
        import pyarrow  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ArrowUnavailable(
            f"Arrow/Parquet output needs pyarrow, which is not installed ({exc}): {ARROW_INSTALL}"
        ) from None
    return pyarrow


#: how to install what :func:`import_pyarrow` needs
ARROW_INSTALL = "pip install 'qx_actors[arrow]'"

#: the columns of a candle row, in :class:`CandleRow` order
CANDLE_FIELDS: tuple[str, ...] = CandleRow.__struct_fields__
_FLOATS = ("open", "high", "low", "close", "volume")


def candle_schema(pa: Any) -> Any:
    """The Arrow schema of candles: times as ``timestamp[us, tz=UTC]``."""
    return pa.schema(
        [
            ("time", pa.timestamp("us", tz="UTC")),
            *((name, pa.float64()) for name in _FLOATS),
            ("stable", pa.bool_()),
            ("gap", pa.bool_()),
            ("minutes", pa.int32()),
        ]
    )


def _source(resolution: str, rollups: bool) -> tuple[str, int, bool]:
    """(table, its bucket seconds, consolidate in Python?) answering ``resolution``: the
    rollup table of that resolution, else the coarsest one that divides it (2h, 3h), else
    the minutes grouped in SQL (:data:`_GROUPED`: 3m ... 45m)."""
    seconds = BUCKET_SECONDS[resolution]
    if seconds == 60 or not rollups:
        return CANDLES, 60, seconds != 60
    if resolution in ROLLUP_NAMES:
        return rollup_table(resolution), seconds, False
    divisors = [(n, s) for n, s, _ in KEPT_ROLLUP_LEVELS if seconds % s == 0]
    if not divisors:
        return _GROUPED, seconds, False
    name, divisor = max(divisors, key=lambda level: level[1])
    return rollup_table(name), divisor, True


class Database(Closing):
    """A database opened for reading (safe to use while an engine writes to it).

    Opened read-only (SQLite ``mode=ro``, PostgreSQL read-only transactions): a file the
    user may only read can be read, and nothing is ever written. Reads never block the
    writer (SQLite WAL readers, PostgreSQL MVCC). Time ranges are half-open ``[start, end)``.
    Each thread gets its own connection.

    ``catalog_dir``: the directory of the columnar copy of the closed days of 1-minute candles
    (``_catalog.py``) that :meth:`candles_arrow` reads at memory speed; by default beside a
    SQLite file (``qx.db-catalog/``), none for PostgreSQL. The reader writes the files of the
    months it reads when they are not current (if it can write there); ``catalog=False``
    reads the database only.
    """

    def __init__(
        self,
        url: str,
        *,
        catalog_dir: str | os.PathLike[str] | None = None,
        catalog: bool = True,
    ) -> None:
        if url.startswith("sqlite:///"):
            path = url[len("sqlite:///") :]
            if path != ":memory:":
                if not os.path.exists(path):
                    raise NoDatabaseError(f"no database at {path}")
                if not os.access(path, os.R_OK):
                    raise DatabaseUnavailable(f"cannot read the database {path}: permission denied")
        self._backend: Backend = open_backend(url, read_only=True)
        try:
            check_schema(self._backend)
            with guard(self._backend, "schema version"):
                version = stored_version(self._backend)
        except BaseException:
            self._backend.close()
            raise
        #: schema 2 keeps the runs of stored minutes; an older database is scanned instead
        self._coverage = version is not None and version >= 2
        #: schema 3 keeps the rollups; an older database is consolidated from its minutes
        self._rollups = version is not None and version >= 3
        #: schema 4 keeps the day tokens, without which the columnar copy can't be checked
        directory = default_catalog_dir(url) if catalog_dir is None else Path(catalog_dir)
        self._catalog_dir = directory if catalog and version is not None and version >= 4 else None
        self._catalog: Catalog | None = None
        #: readers (re)write the files of the months they read; off once that failed
        self._catalog_writes = True

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._backend.name

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Every read inside sees one consistent state of the database (one read transaction:
        SQLite WAL snapshot, PostgreSQL repeatable read), e.g. 1m and 1h of the same moment.
        The writer is never blocked by it: it goes on committing meanwhile."""
        with guard(self._backend, "read snapshot"), self._backend.read_txn():
            yield

    def _select(
        self, start: datetime, end: datetime, resolution: str, now: datetime | None
    ) -> _Selection | None:
        """Run the query answering ``candles(...)`` (call inside a read transaction); None for
        an empty range.

        The query selects the stored columns as they are (the raw bound of the benchmark
        fetches the same): whether a bucket has ended is decided while converting.
        """
        try:
            seconds = BUCKET_SECONDS[resolution]
        except KeyError:
            raise ValueError(
                f"unknown resolution {resolution!r}; expected one of {', '.join(BUCKET_SECONDS)}"
            ) from None
        start, end = require_utc(start, "start"), require_utc(end, "end")
        now = utc_now() if now is None else require_utc(now, "now")
        if end <= start:
            return None
        lo = bucket_start(start, seconds)
        hi = bucket_start(end - timedelta(microseconds=1), seconds) + timedelta(seconds=seconds)
        table, step, merge = _source(resolution, self._rollups)
        backend = self._backend
        tp = backend.time_param
        rollup = table != CANDLES
        columns = f"{READ_COLUMNS}{', minutes' if rollup else ''}"
        if table == _GROUPED:
            sql = grouped_minutes_sql(backend, seconds, columns)
        else:
            sql = f"SELECT {columns} FROM {table} WHERE time >= ? AND time < ? ORDER BY time"
        cursor = backend.execute(sql, (tp(lo), tp(hi)))
        # a bucket has ended when it starts at or before now - its length
        return _Selection(cursor, now - timedelta(seconds=step), rollup, merge, now)

    def candles(
        self,
        start: datetime,
        end: datetime,
        resolution: str = "1m",
        *,
        now: datetime | None = None,
    ) -> list[CandleRow]:
        """Candles of every bucket overlapping ``[start, end)``, oldest first.

        Each bucket is built from all its stored minutes (open of the first, highest high,
        lowest low, close of the last, summed volume, ``minutes`` = how many); buckets without
        candles are absent. 1h, 4h and 1d come from the rollups the writer keeps, 2h and 3h are
        consolidated from 1h, the finer ones from the minutes of the range (one SQL
        ``GROUP BY``). ``now`` (default: the clock) decides whether a bucket has ended.
        """
        if self._grouped_from_catalog(resolution):
            pa = import_pyarrow()
            table = self._grouped_arrow(pa, candle_schema(pa), start, end, resolution, now)
            return _candle_rows_of(pa, table)
        backend = self._backend
        with guard(backend, "read candles"), backend.read_txn():
            selected = self._select(start, end, resolution, now)
            if selected is None:
                return []
            rows = self._candle_rows(selected)
        if selected.merge:
            return consolidate(
                (msgspec.structs.astuple(row) for row in rows),
                BUCKET_SECONDS[resolution],
                selected.now,
            )
        return rows

    def _candle_rows(self, selected: _Selection) -> list[CandleRow]:
        """Every row of a candle query as :class:`CandleRow`, a chunk at a time: one list
        comprehension building the rows, no per-field conversion but the time."""
        cursor, row_type = selected.cursor, CandleRow
        out: list[CandleRow] = []
        if isinstance(self._backend, PostgresBackend):
            # psycopg2 builds the datetimes (UTC: the session zone) and the booleans itself
            cut = selected.ended_by
            while chunk := cursor.fetchmany(_CHUNK):
                if chunk[0][0].tzinfo is not UTC:
                    chunk = [(as_utc(row[0]), *row[1:]) for row in chunk]
                if selected.rollup:
                    out += [
                        row_type(t, o, h, lo, c, v, s and t <= cut, g, m)
                        for t, o, h, lo, c, v, s, g, m in chunk
                    ]
                else:
                    out += [
                        row_type(t, o, h, lo, c, v, s and t <= cut, g, 1)
                        for t, o, h, lo, c, v, s, g in chunk
                    ]
            return out
        # SQLite: fixed-width UTC text, compared as text (it sorts like the time)
        text_cut, parse = to_utc_text(selected.ended_by), from_utc_text
        while chunk := cursor.fetchmany(_CHUNK):
            if selected.rollup:
                out += [
                    row_type(parse(t), o, h, lo, c, v, s == 1 and t <= text_cut, g == 1, m)
                    for t, o, h, lo, c, v, s, g, m in chunk
                ]
            else:
                out += [
                    row_type(parse(t), o, h, lo, c, v, s == 1 and t <= text_cut, g == 1, 1)
                    for t, o, h, lo, c, v, s, g in chunk
                ]
        return out

    def candles_arrow(
        self,
        start: datetime,
        end: datetime,
        resolution: str = "1m",
        *,
        now: datetime | None = None,
    ) -> Any:
        """:meth:`candles` as a ``pyarrow.Table`` (pandas: ``.to_pandas()``, polars:
        ``polars.from_arrow``): ``time`` a ``timestamp[us, tz=UTC]``, prices and volume
        ``float64``, ``stable``/``gap`` booleans, ``minutes`` ``int32``.

        The rows go from the driver into Arrow in bulk (one struct array per chunk), without a
        Python object per value. Needs pyarrow (``pip install 'qx_actors[arrow]'``;
        :class:`ArrowUnavailable` otherwise).
        """
        pa = import_pyarrow()
        schema = candle_schema(pa)
        if resolution == "1m" and self._catalog_dir is not None:
            return self._candles_arrow_catalog(pa, schema, start, end, now)
        if self._grouped_from_catalog(resolution):
            return self._grouped_arrow(pa, schema, start, end, resolution, now)
        if resolution in BUCKET_SECONDS and _source(resolution, self._rollups)[2]:
            # consolidated here (2h, 3h from 1h; any but 1m on a schema older than 3)
            rows = self.candles(start, end, resolution, now=now)
            typed = zip(CANDLE_FIELDS, schema.types, strict=True)
            return pa.Table.from_arrays(
                [pa.array([getattr(r, name) for r in rows], type=kind) for name, kind in typed],
                schema=schema,
            )
        backend = self._backend
        postgres = isinstance(backend, PostgresBackend)
        stamp = schema.field("time").type
        flag = pa.bool_() if postgres else pa.int64()
        with guard(backend, "read candles"), backend.read_txn():
            selected = self._select(start, end, resolution, now)
            if selected is None:
                return schema.empty_table()
            struct = pa.struct(
                [
                    ("time", stamp if postgres else pa.string()),
                    *((name, pa.float64()) for name in _FLOATS),
                    ("stable", flag),
                    ("gap", flag),
                    *([("minutes", pa.int64())] if selected.rollup else []),
                ]
            )
            chunks = []
            while chunk := selected.cursor.fetchmany(_CHUNK):
                chunks.append(pa.array(chunk, type=struct))
        columns = pa.chunked_array(chunks, type=struct).combine_chunks()
        return _arrow_candles(pa, schema, columns, selected.rollup, selected.ended_by)

    def _grouped_from_catalog(self, resolution: str) -> bool:
        """Whether ``resolution`` (one without a rollup table: 3m ... 45m) is consolidated
        from the catalog's minutes with Arrow (a catalog, and pyarrow installed), instead of a
        SQL ``GROUP BY`` of the database's minutes."""
        if self._catalog_dir is None or resolution not in BUCKET_SECONDS:
            return False
        if _source(resolution, self._rollups)[0] != _GROUPED:
            return False
        try:
            import_pyarrow()
        except ArrowUnavailable:
            return False
        return True

    def _grouped_arrow(
        self,
        pa: Any,
        schema: Any,
        start: datetime,
        end: datetime,
        resolution: str,
        now: datetime | None,
    ) -> Any:
        """The buckets of ``resolution`` overlapping ``[start, end)``, consolidated with Arrow
        from the 1-minute candles that :meth:`candles_arrow` reads (the catalog's current days
        memory-mapped, the database for the rest, one snapshot)."""
        import pyarrow.compute as pc

        start, end = require_utc(start, "start"), require_utc(end, "end")
        now = utc_now() if now is None else require_utc(now, "now")
        if end <= start:
            return schema.empty_table()
        seconds = BUCKET_SECONDS[resolution]
        lo = bucket_start(start, seconds)
        hi = bucket_start(end - timedelta(microseconds=1), seconds) + timedelta(seconds=seconds)
        minutes = self._candles_arrow_catalog(pa, schema, lo, hi, now)
        if minutes.num_rows == 0:
            return schema.empty_table()
        stamp = schema.field("time").type
        step = seconds * 1_000_000
        # times after 1970: the integer division truncates down to the bucket
        micros = pc.cast(minutes.column("time"), pa.int64())
        minutes = minutes.append_column("bucket", pc.multiply(pc.divide(micros, step), step))
        # one thread: "first"/"last" follow the rows' (time) order (the groups do not)
        grouped = (
            minutes.group_by("bucket", use_threads=False)
            .aggregate(
                [
                    ("open", "first"),
                    ("high", "max"),
                    ("low", "min"),
                    ("close", "last"),
                    ("volume", "sum"),
                    ("stable", "all"),
                    ("gap", "any"),
                    ("minutes", "sum"),
                ]
            )
            .sort_by("bucket")
        )
        time = pc.cast(grouped.column("bucket"), stamp)
        # stable: every minute stable (the 1m read cut those not ended) and the bucket ended
        ended = pc.less_equal(time, pa.scalar(now - timedelta(seconds=seconds), type=stamp))
        arrays = [time, *(grouped.column(name) for name in _GROUPED_COLUMNS)]
        arrays[6] = pc.and_(arrays[6], ended)
        arrays[8] = pc.cast(arrays[8], pa.int32())
        return pa.Table.from_arrays(arrays, schema=schema)

    def _minutes_arrow(self, pa: Any, schema: Any, lo: datetime, hi: datetime) -> Any:
        """The stored 1-minute candles of ``[lo, hi)`` as a table, ``stable`` as stored (call
        inside a read transaction)."""
        backend = self._backend
        postgres = isinstance(backend, PostgresBackend)
        flag = pa.bool_() if postgres else pa.int64()
        struct = pa.struct(
            [
                ("time", schema.field("time").type if postgres else pa.string()),
                *((name, pa.float64()) for name in _FLOATS),
                ("stable", flag),
                ("gap", flag),
            ]
        )
        tp = backend.time_param
        cursor = backend.execute(
            f"SELECT {READ_COLUMNS} FROM {CANDLES} WHERE time >= ? AND time < ? ORDER BY time",
            (tp(lo), tp(hi)),
        )
        chunks = []
        while chunk := cursor.fetchmany(_CHUNK):
            chunks.append(pa.array(chunk, type=struct))
        if not chunks:
            return schema.empty_table()
        columns = pa.chunked_array(chunks, type=struct).combine_chunks()
        return _arrow_candles(pa, schema, columns, False, None)

    def _open_catalog(self, pa: Any, schema: Any) -> Catalog:
        if self._catalog is None:
            assert self._catalog_dir is not None
            self._catalog = Catalog(self._catalog_dir, pa, schema)
        return self._catalog

    def _candles_arrow_catalog(
        self, pa: Any, schema: Any, start: datetime, end: datetime, now: datetime | None
    ) -> Any:
        """:meth:`candles_arrow` at 1m: the current days of the catalog files, memory-mapped,
        and the database for the other days, all checked against one snapshot's tokens."""
        start, end = require_utc(start, "start"), require_utc(end, "end")
        now = utc_now() if now is None else require_utc(now, "now")
        if end <= start:
            return schema.empty_table()
        lo = bucket_start(start, 60)
        hi = bucket_start(end - timedelta(microseconds=1), 60) + MINUTE
        first_day, after_day = day_number(lo), day_number(hi - MINUTE) + 1
        months = list(months_between(first_day, after_day))
        closed = closed_until(utc_now())
        catalog = self._open_catalog(pa, schema)
        backend = self._backend
        with guard(backend, "read candles"), backend.read_txn():
            tokens = read_tokens(backend, months[0][1], months[-1][2])
            segments: list[tuple[MonthFile | None, int, int]] = []
            for month, m0, m1 in months:
                held = catalog.open(month)
                closed_after = min(m1, closed)
                if (
                    self._catalog_writes
                    and closed_after > m0
                    and not _complete(held, m0, closed_after, tokens)
                ):
                    held = self._write_month(pa, schema, catalog, month, held, tokens, closed_after)
                for day in range(max(m0, first_day), min(m1, after_day)):
                    source = held if held is not None and held.current(day, tokens) else None
                    if segments and segments[-1][0] is source and segments[-1][2] == day:
                        segments[-1] = (source, segments[-1][1], day + 1)
                    else:
                        segments.append((source, day, day + 1))
            pieces = [
                self._segment(pa, schema, source, first, after, lo, hi)
                for source, first, after in segments
            ]
        table = pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]
        return _end_buckets(pa, table, now - MINUTE)

    def _segment(
        self,
        pa: Any,
        schema: Any,
        source: MonthFile | None,
        first: int,
        after: int,
        lo: datetime,
        hi: datetime,
    ) -> Any:
        """The rows of the days ``[first, after)`` within ``[lo, hi)``: from the file
        ``source``, or the database when None (inside the read transaction)."""
        day_lo, day_hi = day_start(first), day_start(after)
        if source is None:
            return self._minutes_arrow(pa, schema, max(lo, day_lo), min(hi, day_hi))
        rows = source.days(first, after)
        if lo <= day_lo and day_hi <= hi:
            return rows
        import pyarrow.compute as pc

        stamp = schema.field("time").type
        time = rows.column("time")
        keep = pc.and_(
            pc.greater_equal(time, pa.scalar(lo, type=stamp)),
            pc.less(time, pa.scalar(hi, type=stamp)),
        )
        return rows.filter(keep)

    def _write_month(
        self,
        pa: Any,
        schema: Any,
        catalog: Catalog,
        month: datetime,
        held: MonthFile | None,
        tokens: dict[int, int],
        closed_after: int,
    ) -> MonthFile | None:
        """Write the file of ``month``'s days before ``closed_after`` from this snapshot (the
        current days of ``held``, the database for the rest); the new file, or ``held`` when
        it can't be written (then this reader stops trying)."""
        m0 = month_days(month)[0]
        pieces = []
        day = m0
        while day < closed_after:
            current = held is not None and held.current(day, tokens)
            run = day + 1
            while (
                run < closed_after and (held is not None and held.current(run, tokens)) == current
            ):
                run += 1
            everything = (_EPOCH, day_start(closed_after + 1))
            pieces.append(
                self._segment(pa, schema, held if current else None, day, run, *everything)
            )
            day = run
        table = pa.concat_tables(pieces)
        try:
            return catalog.write(month, table, m0, [tokens.get(d) for d in range(m0, closed_after)])
        except (OSError, pa.ArrowException):
            self._catalog_writes = False
            return held

    def _rows_between(self, what: str, sql: str, start: datetime, end: datetime) -> list[Any]:
        """The rows of ``sql`` (its two parameters: ``start`` and ``end``) in one read."""
        backend = self._backend
        tp = backend.time_param
        with guard(backend, f"read {what}"):
            cursor = backend.execute(sql, (tp(require_utc(start)), tp(require_utc(end))))
            return list(cursor.fetchall())

    def ticks(self, start: datetime, end: datetime) -> list[PriceTick]:
        """Stored ticks with ``start <= time < end``, oldest first."""
        tv = self._backend.time_value
        rows = self._rows_between(
            "ticks",
            "SELECT time, last_price FROM price_ticks WHERE time >= ? AND time < ? ORDER BY time",
            start,
            end,
        )
        return [PriceTick(time=tv(t), last_price=p) for t, p in rows]

    def settlements(self, start: datetime, end: datetime) -> list[FundingSettlement]:
        """Stored funding settlements with ``start <= time < end``, oldest first."""
        tv = self._backend.time_value
        rows = self._rows_between(
            "settlements",
            "SELECT id, time, fixing_price, funding_rate FROM funding_settlements "
            "WHERE time >= ? AND time < ? ORDER BY time",
            start,
            end,
        )
        return [
            FundingSettlement(id=str(i), time=tv(t), fixing_price=f, funding_rate=r)
            for i, t, f, r in rows
        ]

    def price_history_facts(self) -> PriceHistoryFacts:
        """Bounds, every hole between them, verified-empty ranges, earliest unstable candle.

        Holes are reported wherever they are (from ``ohlc_coverage``; from a scan of the
        candles on a schema-1 database).
        """
        return _queries.price_history_facts(self._backend, coverage=self._coverage)

    def funding_facts(self, *, scan_from: datetime) -> FundingSettlementsFacts:
        """Settlement bounds and stored settlement times since ``scan_from``."""
        return _queries.funding_facts(self._backend, scan_from)

    def close(self) -> None:
        """Close this thread's connection."""
        with guard(None, "close"):
            self._backend.close()


def probe_database(url: str) -> bool:
    """Whether there is a qx_actors database at ``url`` to read: False when there is nothing
    yet (no SQLite file, no schema); a database that is there but can't be read (permissions,
    not a database, server down, wrong password) raises its ``StorageError``."""
    try:
        Database(url).close()
    except NoDatabaseError:
        return False
    return True
