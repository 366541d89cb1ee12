"""UpdateHub.publish_many (a committed tick batch in one call) delivers what publish() of each
update would, and RunHealth.observe_batch folds what observe() of each would."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from qx_actors.domain.values import PriceTick
from qx_actors.observability import RunHealth
from qx_actors.status import State, SyncStatus
from qx_actors.updates import (
    Lagged,
    PriceTickUpdate,
    StatusUpdate,
    SyncUpdate,
    UpdateHub,
    UpdateReceiver,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _ticks(first: int, count: int) -> list[SyncUpdate]:
    return [
        PriceTickUpdate(PriceTick(T0 + timedelta(seconds=i), float(i)))
        for i in range(first, first + count)
    ]


def _drain(receiver: UpdateReceiver) -> list[SyncUpdate]:
    out = []
    while (update := receiver.get_nowait()) is not None:
        out.append(update)
    return out


@pytest.mark.parametrize("sizes", [(3,), (2, 2), (10,), (4, 7, 1), (1, 1, 1, 1, 1)])
@pytest.mark.parametrize("capacity", [1, 3, 5, 100])
def test_publish_many_delivers_what_publishing_each_would(
    sizes: tuple[int, ...], capacity: int
) -> None:
    """The same updates, Lagged counts and order in a receiver, whatever the batches."""
    one_by_one, batched = UpdateHub(capacity), UpdateHub(capacity)
    expected, got = one_by_one.receiver(), batched.receiver()
    first = 0
    for size in sizes:
        batch = _ticks(first, size)
        first += size
        for update in batch:
            one_by_one.publish(update)
        batched.publish_many(batch)
    assert _drain(expected) == _drain(got)
    assert expected.total_missed == got.total_missed


def test_publish_many_wakes_an_async_receiver_with_every_update_in_order() -> None:
    hub = UpdateHub(capacity=100)
    receiver = hub.async_receiver()
    batch = _ticks(0, 5)

    async def read() -> list[SyncUpdate]:
        waiting = asyncio.ensure_future(receiver.get(timeout=10))
        await asyncio.sleep(0)  # the task waits for its first update
        hub.publish_many(batch)
        return [await waiting] + [await receiver.get(timeout=10) for _ in range(4)]

    assert asyncio.run(read()) == batch


def test_publish_many_calls_the_batch_observer_once_or_the_observer_for_each() -> None:
    seen: list[SyncUpdate] = []
    batches: list[list[SyncUpdate]] = []
    batch = _ticks(0, 4)
    UpdateHub(10, observer=seen.append).publish_many(batch)
    assert seen == batch
    seen.clear()
    UpdateHub(
        10, observer=seen.append, batch_observer=lambda b: batches.append(list(b))
    ).publish_many(batch)
    assert (seen, batches) == ([], [batch])


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_observe_batch_folds_what_observing_each_would() -> None:
    """Ticks, last price and time, ticks per second, lag and the health verdict (a status
    with an error after the ticks of the batch: no progress since)."""
    error = StatusUpdate(SyncStatus(State.RESTARTING, error=RuntimeError("boom")))
    updates = [*_ticks(0, 3), Lagged(2), *_ticks(3, 2), error]
    clocks = _Clock(), _Clock()
    each = RunHealth(lambda: SyncStatus(State.RESTARTING), monotonic=clocks[0])
    batch = RunHealth(lambda: SyncStatus(State.RESTARTING), monotonic=clocks[1])
    for update in updates:
        each.observe(update)
    batch.observe_batch(updates)
    a, b = each.view(), batch.view()
    assert (a.ticks, a.last_price, a.last_tick_time, a.lagged, dict(a.per_second)) == (
        b.ticks,
        b.last_price,
        b.last_tick_time,
        b.lagged,
        dict(b.per_second),
    )
    assert each.snapshot()["healthy"] == batch.snapshot()["healthy"]
