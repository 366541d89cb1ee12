"""Columnar export and the read-only commands, run as the user runs them.

* ``export --format parquet`` round-trips exactly through ``pyarrow.parquet.read_table``
  (both backends), and without pyarrow it says which extra to install (``import pyarrow``
  fails, as when the extra is not installed);
* ``status``, ``export`` and ``plan`` read a database they may only read (a real read-only
  filesystem) and report one that can't be read in one line, with no traceback.

The commands run in this process (the ``cli`` fixture: ``cli.main(argv)``, output captured).
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from qx_actors.app.export import export
from qx_actors.domain.values import Candle, FundingSettlement, PriceTick
from qx_actors.storage import ArrowUnavailable, Database, open_storage
from tests.cli_helpers import CliResult, InProcessCli
from tests.small_fs import mount_small_fs, unmount_small_fs

BASE = datetime(2026, 1, 1, tzinfo=UTC)
#: the written data's clock: the last hour of candles is young (unstable)
NOW = BASE + timedelta(minutes=3000)


def minute(n: int) -> datetime:
    """``BASE`` plus ``n`` minutes."""
    return BASE + timedelta(minutes=n)


def fill(url: str) -> None:
    """Candles (a hole, young ones), ticks with microseconds, settlements."""
    candles = [
        Candle(minute(n), 100.0 + n / 3, 101.5 + n / 3, 99.25 + n / 7, 100.125 + n / 9, n / 4)
        for n in range(3000)
        if not 1200 <= n < 1260
    ]
    with open_storage(url) as storage:
        storage.upsert_candles(candles, now=NOW)
        storage.flag_holes([(minute(1200), minute(1259))])
        storage.insert_new_ticks(
            [PriceTick(minute(10) + timedelta(microseconds=i * 1234), 1.5 + i) for i in range(50)]
        )
        storage.upsert_settlements(
            [
                FundingSettlement(str(uuid.UUID(int=i + 1)), minute(480 * i), 9e4 + i, 1e-4 * i)
                for i in range(6)
            ]
        )


def write_config(path: Path, url: str) -> Path:
    """A config whose database is ``url`` (the reach: where the data starts)."""
    data = {"mode": "backfill", "database": url, "sync": {"price_history_reach": "2026-01-01"}}
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("resolution", ["1m", "1h", "45m"])
def test_export_parquet_round_trips_exactly(
    cli: InProcessCli, storage_url: str, tmp_path: Path, resolution: str
) -> None:
    """The Parquet file read back with ``pyarrow.parquet.read_table`` equals
    ``Database.candles_arrow`` (schema, UTC timestamps, every value) and the rows of
    ``Database.candles``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fill(storage_url)
    config = write_config(tmp_path / "qx.yaml", storage_url)
    out = tmp_path / "candles.parquet"
    done = cli(
        "export", "--config", str(config), "--from", "2026-01-01", "--to", "2026-01-03",
        "--resolution", resolution, "--format", "parquet", "--output", str(out),
    )  # fmt: skip
    assert 0 == done.returncode, done.stderr
    read = pq.read_table(out)
    with Database(storage_url) as db:
        # now=NOW is not what the CLI used (the clock): compare what doesn't depend on it
        expected = db.candles_arrow(BASE, minute(2 * 1440), resolution)
        rows = db.candles(BASE, minute(2 * 1440), resolution)
    assert expected.equals(read), (expected.schema, read.schema)
    assert pa.timestamp("us", tz="UTC") == read.schema.field("time").type
    as_rows = read.to_pylist()
    assert [r.time for r in rows] == [r["time"] for r in as_rows]
    assert [(r.open, r.high, r.low, r.close, r.volume, r.gap, r.minutes) for r in rows] == [
        (r["open"], r["high"], r["low"], r["close"], r["volume"], r["gap"], r["minutes"])
        for r in as_rows
    ]
    assert any(r["gap"] for r in as_rows)


def test_export_parquet_of_ticks_and_settlements(
    cli: InProcessCli, storage_url: str, tmp_path: Path
) -> None:
    """Ticks keep their microseconds, settlements their ids; times are UTC timestamps."""
    import pyarrow.parquet as pq

    fill(storage_url)
    config = write_config(tmp_path / "qx.yaml", storage_url)
    for kind in ("ticks", "settlements"):
        out = tmp_path / f"{kind}.parquet"
        done = cli(
            "export", "--config", str(config), "--from", "2026-01-01", "--to", "2026-01-04",
            "--kind", kind, "--format", "parquet", "--output", str(out),
        )  # fmt: skip
        assert 0 == done.returncode, done.stderr
        read = pq.read_table(out).to_pylist()
        with Database(storage_url) as db:
            if kind == "ticks":
                ticks = db.ticks(BASE, minute(3 * 1440))
                assert [(t.time, t.last_price) for t in ticks] == [
                    (r["time"], r["last_price"]) for r in read
                ]
                assert 50 == len(read)
            else:
                settlements = db.settlements(BASE, minute(3 * 1440))
                assert [(s.id, s.time, s.fixing_price, s.funding_rate) for s in settlements] == [
                    (r["id"], r["time"], r["fixing_price"], r["funding_rate"]) for r in read
                ]
                assert 6 == len(read)


def test_export_parquet_without_pyarrow_names_the_extra(
    cli: InProcessCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without pyarrow (``import pyarrow`` fails, as when the extra is not installed): exit 1,
    one line naming ``pip install 'qx_actors[arrow]'``, nothing written; CSV export still
    works, and ``Database.candles_arrow`` names the extra too."""
    url = f"sqlite:///{tmp_path / 'qx.db'}"
    fill(url)
    config = str(write_config(tmp_path / "qx.yaml", url))
    out = tmp_path / "x.parquet"
    args = ("export", "--config", config, "--from", "2026-01-01", "--to", "2026-01-02")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ImportError):
        import pyarrow  # noqa: F401
    done = cli(*args, "--format", "parquet", "--output", str(out))
    assert 1 == done.returncode
    lines = done.stderr.strip().splitlines()
    assert 1 == len(lines), done.stderr
    assert "pip install 'qx_actors[arrow]'" in lines[0]
    assert "Traceback" not in done.stderr and not out.exists()
    csv = cli(*args, "--format", "csv")
    assert 0 == csv.returncode, csv.stderr
    assert csv.stdout.startswith("time,open,high")

    with Database(url) as db, pytest.raises(ArrowUnavailable, match=r"qx_actors\[arrow\]"):
        db.candles_arrow(datetime(2026, 1, 1, tzinfo=UTC), datetime.now(UTC))


# --- read-only --------------------------------------------------------------------------------


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on its own small tmpfs, to be remounted read-only by the test (root only;
    skipped with the reason elsewhere, a failure under CI)."""
    where = tmp_path / "ro"
    where.mkdir()
    mount_small_fs(where, "16m")
    try:
        yield where
    finally:
        unmount_small_fs(where)


def remount(where: Path, mode: str) -> None:
    """Remount the tmpfs at ``where`` ``ro`` or ``rw``."""
    subprocess.run(["mount", "-o", f"remount,{mode}", str(where)], check=True)


def read_commands(cli: InProcessCli, config: Path) -> dict[str, CliResult]:
    """status, export (CSV) and plan against ``config``."""
    export = ("export", "--config", str(config), "--from", "2026-01-01", "--to", "2026-01-02")
    return {
        "status": cli("status", "--config", str(config)),
        "export": cli(*export, "--resolution", "1h"),
        "plan": cli("plan", "--config", str(config)),
    }


@pytest.mark.parametrize("leftovers", [False, True], ids=["closed-cleanly", "with-wal-and-shm"])
def test_status_export_plan_read_a_database_on_a_read_only_filesystem(
    cli: InProcessCli, read_only_dir: Path, tmp_path: Path, leftovers: bool
) -> None:
    """A database the user may only read (a read-only filesystem: even root can't write) is
    read by status, export and plan: exit 0, the data shown, nothing written."""
    db = read_only_dir / "qx.db"
    url = f"sqlite:///{db}"
    fill(url)
    if leftovers:  # a reader left the -wal/-shm files behind (as after a crash)
        with Database(url) as reader:
            reader.candles(BASE, minute(10))
    config = write_config(tmp_path / "qx.yaml", url)
    before = {p.name: p.read_bytes() for p in read_only_dir.iterdir()}
    remount(read_only_dir, "ro")
    try:
        done = read_commands(cli, config)
    finally:
        remount(read_only_dir, "rw")
    for name, result in done.items():
        assert 0 == result.returncode, (name, result.stderr)
        assert "Traceback" not in result.stderr
    assert "price history" in done["status"].stdout
    # the header, then 23 hours: hour 20 is the hole
    assert 1 + 23 == len(done["export"].stdout.splitlines())
    assert "nothing is written" in done["plan"].stdout
    assert before == {p.name: p.read_bytes() for p in read_only_dir.iterdir()}


def test_a_read_only_file_in_a_writable_directory_is_read(
    cli: InProcessCli, tmp_path: Path
) -> None:
    """A database file with mode 0444 is read (SQLite ``mode=ro``): the readers never try to
    write it, e.g. to switch it to WAL."""
    db = tmp_path / "qx.db"
    fill(f"sqlite:///{db}")
    db.chmod(0o444)
    try:
        done = read_commands(cli, write_config(tmp_path / "qx.yaml", f"sqlite:///{db}"))
    finally:
        db.chmod(0o644)
    for name, result in done.items():
        assert 0 == result.returncode, (name, result.stderr)


def test_an_unreadable_database_is_one_line_and_a_failure(
    cli: InProcessCli, tmp_path: Path
) -> None:
    """A file that is not a database: status, export and plan exit 1 with one line naming
    it, no traceback; plan does not plan a full fetch as if there were no database."""
    db = tmp_path / "qx.db"
    db.write_bytes(b"this is not an SQLite database, just some text " * 200)
    done = read_commands(cli, write_config(tmp_path / "qx.yaml", f"sqlite:///{db}"))
    for name, result in done.items():
        assert 1 == result.returncode, (name, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert 1 == len(lines), (name, result.stderr)
        assert "not a database" in lines[0] and "Traceback" not in result.stderr
        assert "" == result.stdout
    assert not (tmp_path / "qx.db-wal").exists()


def test_plan_without_a_database_still_plans_the_whole_reach(
    cli: InProcessCli, tmp_path: Path
) -> None:
    """No database yet is not an error for plan (it is for status)."""
    config = write_config(tmp_path / "qx.yaml", f"sqlite:///{tmp_path / 'none.db'}")
    done = read_commands(cli, config)
    assert 0 == done["plan"].returncode and "nothing is written" in done["plan"].stdout
    assert 1 == done["status"].returncode and "no database at" in done["status"].stderr
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize(
    ("kind", "fmt", "named"),
    [("candle", "csv", "kind 'candle'"), ("ticks", "xlsx", "format 'xlsx'")],
)
def test_export_refuses_an_unknown_kind_or_format_by_name(
    tmp_path: Path, kind: str, fmt: str, named: str
) -> None:
    url = f"sqlite:///{tmp_path / 'qx.db'}"
    fill(url)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=named):
        export(url, kind=kind, start=BASE, end=NOW, fmt=fmt, output=str(out))
    assert not out.exists()  # refused before anything was written
