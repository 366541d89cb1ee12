"""Fault switches of the simulator, flipped at run time from any thread.

Every switch is deterministic: "the next N requests/ticks" counters, fixed ranges, or a seeded
error fraction. REST switches take an optional ``endpoint`` filter (``"candles"``,
``"funding-settlements"``, ``"ticker"``; ``None`` = any endpoint). A request rejected by the
rate limiter does not consume a counter. See :mod:`qx_actors.simulator` for the full list.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from qx_actors.domain.timeutil import from_epoch_ms, to_epoch_ms

from .market import ceil_index

__all__ = ["BAD_CANDLE_FIELDS", "ENDPOINTS", "CorruptedPage", "Faults"]

#: REST endpoint names usable as ``endpoint=`` filters.
ENDPOINTS = ("candles", "funding-settlements", "ticker")
#: The candle fields :meth:`Faults.bad_candle` can spoil.
BAD_CANDLE_FIELDS = ("open", "high", "low", "close", "volume")


@dataclass
class _Armed:
    remaining: int
    endpoint: str | None
    value: Any


@dataclass(frozen=True)
class CorruptedPage:
    """A page the simulator served with bad data in it: which fault, which endpoint, and the
    times of its newest and oldest item (what a client must not store any of)."""

    kind: str
    endpoint: str
    newest: datetime
    oldest: datetime


@dataclass(frozen=True)
class _BadCandle:
    time: datetime
    field: str
    value: float | None


@dataclass(frozen=True)
class _Hidden:
    first_ms: int
    end_ms: int  # exclusive
    until: datetime | None


class Faults:
    """Thread-safe fault switches shared by the REST app and the Stream server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hung_changed = threading.Condition(self._lock)
        self._armed: dict[str, list[_Armed]] = {}
        self._delay_s = 0.0
        self._fraction: tuple[float, int, str | None, random.Random] | None = None
        self._hidden_candles: list[_Hidden] = []
        self._hidden_settlements: list[_Hidden] = []
        self._off_grid: list[datetime] = []
        self._bad_candles: list[_BadCandle] = []
        self._corrupted: list[CorruptedPage] = []
        self._hang_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        # Stream
        self._stream_silent = False
        self._ignore_pings = False
        self._refuse_count = 0
        self._refuse_until: float | None = None
        self._drop_hooks: list[Callable[[bool], None]] = []

    # -- generic counters ------------------------------------------------------------------

    def _arm(self, kind: str, n: int, endpoint: str | None, value: Any = None) -> None:
        if n < 0:
            raise ValueError("n must be >= 0")
        if endpoint is not None and endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {ENDPOINTS}")
        with self._lock:
            self._armed.setdefault(kind, []).append(_Armed(n, endpoint, value))

    def take(self, kind: str, endpoint: str | None = None) -> Any | None:
        """Consume one armed ``kind`` fault matching ``endpoint``; its value or ``None``."""
        with self._lock:
            entries = self._armed.get(kind)
            if not entries:
                return None
            for entry in entries:
                if entry.remaining > 0 and entry.endpoint in (None, endpoint):
                    entry.remaining -= 1
                    value = entry.value if entry.value is not None else True
                    self._armed[kind] = [e for e in entries if e.remaining > 0]
                    return value
            return None

    def clear(self) -> None:
        """Switch every fault off (hidden data is revealed, hung responses released)."""
        with self._lock:
            self._armed.clear()
            self._delay_s = 0.0
            self._fraction = None
            self._hidden_candles.clear()
            self._hidden_settlements.clear()
            self._off_grid.clear()
            self._bad_candles.clear()
            self._stream_silent = False
            self._ignore_pings = False
            self._refuse_count = 0
            self._refuse_until = None
        self.release_hung()

    # -- REST: status errors ---------------------------------------------------------------

    def fail_next(
        self, n: int = 1, status: int = 503, endpoint: str | None = None, plain_text: bool = False
    ) -> None:
        """The next ``n`` responses are HTTP ``status``: any error code 400..599 (a stray 400,
        408, 418, 429 without ``Retry-After``, 500, 502, 503, 504 ...), with a JSON body
        ``{"message", "code"}`` or, with ``plain_text``, a ``"<status> <reason>"`` text body."""
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error code 400..599, got {status}")
        self._arm("fail", n, endpoint, (status, plain_text))

    def rate_limit_next(
        self, n: int = 1, retry_after: float | None = 1, endpoint: str | None = None
    ) -> None:
        """The next ``n`` responses are 429 with ``Retry-After: retry_after`` (``None``: no
        header)."""
        self._arm("429", n, endpoint, (retry_after,))

    def set_error_fraction(
        self, fraction: float, status: int = 503, seed: int = 0, endpoint: str | None = None
    ) -> None:
        """A seeded ``fraction`` (0..1) of responses are ``status``; 0 switches it off."""
        with self._lock:
            self._fraction = (
                None if fraction <= 0 else (fraction, status, endpoint, random.Random(seed))
            )

    def take_fraction_error(self, endpoint: str) -> int | None:
        """The status of a seeded random error for this request, or ``None``."""
        with self._lock:
            if self._fraction is None:
                return None
            fraction, status, wanted, rng = self._fraction
            if wanted not in (None, endpoint):
                return None
            return status if rng.random() < fraction else None

    # -- REST: latency ---------------------------------------------------------------------

    def set_delay(self, seconds: float) -> None:
        """Every response is delayed by ``seconds`` (0 = off)."""
        with self._lock:
            self._delay_s = max(0.0, seconds)

    def delay(self) -> float:
        """The persistent response delay in seconds."""
        with self._lock:
            return self._delay_s

    def delay_next(self, n: int, seconds: float, endpoint: str | None = None) -> None:
        """The next ``n`` responses are delayed by ``seconds``."""
        self._arm("delay", n, endpoint, seconds)

    def hang_next(self, n: int = 1, endpoint: str | None = None) -> None:
        """The next ``n`` requests hang until :meth:`release_hung` or the server stops."""
        self._arm("hang", n, endpoint)

    async def wait_released(self) -> None:
        """(Server side) block until :meth:`release_hung` is called."""
        event = asyncio.Event()
        with self._lock:
            self._hang_waiters.append((asyncio.get_running_loop(), event))
            self._hung_changed.notify_all()
        await event.wait()

    def hung_count(self) -> int:
        """How many requests are hanging right now."""
        with self._lock:
            return sum(1 for _, ev in self._hang_waiters if not ev.is_set())

    def wait_hung(self, n: int = 1, timeout: float = 5.0) -> bool:
        """Block until at least ``n`` requests hang; ``False`` on timeout."""
        with self._lock:
            return self._hung_changed.wait_for(
                lambda: sum(1 for _, ev in self._hang_waiters if not ev.is_set()) >= n, timeout
            )

    def release_hung(self) -> None:
        """Let every hanging request answer normally."""
        with self._lock:
            waiters, self._hang_waiters = self._hang_waiters, []
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    # -- REST: payload corruption ----------------------------------------------------------

    def malformed_next(self, n: int = 1, endpoint: str | None = None) -> None:
        """The next ``n`` 200 responses carry a body that is not JSON: the first half of the
        real body, delivered whole (its ``Content-Length`` matches; the JSON is cut short)."""
        self._arm("malformed", n, endpoint)

    def truncate_next(self, n: int = 1, endpoint: str | None = None) -> None:
        """The next ``n`` 200 responses are cut off in transit: the headers declare the full
        ``Content-Length``, about half of the body is sent, then the connection is closed."""
        self._arm("truncate", n, endpoint)

    def wrong_types_next(
        self, n: int = 1, endpoint: str | None = None, field: str | None = None, value: Any = "abc"
    ) -> None:
        """The next ``n`` 200 responses have one field of the wrong type (first item).

        ``field`` defaults to ``open`` (candles), ``fundingRate`` (settlements), ``lastPrice``
        (ticker).
        """
        self._arm("wrong_types", n, endpoint, (field, value))

    def unordered_next(self, n: int = 1, endpoint: str = "candles") -> None:
        """The next ``n`` responses of ``endpoint`` (``"candles"`` or ``"funding-settlements"``)
        that hold >= 2 items have two middle items swapped (not strictly descending)."""
        if endpoint not in ("candles", "funding-settlements"):
            raise ValueError(
                f"unordered_next: endpoint must be 'candles' or 'funding-settlements', "
                f"got {endpoint!r}"
            )
        self._arm("unordered", n, endpoint)

    def unrounded_next(self, n: int = 1, offset_s: int = 30) -> None:
        """The next ``n`` candle responses have one (middle) candle time shifted by
        ``offset_s`` seconds (e.g. ``12:00:30.000Z``)."""
        self._arm("unrounded", n, "candles", offset_s)

    def bad_candle(self, when: datetime, field: str = "low", value: float | None = None) -> None:
        """Every candle response holding the minute ``when`` serves it with ``field`` set to
        ``value``, until :meth:`clear`: a persistently bad page. The default value breaks the
        OHLC consistency (``low`` above the open and close, ``high`` below them, ``open`` or
        ``close`` above the high; ``volume`` -1)."""
        if field not in BAD_CANDLE_FIELDS:
            raise ValueError(f"bad_candle: field must be one of {BAD_CANDLE_FIELDS}, got {field!r}")
        with self._lock:
            self._bad_candles.append(_BadCandle(when.astimezone(UTC), field, value))

    def bad_candles_in(
        self, newest: datetime, oldest: datetime
    ) -> list[tuple[datetime, str, float | None]]:
        """(REST app) the armed bad candles ``(time, field, value)`` with
        ``oldest <= time <= newest``."""
        with self._lock:
            return [
                (b.time, b.field, b.value) for b in self._bad_candles if oldest <= b.time <= newest
            ]

    def note_corrupted(self, kind: str, endpoint: str, newest: datetime, oldest: datetime) -> None:
        """(REST app) record a page served with bad data (see :meth:`corrupted_pages`)."""
        with self._lock:
            self._corrupted.append(CorruptedPage(kind, endpoint, newest, oldest))

    def corrupted_pages(self) -> list[CorruptedPage]:
        """Every page served with bad data in it so far (``unordered``, ``unrounded``,
        ``wrong_types``, ``bad_candle``, ``off_grid``), in order: what a client must not store
        any of."""
        with self._lock:
            return list(self._corrupted)

    # -- REST: history holes ---------------------------------------------------------------

    def hide_candles(self, start: datetime, end: datetime, until: datetime | None = None) -> None:
        """Candles in ``[start, end)`` are not served until :meth:`reveal_hidden` (or until the
        market clock reaches ``until``)."""
        with self._lock:
            self._hidden_candles.append(_Hidden(to_epoch_ms(start), to_epoch_ms(end), until))

    def hidden_candle_indexes(self, now: datetime) -> list[tuple[int, int]]:
        """Active hidden candle ranges as inclusive minute-index intervals."""
        with self._lock:
            hidden = list(self._hidden_candles)
        result = []
        for h in hidden:
            if h.until is not None and now >= h.until:
                continue
            first = ceil_index(from_epoch_ms(h.first_ms))
            last = ceil_index(from_epoch_ms(h.end_ms)) - 1
            if last >= first:
                result.append((first, last))
        return result

    def hide_settlements(
        self, start: datetime, end: datetime, until: datetime | None = None
    ) -> None:
        """Settlements with ``start <= time <= end`` are not served until revealed (or
        ``until``)."""
        end_ms = to_epoch_ms(end) + 1
        with self._lock:
            self._hidden_settlements.append(_Hidden(to_epoch_ms(start), end_ms, until))

    def is_settlement_hidden(self, when: datetime, now: datetime) -> bool:
        """Whether the settlement at ``when`` is hidden right now."""
        ms = to_epoch_ms(when)
        with self._lock:
            return any(
                h.first_ms <= ms < h.end_ms and (h.until is None or now < h.until)
                for h in self._hidden_settlements
            )

    def add_off_grid_settlement(self, when: datetime) -> None:
        """Serve an extra settlement at ``when`` (e.g. 03:00, off the schedule)."""
        with self._lock:
            self._off_grid.append(when.astimezone(UTC))

    def off_grid_settlements(self) -> list[datetime]:
        """The injected off-grid settlement times."""
        with self._lock:
            return list(self._off_grid)

    def reveal_hidden(self) -> None:
        """Serve every hidden candle and settlement from now on."""
        with self._lock:
            self._hidden_candles.clear()
            self._hidden_settlements.clear()

    # -- Stream ----------------------------------------------------------------------------

    def drop_stream(self, close_frame: bool = True) -> None:
        """Drop every open Stream connection now: with a close frame (1011) or by aborting
        the TCP connection without one."""
        with self._lock:
            hooks = list(self._drop_hooks)
        for hook in hooks:
            hook(close_frame)

    def drop_stream_after(self, n_ticks: int, close_frame: bool = True) -> None:
        """Drop every Stream connection right after the next ``n_ticks`` ticks are sent."""
        self._arm("drop_after", 1, None, (n_ticks, close_frame))

    def add_drop_hook(self, hook: Callable[[bool], None]) -> None:
        """(Stream server) register the callback that :meth:`drop_stream` calls."""
        with self._lock:
            self._drop_hooks.append(hook)

    def remove_drop_hook(self, hook: Callable[[bool], None]) -> None:
        """(Stream server) unregister a drop callback."""
        with self._lock:
            if hook in self._drop_hooks:
                self._drop_hooks.remove(hook)

    def set_stream_silent(self, silent: bool = True) -> None:
        """Stop (or resume) sending ticks while keeping connections open."""
        with self._lock:
            self._stream_silent = silent

    @property
    def stream_silent(self) -> bool:
        """Whether ticks are suppressed."""
        with self._lock:
            return self._stream_silent

    def set_ignore_pings(self, ignore: bool = True) -> None:
        """Stop (or resume) answering JSON-RPC ``ping`` requests."""
        with self._lock:
            self._ignore_pings = ignore

    @property
    def ignore_pings(self) -> bool:
        """Whether JSON-RPC pings go unanswered."""
        with self._lock:
            return self._ignore_pings

    def duplicate_ticks_next(self, n: int = 1) -> None:
        """Each of the next ``n`` ticks is sent twice."""
        self._arm("dup_tick", n, None)

    def out_of_order_ticks_next(self, n: int = 1) -> None:
        """The next ``n`` pairs of ticks are sent in swapped order (newer first)."""
        self._arm("ooo_tick", n, None)

    def malformed_frames_next(self, n: int = 1) -> None:
        """A malformed (invalid JSON) frame is sent before each of the next ``n`` ticks."""
        self._arm("bad_frame", n, None)

    def refuse_connections(self, n: int | None = None, seconds: float | None = None) -> None:
        """Refuse the next ``n`` Stream handshakes (HTTP 503) and/or all for ``seconds``."""
        with self._lock:
            if n is not None:
                self._refuse_count = n
            if seconds is not None:
                self._refuse_until = time.monotonic() + seconds

    def take_refusal(self) -> bool:
        """(Stream server) whether to refuse this handshake; consumes a counter."""
        with self._lock:
            if self._refuse_count > 0:
                self._refuse_count -= 1
                return True
            return self._refuse_until is not None and time.monotonic() < self._refuse_until
