"""``qx-actors serve``: a database served as a local LN Markets that another engine syncs from."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from qx_actors import SyncEngine, SyncMode
from qx_actors.app.serve import RecordedServer, parse_replay_window
from qx_actors.domain.timeutil import FIRST_CANDLE_TIME
from qx_actors.simulator import Simulator
from qx_actors.status import State
from qx_actors.storage import Database
from qx_actors.testing import RunProbe, fast_config
from qx_actors.updates import CandleClosedUpdate, PriceTickUpdate, StatusUpdate

FAR = timedelta(days=3650)


def _everything(url: str) -> tuple[list[tuple[object, ...]], list[object], list[object]]:
    """Candles (time and OHLCV), ticks and settlements of a database."""
    with Database(url) as db:
        now = FIRST_CANDLE_TIME + FAR * 2
        candles = [
            (r.time, r.open, r.high, r.low, r.close, r.volume)
            for r in db.candles(FIRST_CANDLE_TIME, now, "1m", now=now)
        ]
        return (
            candles,
            list(db.ticks(FIRST_CANDLE_TIME, now)),
            db.settlements(FIRST_CANDLE_TIME, now),
        )


@pytest.fixture
def recorded(tmp_path: Path, simulator: Simulator) -> str:
    """A database a full run against the simulator recorded (candles, settlements, ticks)."""
    url = f"sqlite:///{tmp_path / 'recorded.db'}"
    config = fast_config(url, simulator, mode="full", price_history_reach="1d")
    with RunProbe.start(SyncEngine(config)) as run:
        run.wait_for_state(State.SYNCED, timeout=60)
        run.wait_for_ticks(20, timeout=30)
        assert State.SHUTDOWN is run.shutdown().state
    return url


def test_replay_of_a_recorded_run_yields_its_ticks_and_minutes(recorded: str) -> None:
    """Replayed at max, a database synced from the simulator yields exactly its ticks and
    minutes, in order."""
    candles, ticks, _ = _everything(recorded)
    start, end = candles[0][0], candles[-1][0] + timedelta(minutes=1)
    engine = SyncEngine(fast_config(recorded), SyncMode.replay(start, end))
    receiver = engine.update_receiver()
    engine.start()
    updates = [u for u in receiver if not isinstance(u, StatusUpdate)]
    assert [t for t in ticks if start <= t.time < end] == [
        u.tick for u in updates if isinstance(u, PriceTickUpdate)
    ]
    assert [c[0] for c in candles] == [
        u.candle.time for u in updates if isinstance(u, CandleClosedUpdate)
    ]


def test_an_engine_syncs_from_serve_to_the_same_candles_and_settlements(
    recorded: str, tmp_path: Path
) -> None:
    """Served by ``qx-actors serve``, a second engine's backfill stores the same candles and
    settlements as the database holds."""
    server = RecordedServer(fast_config(recorded)).start()
    try:
        copy = f"sqlite:///{tmp_path / 'copy.db'}"
        config = fast_config(
            copy, rest_url=server.rest_url, stream_url=server.stream_url, price_history_reach="1d"
        )
        with RunProbe.start(SyncEngine(config)) as run:
            run.wait_for_state(State.BACKFILLED, timeout=60)
            assert State.SHUTDOWN is run.shutdown().state
    finally:
        server.stop()
    candles, _, settlements = _everything(recorded)
    copied, _, copied_settlements = _everything(copy)
    assert candles == copied
    assert copied_settlements == [s for s in settlements if s.time >= copied_settlements[0].time]


def test_serve_replay_sends_the_recorded_ticks_on_the_stream(recorded: str) -> None:
    """``serve --replay FROM..TO --speed max`` sends the window's recorded ticks, in order, on
    the Stream API's lastPrice topic."""
    candles, ticks, _ = _everything(recorded)
    start, end = candles[0][0], ticks[-1].time + timedelta(seconds=1)
    window = parse_replay_window(f"{start.isoformat()}..{end.isoformat()}", "max")
    server = RecordedServer(fast_config(recorded), replay=window).start()
    try:
        assert server.wait_replayed(timeout=30)
        assert ticks == server.simulator.published_ticks()
    finally:
        server.stop()
