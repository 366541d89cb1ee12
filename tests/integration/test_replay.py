"""Replay mode: recorded data through the same update stream, paced or back-pressured, read-only."""

from __future__ import annotations

import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qx_actors import SyncAlreadyShutdown, SyncEngine, SyncMode
from qx_actors.actors import RunThreads
from qx_actors.actors._db_writer import DbWriterActor
from qx_actors.actors.messages import PageStored, StoreCandlePage
from qx_actors.domain.values import Candle, FundingSettlement, PriceTick
from qx_actors.simulator import ManualClock, Simulator
from qx_actors.status import State
from qx_actors.storage import Database, open_storage
from qx_actors.testing import RunProbe, fast_config
from qx_actors.updates import (
    CandleClosedUpdate,
    FundingSettlementUpdate,
    Lagged,
    PriceTickUpdate,
    StatusUpdate,
    SyncUpdate,
    UpdateHub,
    UpdateReceiver,
)
from tests.helpers import RecordingInbox

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
#: no exchange is asked in a replay: URLs that would refuse
NOWHERE = {"rest_url": "http://127.0.0.1:9", "stream_url": "ws://127.0.0.1:9/v1"}

Recorded = tuple[list[PriceTick], list[Candle], list[FundingSettlement]]


def _settlement(time: datetime) -> FundingSettlement:
    return FundingSettlement(str(uuid.uuid4()), time, 100_000.0, 0.0001)


def _record(
    url: str,
    ticks: list[PriceTick],
    candles: list[Candle],
    settlements: list[FundingSettlement],
) -> None:
    storage = open_storage(url)
    try:
        if candles:
            storage.upsert_candles(candles, now=T0 + timedelta(days=3))
        if ticks:
            storage.insert_new_ticks(ticks)
        if settlements:
            storage.upsert_settlements(settlements)
    finally:
        storage.close()


def _expected(recorded: Recorded, start: datetime, end: datetime) -> list[SyncUpdate]:
    """What a replay of ``[start, end)`` must deliver, in order (computed apart from it)."""
    ticks, candles, settlements = recorded
    keyed: list[tuple[datetime, int, SyncUpdate]] = []
    keyed += [(c.time + MINUTE, 0, CandleClosedUpdate(c)) for c in candles if start <= c.time < end]
    keyed += [(s.time, 1, FundingSettlementUpdate(s)) for s in settlements if start <= s.time < end]
    keyed += [(t.time, 2, PriceTickUpdate(t)) for t in ticks if start <= t.time < end]
    return [update for _, _, update in sorted(keyed, key=lambda k: (k[0], k[1]))]


def _data(updates: list[SyncUpdate]) -> list[SyncUpdate]:
    return [u for u in updates if not isinstance(u, StatusUpdate)]


def _replay_engine(url: str, start: datetime, end: datetime, **sync: object) -> SyncEngine:
    """A replay of ``[start, end)`` at max speed."""
    config = fast_config(url, **NOWHERE, **sync)  # type: ignore[arg-type]
    return SyncEngine(config, SyncMode.replay(start, end))


def _read_all(receiver: UpdateReceiver, timeout: float = 30.0) -> list[SyncUpdate]:
    updates = []
    while True:
        try:
            updates.append(receiver.get(timeout=timeout))
        except Exception as exc:  # ReceiverClosed ends it; a TimeoutError fails the test
            if isinstance(exc, TimeoutError):
                raise
            return updates


@st.composite
def recordings(draw: st.DrawFn) -> tuple[Recorded, datetime, datetime]:
    """A random database's content over six hours, and a window of it."""
    tick_ms = draw(st.lists(st.integers(0, 6 * 3_600_000 - 1), max_size=300, unique=True))
    minutes = draw(st.lists(st.integers(0, 6 * 60 - 1), max_size=120, unique=True))
    hours = draw(st.lists(st.sampled_from([0, 8]), max_size=2, unique=True))
    ticks = [PriceTick(T0 + timedelta(milliseconds=ms), 50_000.0 + ms % 97) for ms in tick_ms]
    candles = [
        Candle(T0 + m * MINUTE, 100.0 + m, 101.0 + m, 99.0 + m, 100.5 + m, float(m))
        for m in minutes
    ]
    settlements = [_settlement(T0 + timedelta(hours=h)) for h in hours]
    lo = draw(st.integers(0, 6 * 3600 - 1))
    hi = draw(st.integers(lo + 1, 6 * 3600 + 120))
    aligned = draw(st.booleans())
    if aligned:
        lo, hi = lo // 60 * 60, max(hi // 60 * 60, lo // 60 * 60 + 60)
    return (ticks, candles, settlements), T0 + timedelta(seconds=lo), T0 + timedelta(seconds=hi)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=recordings())
def test_replay_delivers_every_stored_tick_and_minute_once_in_order(
    case: tuple[Recorded, datetime, datetime],
) -> None:
    """A replay at max yields exactly the stored ticks, minute closes and settlements of its
    window, each once, in the order they happened."""
    recorded, start, end = case
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'qx.db'}"
        _record(url, *recorded)
        engine = _replay_engine(url, start, end, update_queue_capacity=16)
        receiver = engine.update_receiver()
        controller = engine.start()
        updates = _read_all(receiver)
        assert controller.until_stopped(timeout=10).state is State.SHUTDOWN
    assert _expected(recorded, start, end) == _data(updates)
    assert not any(isinstance(u, Lagged) for u in updates)


def test_replay_statuses_clock_and_second_shutdown(tmp_path: Path) -> None:
    """Starting → InProgress → Synced → ShutdownInitiated → Shutdown at the end; the run's
    clock reads each update's recorded instant; a later shutdown() is a second one."""
    url = f"sqlite:///{tmp_path / 'qx.db'}"
    ticks = [PriceTick(T0 + timedelta(seconds=10 * i), 100.0 + i) for i in range(30)]
    _record(url, ticks, [Candle(T0, 1, 2, 0.5, 1.5, 3)], [])
    engine = _replay_engine(url, T0, T0 + timedelta(minutes=5))
    receiver = engine.update_receiver()
    assert T0 == engine.now()
    controller = engine.start()
    seen: list[tuple[SyncUpdate, datetime]] = []
    for update in receiver:
        seen.append((update, controller.now()))
    states = [u.status.state for u, _ in seen if isinstance(u, StatusUpdate)]
    assert [
        State.STARTING,
        State.IN_PROGRESS,
        State.SYNCED,
        State.SHUTDOWN_INITIATED,
        State.SHUTDOWN,
    ] == states
    tick_times = [u.tick.time for u, _ in seen if isinstance(u, PriceTickUpdate)]
    assert [t.time for t in ticks] == tick_times
    assert T0 + timedelta(minutes=5) == controller.now()
    with pytest.raises(SyncAlreadyShutdown):
        controller.shutdown()


def test_replay_speed_follows_the_pace_clock(tmp_path: Path) -> None:
    """At 60x an event recorded t after the start is delivered once the pace clock has moved
    t / 60, not before."""
    url = f"sqlite:///{tmp_path / 'qx.db'}"
    ticks = [PriceTick(T0 + timedelta(seconds=s), 100.0 + s) for s in (0, 30, 59, 61, 90, 150)]
    _record(url, ticks, [], [])
    pace = ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
    config = fast_config(url, **NOWHERE)  # type: ignore[arg-type]
    engine = SyncEngine(config, SyncMode.replay(T0, T0 + timedelta(minutes=3), 60), clock=pace)
    receiver = engine.update_receiver()
    controller = engine.start()

    def next_tick(timeout: float = 10.0) -> PriceTick:
        while True:
            update = receiver.get(timeout=timeout)
            if isinstance(update, PriceTickUpdate):
                return update.tick

    assert ticks[0] == next_tick()
    with pytest.raises(TimeoutError):
        next_tick(timeout=0.3)  # 30 s recorded = 0.5 s of pace clock: not yet
    assert controller.now() == T0
    pace.advance(timedelta(seconds=1))  # 60 s recorded
    assert ticks[1:3] == [next_tick(), next_tick()]
    with pytest.raises(TimeoutError):
        next_tick(timeout=0.3)
    assert controller.now() <= T0 + timedelta(seconds=60)
    pace.advance(timedelta(seconds=2))  # 180 s recorded: the rest, then the end
    assert ticks[3:] == [next_tick(), next_tick(), next_tick()]
    assert controller.until_stopped(timeout=10).state is State.SHUTDOWN


def test_replay_at_max_waits_for_a_slow_receiver(tmp_path: Path) -> None:
    """Back-pressure: a full receiver holds the replay (nothing dropped, no Lagged); once it
    is read, every update arrives."""
    url = f"sqlite:///{tmp_path / 'qx.db'}"
    ticks = [PriceTick(T0 + timedelta(milliseconds=100 * i), 100.0 + i % 13) for i in range(500)]
    _record(url, ticks, [], [])
    engine = _replay_engine(url, T0, T0 + timedelta(hours=1), update_queue_capacity=8)
    receiver = engine.update_receiver()
    controller = engine.start()
    # nobody reads yet: the receiver fills up to its capacity and the replay waits there
    with receiver._cond:  # the receiver's own condition, notified at every push
        assert receiver._cond.wait_for(lambda: len(receiver._items) >= 8, 10)
    assert controller.now() < T0 + timedelta(seconds=50)
    assert controller.status_snapshot().state is State.SYNCED
    updates = _read_all(receiver)
    assert [t.time for t in ticks] == [
        u.tick.time for u in updates if isinstance(u, PriceTickUpdate)
    ]
    assert 0 == receiver.total_missed
    assert not any(isinstance(u, Lagged) for u in updates)


def test_lossless_hub_queues_statuses_beyond_capacity() -> None:
    """A lossless hub drops nothing: what is published without waiting is queued."""
    hub = UpdateHub(2, lossless=True)
    receiver = hub.receiver()
    for i in range(5):
        hub.publish(PriceTickUpdate(PriceTick(T0 + timedelta(seconds=i), 1.0)))
    assert 5 == len(receiver)
    assert not hub.wait_for_room(0.01)
    receiver.get(timeout=1)
    receiver.get(timeout=1)
    receiver.get(timeout=1)
    receiver.get(timeout=1)
    assert hub.wait_for_room(0.01)
    assert 0 == receiver.total_missed


def test_db_writer_publishes_candle_closed_once_when_a_followed_minute_becomes_stable(
    tmp_path: Path,
) -> None:
    """Live and full runs: a minute from an hour before the run on is published as
    CandleClosed when a page first stores it stable; older history and repeats are not."""
    url = f"sqlite:///{tmp_path / 'qx.db'}"
    started = T0 + timedelta(hours=5)
    clock = ManualClock(started + timedelta(hours=2))  # each page says when it was asked for
    hub = UpdateHub(100)
    receiver = hub.receiver()
    inbox = RecordingInbox.start()
    writer = DbWriterActor.start(
        threads=RunThreads(),
        open_storage=partial(open_storage, url),
        writer_holder="test",
        engine=inbox,
        run_id="test",
        hub=hub,
        clock=clock,
        closed_from=started - timedelta(hours=1),
    )
    old = Candle(started - timedelta(hours=3), 1, 2, 0.5, 1.5, 1)  # history: never published
    young = [Candle(started - timedelta(minutes=m), 1, 2, 0.5, 1.5, m) for m in (30, 20, 10)]
    pages = [
        (started, [old, *young]),  # young ones stored unstable
        (started + timedelta(minutes=45), young),  # the 30-minute one is final now
        (started + timedelta(minutes=45), young),  # again: nothing new
        (started + timedelta(hours=2), young),  # the other two
    ]
    try:
        for n, (at, page) in enumerate(pages):
            writer.tell(StoreCandlePage(tuple(page), inbox, n, asked_at=at))
    finally:
        writer.stop()  # after every page before it
        messages = inbox.ask("messages")
        inbox.stop()
    assert [PageStored(n) for n in range(4)] == [m for m in messages if isinstance(m, PageStored)]
    updates = []
    while (update := receiver.get_nowait()) is not None:
        updates.append(update)
    assert young == [u.candle for u in updates if isinstance(u, CandleClosedUpdate)]
    with Database(url) as db:
        assert all(row.stable for row in db.candles(young[0].time, started, "1m"))


def test_replay_beside_a_live_writer(tmp_path: Path, simulator: Simulator) -> None:
    """A replay opens the database read-only beside a live engine that writes it: it delivers
    what was stored in its window, and the live run goes on undisturbed."""
    url = f"sqlite:///{tmp_path / 'qx.db'}"
    live = SyncEngine(fast_config(url, simulator, mode="live", price_history_reach="1d"))
    with RunProbe.start(live) as run:
        run.wait_for_state(State.SYNCED, timeout=30)
        run.wait_for_ticks(10, timeout=30)
        with Database(url) as db:
            stored = db.ticks(T0 - timedelta(days=3650), T0 + timedelta(days=3650))
            start, end = stored[0].time, stored[-1].time + timedelta(milliseconds=1)
        engine = _replay_engine(url, start, end)
        receiver = engine.update_receiver()
        replay = engine.start()
        updates = _read_all(receiver)
        assert replay.until_stopped(timeout=10).state is State.SHUTDOWN
        replayed = [u.tick for u in updates if isinstance(u, PriceTickUpdate)]
        with Database(url) as db:
            assert db.ticks(start, end) == replayed
            minutes = {row.time for row in db.candles(start, end, "1m")}
        assert {u.candle.time for u in updates if isinstance(u, CandleClosedUpdate)} <= minutes
        count = len(run.ticks)
        run.wait_for_ticks(count + 5, timeout=30)  # the live run still stores ticks
        assert run.controller.status_snapshot().state is State.SYNCED
        assert State.SHUTDOWN is run.shutdown().state
