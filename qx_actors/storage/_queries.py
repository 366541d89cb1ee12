"""Read queries shared by the writer's :class:`Storage` and the users' :class:`Database`."""

from __future__ import annotations

import itertools
from datetime import datetime

from qx_actors.domain.funding import FundingSettlementsFacts
from qx_actors.domain.history import PriceHistoryFacts
from qx_actors.domain.spans import runs as runs_of
from qx_actors.domain.timeutil import MINUTE

from ._backend import Backend, guard
from ._postgres import PostgresBackend

#: The gaps-and-islands runs of consecutive stored minutes, computed from ``ohlc_candles``: a
#: minute's number minus its rank is the same for every minute of a run. Rows: (first, last).
_SQLITE_RUNS_SQL = (
    "SELECT MIN(time), MAX(time) FROM (SELECT time, "
    "unixepoch(time) / 60 - ROW_NUMBER() OVER (ORDER BY time) AS run FROM ohlc_candles) "
    "GROUP BY run ORDER BY 1"
)
_POSTGRES_RUNS_SQL = (
    "SELECT MIN(time), MAX(time) FROM (SELECT time, "
    "CAST(EXTRACT(EPOCH FROM time) AS BIGINT) / 60 - ROW_NUMBER() OVER (ORDER BY time) AS run "
    "FROM ohlc_candles) AS t GROUP BY run ORDER BY 1"
)
_COVERAGE_SQL = "SELECT first_minute, last_minute FROM ohlc_coverage ORDER BY first_minute"
#: The unstable candles' times (few: the last hour and the neighbours of flagged holes, read
#: through the partial index on unstable candles); grouped into runs in Python.
_UNSTABLE_SQL = "SELECT time FROM ohlc_candles WHERE NOT stable ORDER BY time"


def candle_runs_sql(backend: Backend) -> str:
    """SQL listing the runs of consecutive stored minutes from the candles themselves (a scan
    of the whole table: for the migration and for databases not migrated yet)."""
    return _POSTGRES_RUNS_SQL if isinstance(backend, PostgresBackend) else _SQLITE_RUNS_SQL


def rebuild_coverage(backend: Backend) -> int:
    """Replace ``ohlc_coverage`` with the runs of the stored candles; returns how many runs.

    Run it inside a write transaction (the schema migration does).
    """
    backend.execute("DELETE FROM ohlc_coverage")
    cursor = backend.execute(
        f"INSERT INTO ohlc_coverage (first_minute, last_minute) {candle_runs_sql(backend)}"
    )
    return max(int(cursor.rowcount), 0)


def _first_time(backend: Backend, sql: str) -> datetime | None:
    row = backend.execute(sql).fetchone()
    return None if row is None else backend.time_value(row[0])


def price_history_facts(backend: Backend, *, coverage: bool = True) -> PriceHistoryFacts:
    """Bounds, every hole between them, verified-empty ranges, the runs of unstable candles.

    All from one snapshot. Bounds and holes come from ``ohlc_coverage`` (one row per run of
    stored minutes, so one per hole: no scan of the candles); ``coverage=False`` computes the
    runs from the candles instead (a database still at schema version 1). The unstable
    candles come from the partial index on unstable candles.
    """
    with guard(backend, "price history facts"), backend.read_txn():
        tv = backend.time_value
        sql = _COVERAGE_SQL if coverage else candle_runs_sql(backend)
        runs = [(tv(first), tv(last)) for first, last in backend.execute(sql).fetchall()]
        cursor = backend.execute(
            "SELECT first_minute, last_minute FROM ohlc_verified_empty ORDER BY first_minute"
        )
        verified = tuple((tv(first), tv(last)) for first, last in cursor.fetchall())
        unstable_times = [tv(row[0]) for row in backend.execute(_UNSTABLE_SQL).fetchall()]
    unstable = tuple(runs_of(unstable_times)) if unstable_times else ()
    holes = tuple(
        (before[1] + MINUTE, after[0] - MINUTE) for before, after in itertools.pairwise(runs)
    )
    return PriceHistoryFacts(
        earliest=runs[0][0] if runs else None,
        latest=runs[-1][1] if runs else None,
        holes=holes,
        verified_empty=verified,
        earliest_unstable=unstable[0][0] if unstable else None,
        unstable=unstable,
    )


def funding_facts(backend: Backend, scan_from: datetime) -> FundingSettlementsFacts:
    """Bounds and every stored settlement time at or after ``scan_from`` (one snapshot)."""
    with guard(backend, "funding settlement facts"), backend.read_txn():
        earliest = _first_time(
            backend, "SELECT time FROM funding_settlements ORDER BY time LIMIT 1"
        )
        latest = _first_time(
            backend, "SELECT time FROM funding_settlements ORDER BY time DESC LIMIT 1"
        )
        cursor = backend.execute(
            "SELECT time FROM funding_settlements WHERE time >= ? ORDER BY time",
            (backend.time_param(scan_from),),
        )
        times = tuple(backend.time_value(row[0]) for row in cursor.fetchall())
    return FundingSettlementsFacts(earliest=earliest, latest=latest, stored_times_in_scan=times)
