"""FeedWatch: the WS feed's events → the FeedState, the degraded flag and its reasons, Synced once
per attempt, and whether a program sleeping until the feed changes must wake."""

from __future__ import annotations

import pytest

from qx_actors.actors._feed_watch import FeedWatch
from qx_actors.actors.messages import FeedQuiet, FeedState, StreamDown, StreamUp, TicksFlowing


class Recorder:
    def __init__(self) -> None:
        self.degraded: list[tuple[bool, str]] = []
        self.synced = 0

    def set_degraded(self, degraded: bool, reason: str) -> None:
        self.degraded.append((degraded, reason))

    def report_synced(self) -> None:
        self.synced += 1


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def watch(rec: Recorder) -> FeedWatch:
    return FeedWatch(rec.set_degraded, rec.report_synced)


def test_stream_down_then_up_sets_and_clears_the_flag(watch: FeedWatch, rec: Recorder) -> None:
    assert watch.on_event(StreamDown(ConnectionError("reset by peer")))
    assert FeedState(down=True) == watch.state
    assert watch.on_event(StreamUp())
    assert FeedState() == watch.state
    assert [(True, "reset by peer"), (False, "stream subscribed")] == rec.degraded


def test_stream_up_when_up_tells_the_flag_but_does_not_wake(
    watch: FeedWatch, rec: Recorder
) -> None:
    assert not watch.on_event(StreamUp())
    assert [(False, "stream subscribed")] == rec.degraded


def test_quiet_then_ticks_flowing(watch: FeedWatch, rec: Recorder) -> None:
    assert watch.on_event(FeedQuiet(silent_s=2.5))
    assert FeedState(quiet=True) == watch.state
    assert watch.on_event(TicksFlowing())
    assert FeedState() == watch.state
    assert [(True, "no tick for 2.5 s"), (False, "ticks flow again")] == rec.degraded
    assert 1 == rec.synced


def test_quiet_while_down_keeps_the_down_reason(watch: FeedWatch, rec: Recorder) -> None:
    watch.on_event(StreamDown(ConnectionError("gone")))
    assert watch.on_event(FeedQuiet(silent_s=5))
    assert FeedState(down=True, quiet=True) == watch.state
    # ticks flowing while the stream is down does not clear the flag
    assert watch.on_event(TicksFlowing())
    assert [(True, "gone")] == rec.degraded


def test_ticks_flowing_when_not_quiet_only_reports_synced(watch: FeedWatch, rec: Recorder) -> None:
    assert not watch.on_event(TicksFlowing())
    assert [] == rec.degraded
    assert 1 == rec.synced


def test_synced_is_taken_once_per_attempt(watch: FeedWatch) -> None:
    assert watch.take_synced()
    assert not watch.take_synced()
    watch.on_event(StreamDown(ConnectionError("x")))
    watch.reset()
    assert FeedState() == watch.state
    assert watch.take_synced()


def test_ticks_held_in_memory_degrade_until_a_writer_takes_them(
    watch: FeedWatch, rec: Recorder
) -> None:
    """Holding ticks while the DB writer is replaced sets the flag; a stream event meanwhile
    does not clear it; a new writer does."""
    watch.hold_ticks("DatabaseUnavailable: down")
    assert watch.degraded
    watch.on_event(StreamUp())
    watch.hold_ticks(None)
    assert not watch.degraded
    expected = [(True, "DatabaseUnavailable: down"), (False, "ticks reach the database again")]
    assert expected == rec.degraded


def test_a_new_attempt_with_the_same_feed_keeps_its_state(watch: FeedWatch) -> None:
    """The feed outlived the DB writer: its stream state stays, Synced is told again."""
    watch.on_event(StreamDown(ConnectionError("x")))
    assert watch.take_synced()
    watch.new_attempt()
    assert FeedState(down=True) == watch.state
    assert watch.take_synced()
