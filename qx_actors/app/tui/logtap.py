"""The run's own log events for the TUI's log pane, taken from structlog without changing it.

:class:`LogTap` is a structlog processor put at the *front* of whatever chain is configured
(``configure_logging``'s, an application's, or structlog's defaults): it copies each event of
the run (same ``run_id``, or none) into a bounded buffer and passes the event on untouched, so
the configured output (a log file, for instance) keeps receiving everything. It costs the
logging thread one dict copy and a ``deque.append``; formatting happens in the TUI.

:func:`install` swaps the chain for ``[tap, *chain]`` (a new list: structlog loggers bound
before keep the old chain, so install before ``engine.start()``); :func:`restore` puts the
saved chain back. Events below the configured level never reach a processor, so the pane shows
what the configuration lets through.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import structlog

from qx_actors.redact import redact_text

__all__ = [
    "LEVELS",
    "LogEntry",
    "LogTap",
    "install",
    "level_rank",
    "restore",
]

#: Level names in order; the filter shows entries at or above the chosen one.
LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")

_METHOD_LEVEL = {
    "debug": "debug",
    "info": "info",
    "msg": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
    "err": "error",
    "exception": "error",
    "critical": "error",
    "fatal": "error",
}
#: Fields every event of the run carries; not repeated on each line.
_QUIET = {"run_id", "mode", "actor", "event", "timestamp", "level", "exc_info", "logger"}


def level_rank(level: str) -> int:
    """Position of ``level`` in :data:`LEVELS` (unknown levels rank as ``info``)."""
    try:
        return LEVELS.index(level)
    except ValueError:
        return 1


@dataclass(frozen=True)
class LogEntry:
    """One event as the pane shows it."""

    at: float
    level: str
    event: str
    actor: str | None
    fields: tuple[tuple[str, Any], ...]

    def line(self) -> str:
        """``12:00:01.250 INFO  controller  status_transition  src=... dst=...`` (scrubbed)."""
        clock = time.strftime("%H:%M:%S", time.localtime(self.at))
        millis = int(self.at * 1000) % 1000
        parts = [f"{clock}.{millis:03d}", f"{self.level.upper():<7}"]
        if self.actor:
            parts.append(f"{self.actor:<11}")
        parts.append(self.event)
        parts.extend(f"{key}={value}" for key, value in self.fields)
        return redact_text(" ".join(parts))


class LogTap:
    """A structlog processor that copies the run's events into a bounded buffer."""

    def __init__(self, run_id: str, capacity: int = 5000) -> None:
        self.run_id = run_id
        self._entries: deque[LogEntry] = deque(maxlen=capacity)
        self.enabled = True

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> Any:
        if self.enabled:
            # the tap must never break the caller's logging
            with contextlib.suppress(Exception):
                self._take(method_name, event_dict)
        return event_dict

    def _take(self, method_name: str, event_dict: Any) -> None:
        run_id = event_dict.get("run_id")
        if run_id is None:  # bound in the thread's context rather than on the logger
            run_id = structlog.contextvars.get_contextvars().get("run_id")
        if run_id is not None and run_id != self.run_id:
            return
        level = event_dict.get("level") or _METHOD_LEVEL.get(method_name, "info")
        fields = tuple((key, value) for key, value in event_dict.items() if key not in _QUIET)
        if event_dict.get("exc_info"):
            fields += (("exc_info", True),)
        actor = event_dict.get("actor")
        self.add(
            LogEntry(
                time.time(),
                str(level).lower(),
                str(event_dict.get("event", "")),
                None if actor is None else str(actor),
                fields,
            )
        )

    def add(self, entry: LogEntry) -> None:
        """Add an entry (thread-safe; the oldest goes when full)."""
        self._entries.append(entry)

    def drain(self) -> Iterator[LogEntry]:
        """Every entry added since the last drain, oldest first."""
        while True:
            try:
                yield self._entries.popleft()
            except IndexError:
                return


class _Installed:
    """What :func:`install` replaced, for :func:`restore`."""

    def __init__(self, tap: LogTap, processors: list[Any], was_configured: bool) -> None:
        self.tap = tap
        self.processors = processors
        self.was_configured = was_configured


_lock = threading.Lock()


def install(tap: LogTap) -> _Installed:
    """Put ``tap`` at the front of structlog's processor chain; the handle for :func:`restore`."""
    with _lock:
        was_configured = structlog.is_configured()
        saved = list(structlog.get_config()["processors"])
        structlog.configure(processors=[tap, *saved])
    return _Installed(tap, saved, was_configured)


def restore(installed: _Installed) -> None:
    """Put back the chain :func:`install` replaced (and stop the tap copying events)."""
    installed.tap.enabled = False
    with _lock:
        current = structlog.get_config()["processors"]
        # Only if nobody reconfigured structlog meanwhile: theirs wins.
        if current and current[0] is installed.tap:
            if installed.was_configured:
                structlog.configure(processors=installed.processors)
            else:
                structlog.reset_defaults()
