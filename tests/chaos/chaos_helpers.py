"""The real parts of the chaos suite, and the checks it ends with.

* :func:`chaos_rng`: the seeded random source of every "random moment" (seed printed; replay a
  failure with ``QX_CHAOS_SEED=<seed>``);
* :func:`poll`: wait for a condition with a deadline (never a bare sleep);
* :class:`CliSync`: a real ``qx-actors sync`` process with a JSON log file, killed with SIGKILL
  or stopped with SIGINT; :class:`JsonLog` tails its log;
* in-process engines are :class:`qx_actors.testing.RunProbe` s (the ``engines`` fixture);
* :class:`SqliteLocker`: another process holding ``BEGIN EXCLUSIVE`` on a SQLite file;
* :func:`history_problems` / :func:`tick_problems`: the database against the simulator's truth.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import yaml

from qx_actors.config import QxConfig, config_from_mapping
from qx_actors.domain.timeutil import floor_minute, utc_now
from qx_actors.domain.values import PriceTick
from qx_actors.simulator import Market, Simulator
from qx_actors.status import State, SyncStatus
from qx_actors.storage import Database
from qx_actors.testing import FAST_SYNC, RunProbe, fast_config_data, postgres

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "qx_actors.cli"]
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
#: How often a condition is polled.
POLL_S = 0.02

#: Short intervals so that restarts, second passes and retries happen within a test.
CHAOS_SYNC: dict[str, Any] = {
    **FAST_SYNC,
    "rest_error_max_trials": 2,
    "restart_interval_s": 0.3,
    "shutdown_timeout_s": 8.0,
    "price_history_re_backfill_interval_s": 0.3,
    "price_history_re_sync_interval_s": 2.0,
    "live_price_tick_max_interval_s": 30.0,
    "update_queue_capacity": 100_000,
}

T = TypeVar("T")


# -- types of the fixtures (conftest.py) --------------------------------------------------------

#: ``sim(**SimulatorConfig options)`` -> a started simulator.
SimFactory = Callable[..., Simulator]
#: ``engines(config)`` -> a started in-process engine, shut down after the test.
EngineFactory = Callable[[QxConfig], RunProbe]
#: ``tmpfs(size_bytes)`` -> the directory of a freshly mounted small filesystem.
MountTmpfs = Callable[[int], Path]
#: The structlog events captured during a test.
Logs = list[MutableMapping[str, Any]]


# -- randomness and waiting -------------------------------------------------------------------


def chaos_rng(test_name: str) -> random.Random:
    """A seeded RNG for one test; the seed is printed (shown with a failure's output).

    ``QX_CHAOS_SEED`` replays a run; otherwise a fresh seed is drawn.
    """
    seed = int(os.environ.get("QX_CHAOS_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"chaos seed {seed} for {test_name} (replay: QX_CHAOS_SEED={seed})", flush=True)
    return random.Random(f"{seed}:{test_name}")


def poll(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    alive: Callable[[], str | None] | None = None,
) -> T:
    """Call ``probe`` until it returns something other than ``None``/``False``; that value.

    Fails after ``timeout`` seconds naming ``what``, or as soon as ``alive()`` returns a reason
    (e.g. the process under test exited).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if alive is not None:
            dead = alive()
            if dead is not None:
                raise AssertionError(f"waiting for {what}: {dead}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(POLL_S)


# -- a real qx-actors sync process ------------------------------------------------------------


def write_config(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as a YAML config (validated first, so a typo fails here)."""
    config_from_mapping(data)
    path.write_text(yaml.safe_dump(data))
    return path


class JsonLog:
    """The JSON-lines log of a process, read incrementally as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events: list[dict[str, Any]] = []
        self._offset = 0
        self._partial = b""

    def read(self) -> list[dict[str, Any]]:
        """Read the lines written since the last call; every event so far."""
        if not self.path.exists():
            return self.events
        with self.path.open("rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line.startswith(b"{"):
                with contextlib.suppress(ValueError):
                    self.events.append(json.loads(line))
        return self.events

    def transitions(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Every ``status_transition`` event (of ``run_id``) so far."""
        return [
            e
            for e in self.read()
            if e.get("event") == "status_transition" and run_id in (None, e.get("run_id"))
        ]

    def destinations(self) -> list[str]:
        """The destination state of every transition so far."""
        return [str(e["dst"]) for e in self.transitions()]


class CliSync:
    """``qx-actors sync --config FILE`` as a real process, its log in ``log_path`` (JSON)."""

    def __init__(self, config_path: Path, log_path: Path, out_path: Path) -> None:
        self.log = JsonLog(log_path)
        self.out_path = out_path
        self._out = out_path.open("ab")
        self.started_at = utc_now()
        self.process = subprocess.Popen(
            [*CLI, "sync", "--config", str(config_path)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def exited(self) -> str | None:
        """Why the process is gone (``None`` while it runs)."""
        code = self.process.poll()
        if code is None:
            return None
        return f"qx-actors sync exited with {code}: {self.output()[-1500:]}"

    def output(self) -> str:
        """What the process printed (stdout and stderr)."""
        self._out.flush()
        return self.out_path.read_text(errors="replace")

    def wait_state(self, state: str, timeout: float) -> dict[str, Any]:
        """The first transition into ``state`` (e.g. ``Running.Backfilled``); fails on Failed."""

        def found() -> dict[str, Any] | None:
            for event in self.log.transitions():
                if event["dst"] == state:
                    return event
                if event["dst"] == "Failed":
                    raise AssertionError(f"the run failed: {event.get('error')}")
            return None

        return poll(found, timeout, f"qx-actors sync reaching {state}", alive=self.exited)

    def kill(self) -> None:
        """SIGKILL, and reap."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._out.close()

    def interrupt(self, timeout: float = 30.0) -> int:
        """SIGINT (graceful shutdown) and wait; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(10)
            self._out.close()
        return code


def sim_config(
    database: str,
    sim: Simulator,
    *,
    mode: str = "backfill",
    stream: bool = False,
    log_file: Path | None = None,
    **sync: Any,
) -> dict[str, Any]:
    """A config mapping against ``sim`` with :data:`CHAOS_SYNC` (overridden by ``sync``)."""
    logging = None
    if log_file is not None:
        logging = {"format": "json", "level": "info", "file": str(log_file)}
    return fast_config_data(
        database, sim, mode=mode, stream=stream, logging=logging, **{**CHAOS_SYNC, **sync}
    )


def is_recovering(kind: str, *texts: str) -> Callable[[SyncStatus], bool]:
    """A status predicate: ``Running.Recovering`` with an error of class ``kind`` (or a
    subclass) whose status text contains every one of ``texts``."""

    def accept(status: SyncStatus) -> bool:
        if status.state is not State.RECOVERING or status.error is None:
            return False
        kinds = {cls.__name__ for cls in type(status.error).__mro__}
        text = status.text
        return kind in kinds and all(t in text for t in texts)

    return accept


# -- faults ----------------------------------------------------------------------------------

_LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
print("ready", flush=True)
sys.stdin.readline()
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
conn.close()
"""


class SqliteLocker:
    """Another process that holds ``BEGIN EXCLUSIVE`` on a SQLite file from :meth:`lock` until
    :meth:`release` (started ahead, so that the lock is taken at the moment asked)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.locked_at: float | None = None
        self.process = subprocess.Popen(
            [sys.executable, "-c", _LOCKER, path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._expect("ready")

    def _expect(self, word: str) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()  # returns at once if the process died
        if line != word:
            if self.process.poll() is None:
                self.process.kill()
            _, err = self.process.communicate(timeout=10)
            raise AssertionError(f"locking {self.path}: expected {word!r}, got {line!r}: {err}")

    def _send(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def lock(self) -> SqliteLocker:
        """``BEGIN EXCLUSIVE`` now (returns once the lock is held)."""
        self._send()
        self._expect("locked")
        self.locked_at = time.monotonic()
        return self

    def release(self) -> float:
        """Roll back, which releases the lock, and wait for the process; seconds it was held."""
        if self.locked_at is None:
            return 0.0
        held = time.monotonic() - self.locked_at
        if self.process.poll() is None:
            self._send()
            self.process.wait(10)
        self.locked_at = None
        return held

    def close(self) -> None:
        """Teardown: end the process whatever its state."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


@contextlib.contextmanager
def sqlite_locker(path: str) -> Iterator[SqliteLocker]:
    """A ready :class:`SqliteLocker`; whatever happens, its lock is gone afterwards."""
    locker = SqliteLocker(path)
    try:
        yield locker
    finally:
        locker.close()


def pg_scalar(url: str, query: str) -> Any:
    """The first column of the first row of ``query``."""
    row = postgres.execute(url, query)
    return None if row is None else row[0]


def advisory_locks(url: str) -> int:
    """How many advisory locks the server holds now."""
    return int(pg_scalar(url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"))


# -- the database against the truth -----------------------------------------------------------


def history_problems(
    url: str, market: Market, *, reach: datetime, present_until: datetime, exact_until: datetime
) -> list[str]:
    """What is wrong with the stored candles, compared with the simulator's final candles.

    * every minute of ``[reach, present_until]`` is stored (no hole);
    * every stored candle up to ``exact_until`` equals the final one, and is marked stable;
    * every stored candle is a whole minute the market has, at or after ``reach``, and a stable
      one equals the final candle (no extra, invented or wrong candle anywhere).
    """
    problems: list[str] = []
    with Database(url) as db:
        rows = db.candles(datetime(2020, 1, 1, tzinfo=UTC), utc_now() + HOUR, "1m")
    stored = {row.time: row for row in rows}
    truth = {c.time: c for c in market.final_candles(reach, present_until)}
    missing = sorted(set(truth) - set(stored))
    if missing:
        problems.append(f"{len(missing)} minutes missing, {_ranges(missing)}")
    wrong, unstable, extra = [], [], []
    for time_, row in stored.items():
        final = market.final_candle(time_)
        if final is None or time_.second or time_.microsecond or time_ < reach:
            extra.append(time_)
            continue
        values = (row.open, row.high, row.low, row.close, row.volume)
        final_values = (final.open, final.high, final.low, final.close, final.volume)
        if time_ <= exact_until and not row.stable:
            unstable.append(time_)
        if (row.stable or time_ <= exact_until) and values != final_values:
            wrong.append(time_)
    if wrong:
        problems.append(
            f"{len(wrong)} candles differ from the final ones, {_ranges(sorted(wrong))}"
        )
    if unstable:
        problems.append(f"{len(unstable)} old candles still unstable, {_ranges(sorted(unstable))}")
    if extra:
        problems.append(f"{len(extra)} candles the market does not have or before the reach, "
                        f"{_ranges(sorted(extra))}")  # fmt: skip
    return problems


def _ranges(times: list[datetime], limit: int = 6) -> str:
    """Consecutive minutes as ``first..last (n)`` ranges, the first ``limit`` of them."""
    out: list[str] = []
    start = prev = times[0]
    for t in [*times[1:], None]:
        if t is not None and t - prev == MINUTE:
            prev = t
            continue
        out.append(
            f"{start:%Y-%m-%d %H:%M}..{prev:%Y-%m-%d %H:%M} ({(prev - start) // MINUTE + 1})"
        )
        if t is not None:
            start = prev = t
    more = f" and {len(out) - limit} more ranges" if len(out) > limit else ""
    return "ranges " + ", ".join(out[:limit]) + more


def stored_ticks(url: str) -> list[PriceTick]:
    """Every stored tick, oldest first."""
    with Database(url) as db:
        return db.ticks(datetime(2020, 1, 1, tzinfo=UTC), utc_now() + timedelta(days=1))


def stored_tick_count(url: str) -> int:
    """How many ticks are stored."""
    return len(stored_ticks(url))


def tick_problems(stored: list[PriceTick], sent: list[PriceTick]) -> list[str]:
    """Stored ticks that are duplicated or that the simulator never sent (time and price)."""
    problems: list[str] = []
    times = [t.time for t in stored]
    if len(set(times)) != len(times):
        problems.append(f"{len(times) - len(set(times))} tick times stored twice")
    sent_by_time = {t.time: t.last_price for t in sent}
    unknown = [t for t in stored if sent_by_time.get(t.time) != t.last_price]
    if unknown:
        problems.append(f"{len(unknown)} stored ticks were never sent, e.g. {unknown[:3]}")
    return problems


def feed_counters(events: Sequence[Mapping[str, Any]], run_id: str | None = None) -> dict[str, int]:
    """The ``ws_feed_stopped`` counters of every feed actor of a run, summed."""
    total: dict[str, int] = {}
    for event in events:
        if event.get("event") != "ws_feed_stopped" or run_id not in (None, event.get("run_id")):
            continue
        for key, value in event.items():
            if isinstance(value, int) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
    total["feeds"] = sum(
        1
        for e in events
        if e.get("event") == "ws_feed_stopped" and run_id in (None, e.get("run_id"))
    )
    return total


def candle_count(url: str) -> int:
    """How many candles are stored now (0 while the database or its table does not exist)."""
    if url.startswith("sqlite:///"):
        import sqlite3

        path = url[len("sqlite:///") :]
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        except sqlite3.Error:
            return 0
        try:
            (count,) = conn.execute("SELECT count(*) FROM ohlc_candles").fetchone()
            return int(count)
        except sqlite3.Error:
            return 0
        finally:
            conn.close()
    import psycopg2

    try:
        return int(pg_scalar(url, "SELECT count(*) FROM ohlc_candles"))
    except psycopg2.Error:
        return 0


def writing_or_backfilled(watch: RunProbe, url: str, count: int) -> bool:
    """Whether ``count`` candles are stored, or the run has finished a pass already (a
    :func:`poll` probe; a stopped run fails it)."""
    status = watch.controller.status_snapshot()
    if status.is_stopped:
        raise AssertionError(f"the run stopped: {status}")
    return status.state is State.BACKFILLED or candle_count(url) >= count


def assert_history_exact(
    url: str, sim: Simulator, *, reach: str, started_at: datetime, backfilled_at: datetime
) -> None:
    """The database is exact after a run that started at ``started_at`` reported
    ``Running.Backfilled`` at ``backfilled_at``: no hole in ``[reach, backfilled_at - 1 h]``,
    final values for every minute that was already final when the run started."""
    config = config_from_mapping(sim_config(url, sim, price_history_reach=reach))
    problems = history_problems(
        url, sim.market, reach=config.sync.price_history_reach_at(started_at),
        present_until=floor_minute(backfilled_at - HOUR) - MINUTE,
        exact_until=floor_minute(started_at - HOUR) - MINUTE,
    )  # fmt: skip
    assert [] == problems, f"the database after Backfilled at {backfilled_at:%H:%M:%S}"


def assert_every_received_tick_stored(
    url: str, sim: Simulator, events: Sequence[Mapping[str, Any]], run_id: str
) -> dict[str, int]:
    """Every stored tick is unique and was sent; every tick the run's feeds received (as their
    ``ws_feed_stopped`` counters say) is stored. The counters, with ``stored`` and ``sent``."""
    stored = stored_ticks(url)
    sent = sim.sent_ticks()
    assert [] == tick_problems(stored, sent)
    counters = feed_counters(events, run_id)
    assert counters["feeds"] >= 1, "no ws_feed_stopped event was logged"
    counters["stored"] = len(stored)
    counters["sent"] = len({t.time for t in sent})
    print(f"ticks: {counters}")
    assert 0 == counters.get("overflowed", 0)
    received = counters["received"] - counters["duplicates"]
    assert received == len(stored), f"{received} distinct ticks received, {len(stored)} stored"
    return counters


def fill_up(directory: Path, leave_bytes: int) -> Path:
    """Write a filler file into ``directory`` until only ``leave_bytes`` are free; its path."""
    filler = directory / "filler.bin"
    chunk = b"\0" * (1 << 20)
    with filler.open("wb") as fh:
        while True:
            stats = os.statvfs(directory)
            free = stats.f_bavail * stats.f_frsize - leave_bytes
            if free <= 0:
                break
            try:
                fh.write(chunk[: min(len(chunk), free)])
                fh.flush()
            except OSError:
                break
    return filler
