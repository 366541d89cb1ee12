"""The writer's storage: fast batch writes, facts queries, and the single-writer lock.

Used by one thread (the DB-writer actor). Every write method is one transaction.
"""

from __future__ import annotations

import bisect
import itertools
import operator
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

from qx_actors.domain.funding import FundingSettlementsFacts
from qx_actors.domain.history import GAP_NEIGHBOURS, PriceHistoryFacts
from qx_actors.domain.spans import Span, merge, runs, subtract_points
from qx_actors.domain.timeutil import MINUTE, UNSTABLE_AGE, require_utc, utc_now
from qx_actors.domain.values import Candle, FundingSettlement, PriceTick
from qx_actors.errors import StorageError

from . import _queries
from ._backend import Backend, Closing, guard
from ._day_tokens import day_number, days_of_spans, touch_days
from ._lock import AdvisoryWriterLock, FileWriterLock, NullWriterLock, WriterLock
from ._open import open_backend
from ._postgres import PostgresBackend
from ._rollups import refresh_rollups
from ._schema import ensure_schema, stored_version
from ._sqlite import SqliteBackend
from ._url import describe_url


def _strictly_ascending(times: list[datetime]) -> bool:
    """Each time after the one before (checked at C speed)."""
    return all(map(operator.lt, times, itertools.islice(times, 1, None)))


def _batch_runs(times: list[datetime]) -> list[Span]:
    """The runs of a batch's ascending minutes. The usual batch, consecutive minutes, is
    checked at C speed; anything else (holes, a minute twice) is walked."""
    lo, hi = times[0], times[-1]
    if hi - lo == (len(times) - 1) * MINUTE and _strictly_ascending(times):
        return [(lo, hi)]
    return runs(times)


_TIME = operator.itemgetter(0)
_SECOND = operator.attrgetter("second")
_MICROSECOND = operator.attrgetter("microsecond")


def _require_whole_minutes(times: list[datetime]) -> None:
    """Raise ``ValueError`` naming the first time that is not a whole minute (checked at C
    speed: this is the hot path of a backfill)."""
    if any(map(_SECOND, times)) or any(map(_MICROSECOND, times)):
        bad = next(t for t in times if t.second or t.microsecond)
        raise ValueError(f"candle time {bad.isoformat()} is not a whole minute")


class Storage(Closing):
    """A database opened for writing (see :func:`open_storage`)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._lock: WriterLock | None = None

    # --- properties -----------------------------------------------------------------------

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._backend.name

    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return describe_url(self._backend.url)

    def schema_version(self) -> int | None:
        """The stored schema version."""
        with guard(self._backend, "schema version"):
            return stored_version(self._backend)

    # --- candles --------------------------------------------------------------------------

    def upsert_candles(
        self, candles: Sequence[Candle], *, now: datetime, served_at: datetime | None = None
    ) -> int:
        """Insert or update candles in one transaction; returns the number of candles written.

        ``stable`` is ``time < served_at - 1 h`` (``served_at``: when the exchange was asked
        for them, ``now`` if not given: a candle is final only if it was when served), ``gap``
        is cleared, ``created_at`` is kept on update
        and ``updated_at`` set to ``now``. Verified-empty ranges that the candles fall into
        shrink, split or disappear; the coverage runs and the rollup buckets holding these
        minutes are brought up to date, and the days they fall in get new tokens (the columnar
        copy of those days is stale from this commit on). Candle times must be aware UTC
        datetimes.
        """
        if not candles:
            return 0
        backend = self._backend
        cutoff = min(now, served_at or now) - UNSTABLE_AGE
        if isinstance(backend, PostgresBackend):
            # one INSERT ... ON CONFLICT can't touch a row twice: the last duplicate wins
            distinct = {c.time for c in candles}
            if len(distinct) != len(candles):
                candles = list({c.time: c for c in candles}.values())
        rows = [
            (c.time, c.open, c.high, c.low, c.close, c.volume, c.time < cutoff) for c in candles
        ]
        # Ascending inserts are ~20 % faster, and the pages of a batch come newest first, each
        # ascending: a stable sort (a minute twice keeps its order: the later still wins) that
        # merges those runs at C speed, like every check below (the hot path of a backfill).
        rows.sort(key=_TIME)
        times = list(map(_TIME, rows))
        _require_whole_minutes(times)
        lo, hi = times[0], times[-1]
        # PostgreSQL: the statements that read nothing travel with the next one (batched)
        with (
            guard(backend, f"upsert {len(rows)} candles"),
            backend.write_txn(),
            backend.batched(),
        ):
            backend.upsert_candle_rows(rows, now)
            self._shrink_verified_empty(lo, hi, times, now)
            batch_runs = _batch_runs(times)
            self._extend_coverage(batch_runs)
            touch_days(backend, days_of_spans(batch_runs))
            refresh_rollups(backend, batch_runs)
        return len(rows)

    def _extend_coverage(self, batch_runs: Sequence[Span]) -> None:
        """Merge the runs of a batch into ``ohlc_coverage`` (same transaction as the candles).

        Only the stored runs that overlap or touch ``[lo - 1m, hi + 1m]`` can change: the one
        starting before ``lo`` (if it reaches ``lo - 1m``) and those starting within the batch's
        bounds, both found through the primary key. Re-writing stored minutes changes nothing.
        """
        backend = self._backend
        tp, tv = backend.time_param, backend.time_value
        lo, hi = batch_runs[0][0], batch_runs[-1][1]
        cursor = backend.execute(
            "SELECT first_minute, last_minute FROM (SELECT first_minute, last_minute "
            "FROM ohlc_coverage WHERE first_minute < ? ORDER BY first_minute DESC LIMIT 1) AS b "
            "UNION ALL SELECT first_minute, last_minute FROM ohlc_coverage "
            "WHERE first_minute >= ? AND first_minute <= ?",
            (tp(lo), tp(lo), tp(hi + MINUTE)),
        )
        old = sorted(
            (first, last)
            for first, last in ((tv(f), tv(la)) for f, la in cursor.fetchall())
            if last >= lo - MINUTE
        )
        new = merge([*old, *batch_runs])
        if new == old:
            return
        old_last = dict(old)
        new_first = {first for first, _ in new}
        gone = [first for first, _ in old if first not in new_first]
        added = [(first, last) for first, last in new if first not in old_last]
        # a run that grew at its start (a backfill, newest page first) keeps its row: the
        # new start is no stored run's (every run starting in the batch's bounds was read)
        for (first, last), old_first in zip(added, gone, strict=False):
            backend.defer(
                "UPDATE ohlc_coverage SET first_minute = ?, last_minute = ? WHERE first_minute = ?",
                (tp(first), tp(last), tp(old_first)),
            )
        for old_first in gone[len(added) :]:
            backend.defer("DELETE FROM ohlc_coverage WHERE first_minute = ?", (tp(old_first),))
        for first, last in added[len(gone) :]:
            backend.defer(
                "INSERT INTO ohlc_coverage (first_minute, last_minute) VALUES (?, ?)",
                (tp(first), tp(last)),
            )
        for first, last in new:
            if first in old_last and old_last[first] != last:
                backend.defer(
                    "UPDATE ohlc_coverage SET last_minute = ? WHERE first_minute = ?",
                    (tp(last), tp(first)),
                )

    def _overlapping_verified(self, lo: datetime, hi: datetime) -> list[tuple[Span, datetime]]:
        backend = self._backend
        tp, tv = backend.time_param, backend.time_value
        cursor = backend.execute(
            "SELECT first_minute, last_minute, verified_at FROM ohlc_verified_empty "
            "WHERE first_minute <= ? AND last_minute >= ? ORDER BY first_minute",
            (tp(hi), tp(lo)),
        )
        return [((tv(f), tv(la)), tv(at)) for f, la, at in cursor.fetchall()]

    def _replace_verified(
        self, old: Iterable[Span], new: Iterable[Span], verified_at: datetime
    ) -> None:
        backend = self._backend
        tp = backend.time_param
        for first, _ in old:
            backend.defer("DELETE FROM ohlc_verified_empty WHERE first_minute = ?", (tp(first),))
        for first, last in new:
            backend.defer(
                "INSERT INTO ohlc_verified_empty (first_minute, last_minute, verified_at) "
                "VALUES (?, ?, ?)",
                (tp(first), tp(last), tp(verified_at)),
            )

    def _shrink_verified_empty(
        self, lo: datetime, hi: datetime, times: Iterable[datetime], now: datetime
    ) -> None:
        overlapping = self._overlapping_verified(lo, hi)
        if not overlapping:
            return
        written = sorted(times)  # (ascending already from upsert_candles: a linear check)
        for (first, last), verified_at in overlapping:
            start = bisect.bisect_left(written, first)
            stop = bisect.bisect_right(written, last)
            if start == stop:
                continue
            pieces = subtract_points((first, last), written[start:stop])
            self._replace_verified([(first, last)], pieces, verified_at)

    def record_verified_empty(self, ranges: Sequence[Span], *, now: datetime) -> None:
        """Record inclusive minute ranges the exchange confirmed empty (merged with known ones).

        Minutes that do hold a stored candle are left out: a stored candle always wins.
        """
        if not ranges:
            return
        for first, last in ranges:
            require_utc(first, "verified-empty start")
            require_utc(last, "verified-empty end")
        new = merge((f, la) for f, la in ranges if f <= la)
        backend = self._backend
        tp, tv = backend.time_param, backend.time_value
        with guard(backend, f"record {len(new)} verified-empty ranges"), backend.write_txn():
            for first, last in new:
                old = [r for r, _ in self._overlapping_verified(first - MINUTE, last + MINUTE)]
                union = merge([*old, (first, last)])
                cursor = backend.execute(
                    "SELECT time FROM ohlc_candles WHERE time >= ? AND time <= ? ORDER BY time",
                    (tp(union[0][0]), tp(union[-1][1])),
                )
                stored = [tv(row[0]) for row in cursor.fetchall()]
                pieces = [p for span in union for p in subtract_points(span, stored)]
                self._replace_verified(old, pieces, now)

    def flag_holes(self, holes: Sequence[Span], neighbours: int = GAP_NEIGHBOURS) -> None:
        """For each hole (inclusive missing minutes): mark the next candle ``gap`` and the
        ``neighbours`` stored candles on either side unstable (so they are fetched again);
        the rollup buckets holding them follow."""
        if not holes:
            return
        backend = self._backend
        tp, tv = backend.time_param, backend.time_value
        changed: list[datetime] = []
        with guard(backend, f"flag {len(holes)} holes"), backend.write_txn():
            for first, last in holes:
                for sql, params in (
                    (
                        "UPDATE ohlc_candles SET gap = TRUE WHERE time = "
                        "(SELECT MIN(time) FROM ohlc_candles WHERE time > ?) RETURNING time",
                        (tp(last),),
                    ),
                    (
                        "UPDATE ohlc_candles SET stable = FALSE WHERE time IN (SELECT time FROM "
                        "ohlc_candles WHERE time < ? ORDER BY time DESC LIMIT ?) RETURNING time",
                        (tp(first), neighbours),
                    ),
                    (
                        "UPDATE ohlc_candles SET stable = FALSE WHERE time IN (SELECT time FROM "
                        "ohlc_candles WHERE time > ? ORDER BY time LIMIT ?) RETURNING time",
                        (tp(last), neighbours),
                    ),
                ):
                    changed.extend(tv(row[0]) for row in backend.execute(sql, params).fetchall())
            if changed:
                refresh_rollups(backend, runs(sorted(changed)))
                touch_days(backend, sorted({day_number(time) for time in changed}))

    # --- ticks and settlements ------------------------------------------------------------

    def insert_new_ticks(
        self, ticks: Sequence[PriceTick], *, now: datetime | None = None
    ) -> list[PriceTick]:
        """Insert the ticks whose time is not stored yet; returns exactly those, in order.

        Duplicates within the batch keep their first occurrence. One transaction, one
        ``INSERT ... ON CONFLICT DO NOTHING RETURNING time`` per 1000 ticks: the database says
        which times were new.
        """
        if not ticks:
            return []
        unique: dict[datetime, PriceTick] = {}
        for tick in ticks:
            unique.setdefault(tick.time, tick)
        backend = self._backend
        tv = backend.time_value
        created = now or utc_now()
        with guard(backend, f"insert {len(unique)} ticks"), backend.write_txn():
            inserted = backend.insert_tick_rows(
                [(t.time, t.last_price) for t in unique.values()], created
            )
        if len(inserted) == len(unique):
            return list(unique.values())
        new = {tv(time) for time in inserted}
        return [tick for time, tick in unique.items() if time in new]

    def prune_ticks(self, up_to: datetime) -> int:
        """Delete the ticks at or before ``up_to``; returns how many were deleted."""
        backend = self._backend
        with guard(backend, "prune ticks"), backend.write_txn():
            cursor = backend.execute(
                "DELETE FROM price_ticks WHERE time <= ?", (backend.time_param(up_to),)
            )
            return max(int(cursor.rowcount), 0)

    def upsert_settlements(
        self, settlements: Sequence[FundingSettlement], *, now: datetime | None = None
    ) -> int:
        """Store settlements; a known id or time keeps the stored row. Returns how many were new."""
        if not settlements:
            return 0
        created = now or utc_now()
        backend = self._backend
        tp = backend.time_param
        try:
            rows = [
                (str(uuid.UUID(s.id)), tp(s.time), s.fixing_price, s.funding_rate, tp(created))
                for s in settlements
            ]
        except ValueError as exc:
            raise StorageError(f"invalid settlement id: {exc}") from exc
        with guard(backend, f"store {len(rows)} settlements"), backend.write_txn():
            return backend.insert_settlement_rows(rows)

    # --- facts ----------------------------------------------------------------------------

    def price_history_facts(self) -> PriceHistoryFacts:
        """What the stored candles look like (one consistent snapshot): bounds, every hole
        between them (from ``ohlc_coverage``, no scan, wherever they are), verified-empty
        ranges, the earliest unstable candle."""
        return _queries.price_history_facts(self._backend)

    def coverage(self) -> list[Span]:
        """The runs of consecutive stored minutes (``ohlc_coverage``), oldest first."""
        backend = self._backend
        tv = backend.time_value
        with guard(backend, "coverage"):
            cursor = backend.execute(
                "SELECT first_minute, last_minute FROM ohlc_coverage ORDER BY first_minute"
            )
            return [(tv(first), tv(last)) for first, last in cursor.fetchall()]

    def funding_facts(self, *, scan_from: datetime) -> FundingSettlementsFacts:
        """What the stored funding settlements look like (one consistent snapshot)."""
        return _queries.funding_facts(self._backend, scan_from)

    # --- writer lock ----------------------------------------------------------------------

    def acquire_writer_lock(self, holder: str, *, wait_s: float = 0.0) -> None:
        """Become the only writer; another holder raises ``DatabaseInUseError`` naming it.

        ``wait_s`` (PostgreSQL only) waits that long for the lock to be freed, e.g. for the
        server to notice that a killed holder is gone. Taking it twice is a no-op. On
        PostgreSQL the lock is held by the session that writes: once that session is lost
        (``DatabaseUnavailable``), this storage can't write or lock again; open a new one.
        """
        backend = self._backend
        backend.check_usable()
        if self._lock is not None:
            return
        if isinstance(backend, SqliteBackend):
            if backend.memory:
                self._lock = NullWriterLock(holder)  # no other connection can see it
            else:
                self._lock = FileWriterLock(backend.path, holder)
        elif isinstance(backend, PostgresBackend):
            self._lock = AdvisoryWriterLock(backend, holder, timeout_s=wait_s)
        else:
            raise StorageError(f"no writer lock for the {backend.name} backend")

    def release_writer_lock(self) -> None:
        """Stop being the writer (idempotent)."""
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    @property
    def writer_lock_holder(self) -> str | None:
        """Our holder string while we hold the writer lock (None once the session that held
        it on PostgreSQL is lost)."""
        if self._lock is None or self._backend.lost is not None:
            return None
        return self._lock.holder

    # --- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Release the writer lock and close the connection."""
        try:
            self.release_writer_lock()
        finally:
            with guard(None, "close"):
                self._backend.close()


def open_storage(url: str, *, busy_timeout_s: float | None = None) -> Storage:
    """Open (creating or checking the schema) the database at ``url`` for writing.

    ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, ``sqlite:///:memory:``,
    or ``postgresql://user:pass@host:port/db``. ``busy_timeout_s`` (SQLite): how long a write
    waits for another process's lock before ``DatabaseBusyError`` (default 5 s). A server
    that is down or refuses the credentials is ``DatabaseUnavailable`` (the URL shown without
    its password).
    """
    backend = open_backend(url, busy_timeout_s=busy_timeout_s)
    try:
        ensure_schema(backend)
    except BaseException:
        backend.close()
        raise
    return Storage(backend)
