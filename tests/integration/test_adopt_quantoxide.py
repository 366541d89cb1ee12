"""A quantoxide database adopted and synced, end to end, on a real PostgreSQL server.

The database is built from quantoxide's own migration SQL, once per release adopted (0.5.4 and
0.6.0, whose ``running_trades`` has an ``account_id``), and filled with three days of the
simulator's candles, ticks and settlements as quantoxide stores them. ``qx-actors sync``
refuses it naming ``qx-actors adopt --database URL``; ``qx-actors adopt`` adds our tables only;
the engine then continues from the stored history: no request asks again for a stored stable
minute or a stored settlement, and every row it had no reason to touch (candles stable and
older than 1 h when stored, every tick, settlement, running trade and sqlx record) is unchanged
field by field, under quantoxide's unchanged catalog (``volume`` still BIGINT, the trigger,
the partial index).
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from qx_actors.app import cli
from qx_actors.domain.history import last_stable_minute
from qx_actors.domain.timeutil import MINUTE, floor_day, floor_minute, parse_rfc3339
from qx_actors.simulator.rest import RequestRecord
from qx_actors.status import State
from qx_actors.storage import Database
from tests.integration.conftest import Harness
from tests.quantoxide_db import (
    QUANTOXIDE_RELEASES,
    QUANTOXIDE_TABLE_NAMES,
    connect,
    create_quantoxide_schema,
    fill_quantoxide,
    rows,
    snapshot,
    tables,
)

pytestmark = pytest.mark.postgres

Span = tuple[datetime, datetime]
ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``qx-actors`` with ``args`` as a real process, to completion."""
    return subprocess.run(
        [sys.executable, "-m", "qx_actors.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )


@pytest.fixture
def database_url(postgres_db_url: str) -> str:
    """PostgreSQL only: quantoxide databases are PostgreSQL databases."""
    return postgres_db_url


def asked(records: list[RequestRecord], endpoint: str) -> list[Span]:
    """The window each ``endpoint`` request of ``records`` was for.

    Our REST client asks ``from = start - 1 min`` and ``to = end + 1 min`` (the exchange does
    not document which bound is inclusive) and drops the items just outside: the window is
    ``[from + 1 min, to - 1 min]``, narrowed by the (exclusive) cursor of a next page.
    """
    spans = []
    for record in records:
        if record.endpoint != endpoint or "from" not in record.query:
            continue
        last = parse_rfc3339(record.query["to"]) - MINUTE
        if "cursor" in record.query:
            last = min(last, parse_rfc3339(record.query["cursor"]) - MINUTE)
        spans.append((parse_rfc3339(record.query["from"]) + MINUTE, last))
    return spans


def overlapping(spans: list[Span], first: datetime, last: datetime) -> list[Span]:
    return [s for s in spans if s[0] <= last and first <= s[1]]


@pytest.mark.parametrize("release", list(QUANTOXIDE_RELEASES))
def test_quantoxide_database_is_adopted_and_synced_without_downloading_it_again(
    harness: Harness, tmp_path: Path, release: str
) -> None:
    url = harness.database_url
    t0 = harness.now()
    sim = harness.simulator()
    # three days of quantoxide's history ending 20 min ago (its last hour unstable); the reach
    # (3 days, floored to midnight) starts an hour before it: that hour is all there is to fetch
    start = floor_day(t0 - timedelta(days=3)) + timedelta(hours=1)
    last = floor_minute(t0) - 20 * MINUTE
    create_quantoxide_schema(url, release=release)
    fill_quantoxide(url, sim.market, start=start, last=last, now=t0)
    before = snapshot(url)
    settled = [row[1] for row in before["rows"]["funding_settlements"]]
    assert len(settled) >= 6  # every 8 h

    # sync refuses it, naming adopt: exit 1 (the run fails at start), no traceback
    config = tmp_path / "qx.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "mode": "backfill",
                "database": url,
                "exchange": {"rest_url": sim.rest_url, "stream_enabled": False},
                "sync": {"shutdown_timeout_s": 3},
            }
        )
    )
    done = run_cli("sync", "--config", str(config))
    assert 1 == done.returncode, done.stderr
    assert "qx-actors adopt --database URL" in done.stderr
    assert "Traceback" not in done.stderr
    assert before == snapshot(url)
    # the refused run's fetcher may have asked something before the run failed: not counted
    refused_requests = len(sim.requests())

    # adopt: our tables only, quantoxide's catalog and rows untouched; a second time a no-op
    done = run_cli("adopt", "--database", url)
    assert 0 == done.returncode, done.stderr
    assert f"adopted the quantoxide {release} database" in done.stdout
    assert before == snapshot(url)
    assert set(QUANTOXIDE_TABLE_NAMES) < tables(url)
    done = run_cli("adopt", "--database", url)
    assert (0, True) == (done.returncode, "already a qx_actors database" in done.stdout)

    # sync continues from the stored history
    run = harness.start(
        harness.config(sim, price_history_reach="3d", funding_settlement_reach="3d")
    )
    run.wait_for_state(State.BACKFILLED, timeout=60)
    run.shutdown()
    now = harness.now()

    stable_last = max(row[0] for row in before["rows"]["ohlc_candles"] if row[9])
    records = sim.requests()[refused_requests:]
    candle_asks = asked(records, "candles")
    assert [] == overlapping(candle_asks, start, stable_last)
    # what it did fetch: the unstable tail, and the hour of the reach before the stored history
    # (unless midnight passed since t0: the 3-day reach, floored to a day, then starts later)
    assert overlapping(candle_asks, stable_last + MINUTE, last)
    reach = floor_day(t0 - timedelta(days=3))
    if reach == floor_day(now - timedelta(days=3)):
        assert overlapping(candle_asks, reach, start - MINUTE)
    else:
        reach = start
    assert [] == overlapping(asked(records, "funding-settlements"), min(settled), max(settled))

    after = snapshot(url)
    assert before["catalog"] == after["catalog"]  # volume BIGINT, trigger, indexes
    # every tick, settlement, running trade and sqlx record is still there, field by field
    for table in ("price_ticks", "funding_settlements", "running_trades", "_sqlx_migrations"):
        by_key = {row[0]: row for row in after["rows"][table]}
        assert before["rows"][table] == [by_key.get(row[0]) for row in before["rows"][table]]
    # every candle the engine had no reason to touch (stable and over 1 h old when stored)
    untouched = [row for row in before["rows"]["ohlc_candles"] if row[9]]
    now_rows = {row[0]: row for row in after["rows"]["ohlc_candles"]}
    assert untouched == [now_rows[row[0]] for row in untouched]
    # the unstable tail was fetched again: final values, created_at kept, updated_at newer
    for row in before["rows"]["ohlc_candles"]:
        if not row[9] and row[0] <= last_stable_minute(now):
            assert row[6] == now_rows[row[0]][6]
            assert row[7] < now_rows[row[0]][7]

    # the whole reach, as stored now, is the exchange's truth; volume still an integer column
    stable_now = last_stable_minute(now) - MINUTE
    with Database(url) as db:
        stored = db.candles(reach, stable_now + MINUTE, now=now)
    assert [
        (c.time, c.open, c.high, c.low, c.close, c.volume)
        for c in sim.market.final_candles(reach, stable_now)
    ] == [(c.time, c.open, c.high, c.low, c.close, c.volume) for c in stored]
    assert all(isinstance(row[5], int) for row in rows(url, "ohlc_candles"))
    with connect(url) as cursor:
        cursor.execute("SELECT COUNT(*) FROM ohlc_coverage")
        assert [(1,)] == cursor.fetchall()


def test_adopt_exit_codes(postgres_db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """0 for an empty database (nothing done) and ours, 2 for any other one (nothing changed),
    1 for a database that can't be reached; never a traceback."""
    assert 0 == cli.main(["adopt", "--database", postgres_db_url])
    assert "is empty: nothing to adopt" in capsys.readouterr().out
    with connect(postgres_db_url) as cursor:
        cursor.execute("CREATE TABLE ohlc_candles (time TIMESTAMPTZ PRIMARY KEY)")
    assert 2 == cli.main(["adopt", "--database", postgres_db_url])
    err = capsys.readouterr().err
    assert "can't adopt" in err and "nothing changed" in err and "Traceback" not in err
    assert {"ohlc_candles"} == tables(postgres_db_url)
    unreachable = "postgresql://qx:secret@127.0.0.1:1/nowhere"
    assert 1 == cli.main(["adopt", "--database", unreachable])
    err = capsys.readouterr().err
    assert "DatabaseUnavailable" in err and "secret" not in err and "Traceback" not in err
