"""Live-mode lookback (``20 x 5m``) and the sync modes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from qx_actors.domain.values import RESOLUTIONS

__all__ = [
    "MAX_LOOKBACK",
    "Lookback",
    "ModeKind",
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
    """The three kinds of sync run."""

    BACKFILL = "backfill"
    LIVE = "live"
    FULL = "full"


@dataclass(frozen=True, slots=True)
class SyncMode:
    """What a run does: ``SyncMode.backfill()``, ``.live(lookback)``, ``.full()``.

    quantoxide's constructors work too: ``live_no_lookback()``, ``live_with_lookback(lb)``.
    ``str(mode)`` reads like quantoxide's Display (``Backfill``, ``Live (lookback: 20 x 5m)``,
    ``Full``); :attr:`name` is the form logs and the CLI use (``live (lookback: 20 x 5m)``).
    """

    kind: ModeKind
    lookback: Lookback | None = None

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

    @property
    def live_feed_active(self) -> bool:
        """Whether the mode follows live prices."""
        return self.kind is not ModeKind.BACKFILL

    @property
    def name(self) -> str:
        """The mode as logs and the CLI name it: ``backfill``, ``live (lookback: 20 x 5m)``."""
        if self.kind is ModeKind.LIVE and self.lookback is not None:
            return f"live (lookback: {self.lookback})"
        return self.kind.value

    def __str__(self) -> str:
        name = self.name
        return name[0].upper() + name[1:]
