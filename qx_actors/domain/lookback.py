"""Live-mode lookback (``20 x 5m``) and the sync modes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from qx_actors.domain.timeutil import format_utc, require_utc
from qx_actors.domain.values import RESOLUTIONS

__all__ = [
    "MAX_LOOKBACK",
    "Lookback",
    "ModeKind",
    "ReplayWindow",
    "SyncMode",
]

#: The longest lookback accepted (as in quantoxide).
MAX_LOOKBACK = timedelta(days=500)

_LOOKBACK_RE = re.compile(r"^\s*(\d+)\s*[xX\u00d7]\s*([0-9]+[mhd])\s*$")


@dataclass(frozen=True, slots=True)
class Lookback:
    """How much recent candle history live mode makes sure of: ``count`` x ``resolution``."""

    count: int
    resolution: str

    def __post_init__(self) -> None:
        if self.resolution not in RESOLUTIONS:
            known = ", ".join(RESOLUTIONS)
            raise ValueError(f"unknown resolution {self.resolution!r} (expected one of {known})")
        if self.count < 1:
            raise ValueError(f"lookback count must be at least 1, got {self.count}")
        if self.duration > MAX_LOOKBACK:
            raise ValueError(f"lookback {self} is longer than {MAX_LOOKBACK.days} days")

    @classmethod
    def parse(cls, text: str) -> Lookback:
        """Parse ``"20 x 5m"``; a ``ValueError`` says what was expected."""
        match = _LOOKBACK_RE.match(text)
        if match is None:
            raise ValueError(f"expected 'N x RES' such as '20 x 5m', got {text!r}")
        return cls(int(match.group(1)), match.group(2))

    @property
    def duration(self) -> timedelta:
        """The time span the lookback covers."""
        return self.count * RESOLUTIONS[self.resolution]

    def __str__(self) -> str:
        return f"{self.count} x {self.resolution}"


class ModeKind(StrEnum):
    """The kinds of run: three that sync, and replay (recorded data, nothing written)."""

    BACKFILL = "backfill"
    LIVE = "live"
    FULL = "full"
    REPLAY = "replay"


@dataclass(frozen=True, slots=True)
class ReplayWindow:
    """What a replay delivers: the recorded ``[start, end)`` at ``speed`` times real time
    (``None``: as fast as the receivers read, back-pressured)."""

    start: datetime
    end: datetime
    speed: float | None = None

    def __post_init__(self) -> None:
        require_utc(self.start, "replay start")
        require_utc(self.end, "replay end")
        if self.end <= self.start:
            raise ValueError(
                f"replay end {format_utc(self.end)} is not after its start {format_utc(self.start)}"
            )
        if self.speed is not None and not self.speed > 0:
            raise ValueError(f"replay speed must be a number > 0 or 'max', got {self.speed!r}")

    @staticmethod
    def parse_speed(speed: float | str | None) -> float | None:
        """``60`` / ``"60"`` / ``"60x"`` -> 60.0; ``"max"`` or ``None`` -> ``None`` (max)."""
        if speed is None or (isinstance(speed, str) and speed.strip().lower() == "max"):
            return None
        try:
            value = float(speed.strip().removesuffix("x")) if isinstance(speed, str) else speed
        except ValueError:
            raise ValueError(f"expected a speed factor > 0 or 'max', got {speed!r}") from None
        if isinstance(value, bool) or not value > 0 or value != value or value == float("inf"):
            raise ValueError(f"expected a speed factor > 0 or 'max', got {speed!r}")
        return float(value)

    @property
    def speed_text(self) -> str:
        """``max`` or the factor (``60x``)."""
        return "max" if self.speed is None else f"{self.speed:g}x"

    def __str__(self) -> str:
        return f"{format_utc(self.start)} .. {format_utc(self.end)} at {self.speed_text}"


@dataclass(frozen=True, slots=True)
class SyncMode:
    """What a run does: ``SyncMode.backfill()``, ``.live(lookback)``, ``.full()``.

    quantoxide's constructors work too: ``live_no_lookback()``, ``live_with_lookback(lb)``.
    ``str(mode)`` reads like quantoxide's Display (``Backfill``, ``Live (lookback: 20 x 5m)``,
    ``Full``); :attr:`name` is the form logs and the CLI use (``live (lookback: 20 x 5m)``).
    """

    kind: ModeKind
    lookback: Lookback | None = None
    #: Replay only: what is replayed, and how fast.
    replay_window: ReplayWindow | None = None

    def __post_init__(self) -> None:
        if (self.kind is ModeKind.REPLAY) != (self.replay_window is not None):
            raise ValueError("a replay needs its window (start, end, speed); only a replay has one")

    @classmethod
    def backfill(cls) -> SyncMode:
        """History only, over REST; no live feed."""
        return cls(ModeKind.BACKFILL)

    @classmethod
    def live(cls, lookback: Lookback | str | None = None) -> SyncMode:
        """Live prices, after making sure of ``lookback`` recent candles (if any)."""
        if isinstance(lookback, str):
            lookback = Lookback.parse(lookback)
        return cls(ModeKind.LIVE, lookback)

    @classmethod
    def live_no_lookback(cls) -> SyncMode:
        """Live prices; only the last hour of candles (the ones that may still change)."""
        return cls(ModeKind.LIVE)

    @classmethod
    def live_with_lookback(cls, lookback: Lookback | str) -> SyncMode:
        """Live prices, after making sure of the most recent ``lookback`` of candles."""
        return cls.live(lookback)

    @classmethod
    def full(cls) -> SyncMode:
        """Backfill everything, then live."""
        return cls(ModeKind.FULL)

    @classmethod
    def replay(
        cls, start: datetime, end: datetime, speed: float | Literal["max"] | None = "max"
    ) -> SyncMode:
        """The recorded ``[start, end)`` through the same update stream: every stored tick, a
        ``CandleClosed`` per stored minute, settlements as they fall due; ``speed`` times real
        time or ``"max"`` (back-pressured: nothing is dropped). Reads only; the run shuts
        itself down at ``end``."""
        return cls(ModeKind.REPLAY, replay_window=ReplayWindow(start, end, _speed(speed)))

    @property
    def live_feed_active(self) -> bool:
        """Whether the mode follows live prices."""
        return self.kind is not ModeKind.BACKFILL

    @property
    def name(self) -> str:
        """The mode as logs and the CLI name it: ``backfill``, ``live (lookback: 20 x 5m)``."""
        if self.kind is ModeKind.LIVE and self.lookback is not None:
            return f"live (lookback: {self.lookback})"
        if self.replay_window is not None:
            return f"replay ({self.replay_window})"
        return self.kind.value

    def __str__(self) -> str:
        name = self.name
        return name[0].upper() + name[1:]


def _speed(speed: float | str | None) -> float | None:
    return ReplayWindow.parse_speed(speed)
