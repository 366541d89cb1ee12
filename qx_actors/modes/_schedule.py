"""Named timers of a mode program, as data: which are due, and how long the program sleeps."""

from __future__ import annotations


class Schedule:
    """Named deadlines on a monotonic clock (seconds, e.g. ``RunContext.monotonic()``).

    A program sets each timer, sleeps :meth:`next_wake`, and on waking runs what is
    :meth:`due` and sets those timers again. Only timers that were set exist: a mode without a
    whole-history pass simply never sets that one.
    """

    def __init__(self) -> None:
        self._at: dict[str, float] = {}

    def set(self, name: str, at: float) -> None:
        """Timer ``name`` is due from ``at`` on (``at`` <= now: at once)."""
        self._at[name] = at

    def at(self, name: str) -> float:
        """When timer ``name`` is due (``KeyError`` if it was never set)."""
        return self._at[name]

    def due(self, now: float) -> frozenset[str]:
        """The timers due at ``now``."""
        return frozenset(name for name, at in self._at.items() if now >= at)

    def next_wake(self, now: float) -> float:
        """Seconds from ``now`` until the first timer is due (0: one is due already)."""
        if not self._at:
            raise ValueError("no timer is set")
        return max(min(self._at.values()) - now, 0.0)
