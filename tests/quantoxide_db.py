"""A quantoxide 0.5.4 or 0.6.0 database for the adoption tests: its own migration SQL, rows
like its.

``QUANTOXIDE_MIGRATIONS`` is the text of quantoxide 0.5.4's ``migrations/*.up.sql``, verbatim
(the crate's git tag ``v0.5.4``); ``QUANTOXIDE_0_6_0_MIGRATIONS`` adds the one 0.6.0 added
(tag ``v0.6.0``: ``20260420143038``, ``running_trades.account_id``; 0.5.5 has it too; the
others are unchanged). ``QUANTOXIDE_RELEASES`` maps each release to its set.
:func:`create_quantoxide_schema` applies a release's migrations as sqlx does (one transaction
each, recorded in ``_sqlx_migrations`` with their SHA-384 checksums).
:func:`fill_quantoxide` stores candles, ticks and settlements from a simulator's truth the way
quantoxide writes them (``volume`` as a BIGINT, ``stable`` = older than 1 h, ``gap`` on the
first candle of a batch whose predecessor is not stored). :func:`snapshot` reads the catalog of
quantoxide's tables and every row, independently of the code under test.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import psycopg2
import psycopg2.extras

from qx_actors.simulator.market import Market

#: quantoxide 0.5.4's migrations: (version, description, up SQL), verbatim
QUANTOXIDE_MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        20251124124349,
        "create ohlc candles table",
        """CREATE TABLE ohlc_candles (
    time TIMESTAMPTZ NOT NULL PRIMARY KEY,
    open DOUBLE PRECISION NOT NULL,
    high DOUBLE PRECISION NOT NULL,
    low DOUBLE PRECISION NOT NULL,
    close DOUBLE PRECISION NOT NULL,
    volume BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW (),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW (),
    gap BOOLEAN NOT NULL DEFAULT FALSE,
    stable BOOLEAN NOT NULL DEFAULT TRUE
);

CREATE INDEX idx_ohlc_candles_gaps ON ohlc_candles (gap)
WHERE gap IS TRUE;

CREATE OR REPLACE FUNCTION update_ohlc_candles_updated_at()
RETURNS TRIGGER AS $$
BEGIN
    NEW.updated_at = NOW();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER trigger_ohlc_candles_updated_at
BEFORE UPDATE ON ohlc_candles
FOR EACH ROW
EXECUTE FUNCTION update_ohlc_candles_updated_at();
""",
    ),
    (
        20251204134907,
        "create price ticks table",
        """CREATE TABLE price_ticks (
    time TIMESTAMPTZ NOT NULL PRIMARY KEY,
    last_price DOUBLE PRECISION NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW ()
);
""",
    ),
    (
        20251204134950,
        "create running trades table",
        """CREATE TABLE running_trades (
    trade_id UUID NOT NULL PRIMARY KEY,
    trailing_stoploss DOUBLE PRECISION,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW (),
    CONSTRAINT trailing_stoploss_bounded CHECK (
        trailing_stoploss IS NULL OR (trailing_stoploss >= 0.1 AND trailing_stoploss <= 99.9)
    )
);
""",
    ),
    (
        20260220195233,
        "create funding settlements table",
        """CREATE TABLE funding_settlements (
    id UUID NOT NULL PRIMARY KEY,
    time TIMESTAMPTZ NOT NULL UNIQUE,
    fixing_price DOUBLE PRECISION NOT NULL,
    funding_rate DOUBLE PRECISION NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
""",
    ),
)

#: quantoxide 0.6.0's migrations: 0.5.4's and the one it added, verbatim (tag ``v0.6.0``)
QUANTOXIDE_0_6_0_MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    *QUANTOXIDE_MIGRATIONS,
    (
        20260420143038,
        "update running trades table",
        """TRUNCATE TABLE running_trades;

ALTER TABLE running_trades
    ADD COLUMN account_id UUID NOT NULL;

ALTER TABLE running_trades
    DROP CONSTRAINT running_trades_pkey;

ALTER TABLE running_trades
    ADD PRIMARY KEY (account_id, trade_id);
""",
    ),
)

#: each quantoxide release's migrations (``create_quantoxide_schema(url, release=...)``)
QUANTOXIDE_RELEASES: dict[str, tuple[tuple[int, str, str], ...]] = {
    "0.5.4": QUANTOXIDE_MIGRATIONS,
    "0.6.0": QUANTOXIDE_0_6_0_MIGRATIONS,
}

#: sqlx's bookkeeping table (``sqlx-postgres``, ``ensure_migrations_table``)
SQLX_MIGRATIONS_DDL = """CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
    success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL,
    execution_time BIGINT NOT NULL
);"""

#: every table quantoxide's migrations make
QUANTOXIDE_TABLE_NAMES = (
    "_sqlx_migrations",
    "funding_settlements",
    "ohlc_candles",
    "price_ticks",
    "running_trades",
)
#: the primary key of each, to read the rows in order
_ORDER = {
    "_sqlx_migrations": "version",
    "funding_settlements": "id",
    "ohlc_candles": "time",
    "price_ticks": "time",
    "running_trades": "trade_id",
}
UNSTABLE_AGE = timedelta(hours=1)


@contextmanager
def connect(url: str) -> Iterator[Any]:
    """An autocommit psycopg2 cursor on ``url`` (session time zone UTC)."""
    conn = psycopg2.connect(url, options="-c TimeZone=UTC")
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            yield cursor
    finally:
        conn.close()


def create_quantoxide_schema(
    url: str, migrations: Sequence[int] | None = None, *, release: str = "0.5.4"
) -> None:
    """Apply quantoxide ``release``'s migrations (all, or the versions in ``migrations``) as
    sqlx does."""
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cursor:
            cursor.execute(SQLX_MIGRATIONS_DDL)
        for version, description, sql in QUANTOXIDE_RELEASES[release]:
            if migrations is not None and version not in migrations:
                continue
            with conn, conn.cursor() as cursor:
                cursor.execute(sql)
                cursor.execute(
                    "INSERT INTO _sqlx_migrations (version, description, success, checksum, "
                    "execution_time) VALUES (%s, %s, TRUE, %s, 1234567)",
                    (version, description, hashlib.sha384(sql.encode()).digest()),
                )
    finally:
        conn.close()


def fill_quantoxide(
    url: str, market: Market, *, start: datetime, last: datetime, now: datetime
) -> None:
    """Store quantoxide-style rows: the final candles of ``[start, last]``, ticks every 30 s of
    the last two hours before ``now``, the settlements of ``[start, now]``, one running trade
    (with an ``account_id`` when the table has one: 0.6.0's).

    Candles carry quantoxide's flags (``stable`` = at least 1 h old at ``now``, ``gap`` on the
    first one), ``volume`` as an integer, and ``created_at``/``updated_at`` of their own (older
    rows written once, a few rewritten later, as quantoxide's upsert does for revised candles).
    """
    candles = market.final_candles(start, last)
    rows = []
    for n, c in enumerate(candles):
        created = c.time + timedelta(seconds=61)
        updated = created + timedelta(minutes=30) if n % 97 == 0 else created
        stable = c.time <= now - UNSTABLE_AGE
        rows.append(
            (
                c.time,
                c.open,
                c.high,
                c.low,
                c.close,
                int(c.volume),
                created,
                updated,
                n == 0,
                stable,
            )
        )
    tick_start = now - timedelta(hours=2)
    ticks = [
        (t, market.price_at(t), t + timedelta(milliseconds=5))
        for t in (tick_start + timedelta(seconds=30 * i) for i in range(240))
    ]
    settlements = [
        (s.id, s.time, s.fixing_price, s.funding_rate, s.time + timedelta(minutes=1))
        for s in market.settlements(start, now)
    ]
    conn = psycopg2.connect(url, options="-c TimeZone=UTC")
    try:
        with conn, conn.cursor() as cursor:
            # quantoxide's own rows are inserted, never updated: the trigger does not run
            psycopg2.extras.execute_values(
                cursor,
                "INSERT INTO ohlc_candles (time, open, high, low, close, volume, created_at, "
                "updated_at, gap, stable) VALUES %s",
                rows,
                page_size=1000,
            )
            psycopg2.extras.execute_values(
                cursor, "INSERT INTO price_ticks (time, last_price, created_at) VALUES %s", ticks
            )
            psycopg2.extras.execute_values(
                cursor,
                "INSERT INTO funding_settlements (id, time, fixing_price, funding_rate, "
                "created_at) VALUES %s",
                settlements,
            )
            cursor.execute(
                "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = 'public' "
                "AND table_name = 'running_trades' AND column_name = 'account_id'"
            )
            if cursor.fetchone()[0]:
                cursor.execute(
                    "INSERT INTO running_trades (account_id, trade_id, trailing_stoploss) "
                    "VALUES (%s, %s, 12.5)",
                    (str(uuid.uuid4()), str(uuid.uuid4())),
                )
            else:
                cursor.execute(
                    "INSERT INTO running_trades (trade_id, trailing_stoploss) VALUES (%s, 12.5)",
                    (str(uuid.uuid4()),),
                )
    finally:
        conn.close()


def catalog(url: str, tables: Sequence[str] = QUANTOXIDE_TABLE_NAMES) -> dict[str, Any]:
    """Columns (type, nullability, default), constraints, indexes, triggers of ``tables``, and
    quantoxide's trigger function, from ``information_schema`` and the ``pg_*`` catalogs."""
    out: dict[str, Any] = {}
    with connect(url) as cursor:
        for table in tables:
            cursor.execute(
                "SELECT column_name, data_type, is_nullable, column_default, ordinal_position "
                "FROM information_schema.columns WHERE table_schema = 'public' "
                "AND table_name = %s ORDER BY ordinal_position",
                (table,),
            )
            columns = cursor.fetchall()
            cursor.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
                "AND tablename = %s ORDER BY indexname",
                (table,),
            )
            indexes = cursor.fetchall()
            cursor.execute(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = %s::regclass ORDER BY conname",
                (table,),
            )
            constraints = cursor.fetchall()
            cursor.execute(
                "SELECT trigger_name, event_manipulation, action_timing, action_orientation, "
                "action_statement FROM information_schema.triggers "
                "WHERE event_object_table = %s ORDER BY trigger_name",
                (table,),
            )
            triggers = cursor.fetchall()
            out[table] = {
                "columns": columns,
                "indexes": indexes,
                "constraints": constraints,
                "triggers": triggers,
            }
        cursor.execute(
            "SELECT proname, prosrc FROM pg_proc WHERE proname = 'update_ohlc_candles_updated_at'"
        )
        out["functions"] = cursor.fetchall()
    return out


def rows(url: str, table: str) -> list[tuple[Any, ...]]:
    """Every row of ``table``, in primary-key order."""
    with connect(url) as cursor:
        cursor.execute(f"SELECT * FROM {table} ORDER BY {_ORDER[table]}")
        return [tuple(row) for row in cursor.fetchall()]


def snapshot(url: str) -> dict[str, Any]:
    """The catalog of quantoxide's tables and every row of them."""
    return {
        "catalog": catalog(url),
        "rows": {table: rows(url, table) for table in QUANTOXIDE_TABLE_NAMES},
    }


def tables(url: str) -> set[str]:
    """The tables of the ``public`` schema."""
    with connect(url) as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row[0] for row in cursor.fetchall()}
