"""What the WS feed says of its stream, turned into the run's degraded flag.

The Engine owns one :class:`FeedWatch` per run: the feed's events (up, down, quiet, ticks
flowing) update a :class:`FeedState`; a change of the flag is told through ``set_degraded``,
and ticks flowing through ``report_synced`` (told once per attempt: see
:meth:`FeedWatch.take_synced`). The run is degraded too while received ticks are held in
memory only, the DB writer being replaced after a database error (:meth:`FeedWatch.hold_ticks`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from qx_actors.actors.messages import FeedQuiet, FeedState, StreamDown, StreamUp, TicksFlowing

FeedEvent = StreamUp | StreamDown | FeedQuiet | TicksFlowing


class FeedWatch:
    """The stream's state for one attempt, and the degraded flag it implies."""

    def __init__(
        self,
        set_degraded: Callable[[bool, str], None],
        report_synced: Callable[[], None],
    ) -> None:
        self._set_degraded = set_degraded
        self._report_synced = report_synced
        self.state = FeedState()
        self._synced = False
        # Why ticks are held in memory only (None: they reach the database).
        self._holding: str | None = None

    def reset(self) -> None:
        """A fresh attempt: a fresh feed, ``Synced`` not yet told."""
        self.state = FeedState()
        self._synced = False
        self._holding = None

    def new_attempt(self) -> None:
        """A fresh attempt with the same feed (it outlived a DB writer): its stream state
        stays, ``Synced`` is not yet told."""
        self._synced = False

    @property
    def degraded(self) -> bool:
        """Whether live data does not reach the database as it should."""
        return self.state.down or self.state.quiet or self._holding is not None

    def hold_ticks(self, reason: str | None) -> None:
        """Received ticks are held in memory only because of ``reason`` (``None``: they reach
        a DB writer again); the run is degraded meanwhile."""
        before = self.degraded
        self._holding = reason
        if self.degraded != before:
            self._set_degraded(self.degraded, reason or "ticks reach the database again")

    def take_synced(self) -> bool:
        """Whether ``Synced`` is still to be told in this attempt (then it counts as told)."""
        first, self._synced = not self._synced, True
        return first

    def on_event(self, event: FeedEvent) -> bool:
        """Take in one event of the feed; whether the :class:`FeedState` changed (what wakes a
        program sleeping until the feed changes)."""
        feed = self.state
        match event:
            case StreamUp():
                self.state = replace(feed, down=False)
                if self._holding is None:
                    self._set_degraded(False, "stream subscribed")
            case StreamDown(error=error):
                self.state = replace(feed, down=True)
                self._set_degraded(True, str(error))
            case FeedQuiet(silent_s=silent_s):
                self.state = replace(feed, quiet=True)
                if not feed.down:
                    self._set_degraded(True, f"no tick for {silent_s:g} s")
            case TicksFlowing():
                self.state = replace(feed, quiet=False)
                if feed.quiet and not feed.down and self._holding is None:
                    self._set_degraded(False, "ticks flow again")
                self._report_synced()
        return self.state != feed
