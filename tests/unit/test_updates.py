"""Update receivers: bounded, lag reporting, closing."""

from __future__ import annotations

import threading

import pytest

from qx_actors.status import State, SyncStatus
from qx_actors.updates import Lagged, ReceiverClosed, StatusUpdate, SyncUpdate, UpdateHub


def status(state: State) -> StatusUpdate:
    """A status update for ``state``."""
    return StatusUpdate(SyncStatus(state))


def test_receiver_gets_updates_in_order() -> None:
    """Updates arrive in publication order."""
    hub = UpdateHub(capacity=10)
    receiver = hub.receiver()
    hub.publish(status(State.STARTING))
    hub.publish(status(State.IN_PROGRESS))
    assert [State.STARTING, State.IN_PROGRESS] == [
        receiver.get(1).status.state,  # type: ignore[attr-defined]
        receiver.get(1).status.state,  # type: ignore[attr-defined]
    ]


def test_lagging_receiver_reports_missed_then_continues_with_the_oldest_kept() -> None:
    """On overflow the oldest are dropped and the next get returns Lagged(missed=N)."""
    hub = UpdateHub(capacity=3)
    receiver = hub.receiver()
    for i in range(10):
        hub.publish(SyncUpdate.PriceTick(i))
    assert Lagged(missed=7) == receiver.get(1)
    assert [7, 8, 9] == [receiver.get(1).tick for _ in range(3)]  # type: ignore[attr-defined]
    assert 7 == receiver.total_missed
    assert receiver.get_nowait() is None


def test_slow_receiver_does_not_affect_others() -> None:
    """A full receiver lags alone; another receiver gets everything."""
    hub = UpdateHub(capacity=2)
    slow, fast = hub.receiver(), hub.receiver()
    seen = []
    for i in range(5):
        hub.publish(SyncUpdate.PriceTick(i))
        seen.append(fast.get(1).tick)  # type: ignore[attr-defined]
    assert [0, 1, 2, 3, 4] == seen
    assert Lagged(3) == slow.get(1)


def test_get_times_out() -> None:
    """get(timeout) raises TimeoutError when nothing arrives."""
    receiver = UpdateHub(capacity=2).receiver()
    with pytest.raises(TimeoutError):
        receiver.get(0.01)


def test_closed_receiver_drains_then_ends() -> None:
    """After close, queued updates are still delivered, then ReceiverClosed."""
    hub = UpdateHub(capacity=5)
    receiver = hub.receiver()
    hub.publish(status(State.STARTING))
    hub.close()
    assert isinstance(receiver.get(1), StatusUpdate)
    with pytest.raises(ReceiverClosed):
        receiver.get(1)
    assert [] == list(hub.receiver())


def test_get_wakes_up_on_publish_from_another_thread() -> None:
    """A blocked get returns as soon as another thread publishes."""
    hub = UpdateHub(capacity=5)
    receiver = hub.receiver()
    publisher = threading.Thread(target=hub.publish, args=(status(State.SYNCED),))
    publisher.start()
    assert State.SYNCED == receiver.get(5).status.state  # type: ignore[attr-defined]
    publisher.join()


def test_wait_stopped_returns_terminal_status() -> None:
    """wait_stopped returns once a terminal status is set, None on timeout."""
    hub = UpdateHub(capacity=5)
    assert hub.wait_stopped(0.01) is None
    hub.set_status(SyncStatus(State.SHUTDOWN))
    final = hub.wait_stopped(1)
    assert final is not None and State.SHUTDOWN == final.state
