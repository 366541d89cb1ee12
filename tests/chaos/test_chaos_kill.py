"""Chaos: real ``qx-actors sync`` processes killed with SIGKILL at seeded random moments.

* a 60-day backfill killed 5 times, then one clean run: ``Running.Backfilled`` only with an
  exact, hole-free database (the simulator's final candles, minute for minute);
* a live run killed, then restarted: ``Running.Synced`` again, every stored tick stored once
  and sent by the simulator, every tick the restarted run received stored.
"""

from __future__ import annotations

import subprocess
from datetime import datetime
from functools import partial
from pathlib import Path

from qx_actors.config import config_from_mapping
from tests.chaos.chaos_helpers import (
    HOUR,
    MINUTE,
    CliSync,
    SimFactory,
    candle_count,
    chaos_rng,
    feed_counters,
    floor_minute,
    history_problems,
    poll,
    sim_config,
    stored_tick_count,
    stored_ticks,
    tick_problems,
    write_config,
)

KILLS = 5
REACH_DAYS = 60
#: The engine's pace: the ~90 candle pages of the reach take ~2 s, so that the kills land in
#: the middle of the backfill rather than after it (the simulator itself is not limited).
REQUESTS_PER_S = 40


def _survives(run: CliSync, seconds: float) -> None:
    """Let ``run`` work for ``seconds`` (the random moment); it must not exit meanwhile."""
    try:
        code = run.process.wait(seconds)
    except subprocess.TimeoutExpired:
        return
    raise AssertionError(f"qx-actors sync exited with {code} before the kill: {run.output()}")


def _stored_or_backfilled(run: CliSync, url: str, count: int) -> bool:
    return candle_count(url) >= count or "Running.Backfilled" in run.log.destinations()


def test_sigkill_during_a_60_day_backfill_then_a_clean_run_is_exact(
    sim: SimFactory, tmp_path: Path
) -> None:
    """5 SIGKILLs at random moments of a 60-day backfill, then one clean run to Backfilled:
    every minute of [reach, now - 1 h] is stored and equals the exchange's final candle."""
    rng = chaos_rng("sigkill-backfill")
    simulator = sim(tick_rate_per_s=0)
    url = f"sqlite:///{tmp_path / 'qx.db'}"

    def config(name: str) -> Path:
        data = sim_config(
            url, simulator, log_file=tmp_path / f"{name}.log",
            price_history_reach=f"{REACH_DAYS}d", funding_settlement_reach="3d",
            price_history_re_backfill_interval_s=60, rest_rate_limit_per_s=REQUESTS_PER_S,
        )  # fmt: skip
        return write_config(tmp_path / f"{name}.yaml", data)

    expected = REACH_DAYS * 1440
    # start-up (imports, schema, lock), the first second of fetching, and 3 x a random count
    # of newly stored candles
    moments = ["startup", "running", "stored", "stored", "stored"]
    rng.shuffle(moments)
    for kill, how in enumerate(moments):
        run = CliSync(config(f"kill{kill}"), tmp_path / f"kill{kill}.log", tmp_path / "out.txt")
        try:
            if how == "startup":
                delay = rng.uniform(0.1, 1.5)
                print(f"kill {kill}: {delay:.2f} s after the process started")
                _survives(run, delay)
            elif how == "running":
                delay = rng.uniform(0.0, 1.0)
                print(f"kill {kill}: {delay:.2f} s after Running.InProgress")
                run.wait_state("Running.InProgress", timeout=30)
                _survives(run, delay)
            else:
                before = candle_count(url)
                target = before + rng.randint(1, max(1, int((expected - before) * 0.9)))
                print(f"kill {kill}: once {target} candles are stored (had {before})")
                # (or at the end of the run's first pass if it stops writing before that)
                poll(partial(_stored_or_backfilled, run, url, target), 60,
                     f"{target} stored candles", alive=run.exited)  # fmt: skip
        finally:
            run.kill()
        print(f"after kill {kill}: {candle_count(url)} candles, log {run.log.destinations()}")

    clean = CliSync(config("clean"), tmp_path / "clean.log", tmp_path / "out.txt")
    try:
        backfilled = clean.wait_state("Running.Backfilled", timeout=90)
    finally:
        code = clean.interrupt()
    assert 130 == code, clean.output()[-2000:]  # Ctrl-C: 130 after a graceful Shutdown
    assert "Shutdown" == clean.log.destinations()[-1]

    backfilled_at = datetime.fromisoformat(str(backfilled["timestamp"]))
    reach = config_from_mapping(sim_config(url, simulator, price_history_reach=f"{REACH_DAYS}d"))
    start = reach.sync.price_history_reach_at(clean.started_at)
    problems = history_problems(
        url, simulator.market, reach=start,
        present_until=floor_minute(backfilled_at - HOUR) - MINUTE,
        exact_until=floor_minute(clean.started_at - HOUR) - MINUTE,
    )  # fmt: skip
    assert [] == problems, f"after {KILLS} kills and a clean run reporting Backfilled"


def test_sigkill_in_live_mode_then_a_restart_stores_every_tick_once(
    sim: SimFactory, tmp_path: Path
) -> None:
    """SIGKILL of a live run at a random moment, then a restart: Synced again, no tick stored
    twice or invented, and every tick the restarted run received is stored."""
    rng = chaos_rng("sigkill-live")
    simulator = sim(tick_rate_per_s=20)
    url = f"sqlite:///{tmp_path / 'qx.db'}"

    def config(name: str) -> Path:
        data = sim_config(url, simulator, mode="live", stream=True,
                          log_file=tmp_path / f"{name}.log")  # fmt: skip
        return write_config(tmp_path / f"{name}.yaml", data)

    first = CliSync(config("killed"), tmp_path / "killed.log", tmp_path / "out.txt")
    try:
        first.wait_state("Running.Synced", timeout=60)
        target = rng.randint(3, 40)
        extra = rng.uniform(0.0, 0.5)
        print(f"kill once {target} ticks are stored, then {extra:.2f} s later")
        poll(lambda: stored_tick_count(url) >= target, 30, f"{target} stored ticks",
             alive=first.exited)  # fmt: skip
        _survives(first, extra)
    finally:
        first.kill()
    before = {t.time for t in stored_ticks(url)}

    second = CliSync(config("restarted"), tmp_path / "restarted.log", tmp_path / "out.txt")
    try:
        second.wait_state("Running.Synced", timeout=60)
        poll(lambda: stored_tick_count(url) >= len(before) + 30, 30, "30 more stored ticks",
             alive=second.exited)  # fmt: skip
    finally:
        code = second.interrupt()
    assert 130 == code, second.output()[-2000:]  # Ctrl-C: 130 after a graceful Shutdown

    stored = stored_ticks(url)
    assert [] == tick_problems(stored, simulator.sent_ticks())
    after_restart = [t for t in stored if t.time not in before]
    counters = feed_counters(second.log.read())
    assert counters["feeds"] >= 1, "no ws_feed_stopped event in the restarted run's log"
    received = counters["received"] - counters["duplicates"]
    print(f"{len(before)} ticks before the kill, {len(after_restart)} after; feed {counters}")
    assert received == len(after_restart), (
        f"the restarted run received {received} distinct ticks and stored {len(after_restart)}"
    )
