"""The asyncio receiver: ordering, Lagged, end of run, cancellation, a loop that never blocks."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from qx_actors.config import config_from_mapping
from qx_actors.status import State, SyncStatus
from qx_actors.sync_engine import SyncEngine
from qx_actors.updates import (
    AsyncUpdateReceiver,
    Lagged,
    PriceTickUpdate,
    ReceiverClosed,
    StatusUpdate,
    SyncUpdate,
    UpdateHub,
)
from tests.helpers import FlakyProgram


def tick(i: int) -> PriceTickUpdate:
    """A tick update carrying ``i``."""
    return PriceTickUpdate(i)


def ticks_of(updates: list[SyncUpdate]) -> list[Any]:
    """The payloads of the tick updates in ``updates``."""
    return [u.tick for u in updates if isinstance(u, PriceTickUpdate)]


def publish_ticks(hub: UpdateHub, count: int) -> None:
    """Publish the ticks ``0`` to ``count - 1`` on ``hub``, then close it (the run ends)."""
    for i in range(count):
        hub.publish(tick(i))
    hub.close()


async def collect(receiver: AsyncUpdateReceiver) -> list[SyncUpdate]:
    """Every update of ``receiver`` until its iteration ends."""
    return [update async for update in receiver]


def waiters(receiver: AsyncUpdateReceiver) -> int:
    """How many waits are registered on ``receiver`` (none once every wait has ended)."""
    return len(receiver._receiver._async_waiters)


def test_updates_arrive_in_order_then_iteration_ends_at_close() -> None:
    """Queued updates come out in publication order; after close the iteration ends."""
    hub = UpdateHub(capacity=10)
    receiver = hub.async_receiver()
    publish_ticks(hub, 5)
    assert [0, 1, 2, 3, 4] == ticks_of(asyncio.run(collect(receiver)))


def test_updates_published_from_another_thread_wake_the_task_in_order() -> None:
    """A thread publishing while the task waits: every update arrives, in order, no Lagged."""
    hub = UpdateHub(capacity=5000)
    receiver = hub.async_receiver()
    count = 2000

    async def read() -> list[SyncUpdate]:
        publisher = threading.Thread(target=publish_ticks, args=(hub, count))
        publisher.start()
        try:
            return await collect(receiver)
        finally:
            await asyncio.to_thread(publisher.join)

    updates = asyncio.run(read())
    assert list(range(count)) == ticks_of(updates)
    assert count == len(updates)
    assert 0 == waiters(receiver)


def test_a_full_receiver_yields_lagged_first_then_the_newest() -> None:
    """On overflow the next item is Lagged(missed=N), as from the sync receiver's get()."""
    hub = UpdateHub(capacity=3)
    receiver = hub.async_receiver()
    publish_ticks(hub, 10)
    updates = asyncio.run(collect(receiver))
    assert [Lagged(missed=7), tick(7), tick(8), tick(9)] == updates
    assert 7 == receiver.total_missed


def test_get_raises_receiver_closed_after_the_end_and_a_late_receiver_ends_at_once() -> None:
    """await get() raises ReceiverClosed once drained; a receiver made after the end is empty."""
    hub = UpdateHub(capacity=3)
    receiver = hub.async_receiver()
    hub.publish(tick(1))
    hub.close()

    async def scenario() -> tuple[SyncUpdate, list[SyncUpdate]]:
        first = await receiver.get()
        with pytest.raises(ReceiverClosed):
            await receiver.get()
        late = [update async for update in hub.async_receiver()]
        return first, late

    assert (tick(1), []) == asyncio.run(scenario())


def test_close_while_waiting_ends_the_iteration() -> None:
    """The run ending while the task waits (from another thread) ends the iteration."""
    hub = UpdateHub(capacity=3)
    receiver = hub.async_receiver()

    async def scenario() -> list[SyncUpdate]:
        reading = asyncio.create_task(collect(receiver))
        await waiting(receiver)
        closer = threading.Thread(target=hub.close)
        closer.start()
        await asyncio.to_thread(closer.join)
        return await reading

    assert [] == asyncio.run(scenario())
    assert 0 == waiters(receiver)


async def waiting(receiver: AsyncUpdateReceiver) -> None:
    """Return once a task waits on ``receiver`` (yielding to the loop in between, no sleep)."""
    while waiters(receiver) == 0:
        await asyncio.sleep(0)


def test_the_loop_keeps_running_while_a_task_waits() -> None:
    """A pending get does not block the event loop: other tasks run meanwhile."""
    hub = UpdateHub(capacity=3)
    receiver = hub.async_receiver()

    async def scenario() -> SyncUpdate:
        pending = asyncio.create_task(receiver.get())
        await waiting(receiver)
        other_ran = asyncio.Event()
        asyncio.get_running_loop().call_soon(other_ran.set)
        await other_ran.wait()
        assert not pending.done()
        hub.publish(tick(42))
        return await pending

    assert tick(42) == asyncio.run(scenario())


def test_cancelling_a_waiting_task_leaves_no_waiter_and_loses_nothing() -> None:
    """Cancel the consumer while it waits: no waiter is left, the next update is not lost."""
    hub = UpdateHub(capacity=5)
    receiver, other = hub.async_receiver(), hub.receiver()
    threads_before = threading.active_count()

    async def scenario() -> SyncUpdate:
        consumer = asyncio.create_task(receiver.get())
        await waiting(receiver)
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        assert 0 == waiters(receiver)
        hub.publish(tick(1))
        return await receiver.get()

    assert tick(1) == asyncio.run(scenario())
    assert tick(1) == other.get(1)
    assert threads_before == threading.active_count()


def test_cancelling_after_the_wakeup_keeps_the_update_in_the_queue() -> None:
    """Woken but cancelled before it ran: the update stays for the next get, in order."""
    hub = UpdateHub(capacity=5)
    receiver = hub.async_receiver()

    async def scenario() -> list[SyncUpdate]:
        consumer = asyncio.create_task(receiver.get())
        await waiting(receiver)
        hub.publish(tick(1))  # schedules the wakeup on this loop ...
        hub.publish(tick(2))
        consumer.cancel()  # ... and the task is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await consumer
        assert 0 == waiters(receiver)
        hub.close()
        return await collect(receiver)

    assert [1, 2] == ticks_of(asyncio.run(scenario()))


def test_a_timeout_raises_timeout_error_and_loses_nothing() -> None:
    """get(timeout) raises TimeoutError when nothing came; a later update is still delivered."""
    hub = UpdateHub(capacity=5)
    receiver = hub.async_receiver()

    async def scenario() -> SyncUpdate:
        with pytest.raises(TimeoutError):
            await receiver.get(timeout=0.01)
        assert 0 == waiters(receiver)
        hub.publish(tick(3))
        return await receiver.get(timeout=5)

    assert tick(3) == asyncio.run(scenario())


def test_two_receivers_each_get_everything() -> None:
    """Each asyncio receiver has its own queue; reading one takes nothing from the other."""
    hub = UpdateHub(capacity=10)
    first, second = hub.async_receiver(), hub.async_receiver()
    publish_ticks(hub, 3)

    async def scenario() -> tuple[list[SyncUpdate], list[SyncUpdate]]:
        return await asyncio.gather(collect(first), collect(second))

    a, b = asyncio.run(scenario())
    assert [0, 1, 2] == ticks_of(a) == ticks_of(b)


def test_an_engine_run_read_with_async_for() -> None:
    """engine.updates() before start sees the whole run; the iteration ends after Shutdown."""
    config = config_from_mapping({"mode": "backfill", "sync": {"shutdown_timeout_s": 5.0}})
    program: Any = FlakyProgram()  # a test-only mode program (no exchange, no database)
    engine = SyncEngine(config, program=program, children={})
    updates = engine.updates()
    controller = engine.start()
    statuses: list[SyncStatus] = []

    async def follow() -> None:
        async for update in updates:
            if isinstance(update, StatusUpdate):
                statuses.append(update.status)
                if update.status.state is State.BACKFILLED:
                    await asyncio.to_thread(controller.shutdown)

    try:
        asyncio.run(asyncio.wait_for(follow(), timeout=30))
    finally:
        if not controller.status_snapshot().is_stopped:
            controller.shutdown()
    assert [
        State.STARTING,
        State.IN_PROGRESS,
        State.BACKFILLED,
        State.SHUTDOWN_INITIATED,
        State.SHUTDOWN,
    ] == [s.state for s in statuses]
    assert controller.reader().updates().get_nowait() is None
