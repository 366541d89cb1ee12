"""Structured logging: the event names, ``configure_logging``, and the transition timeline.

The package only *emits* structlog events (snake_case names with key/value fields); it is
configured by the CLI or the embedding application, never on import.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, TextIO, cast

import structlog

from qx_actors.config import LoggingConfig
from qx_actors.status import TRANSITIONS, State, Trigger

#: An applied status transition (``run_id, mode, trigger, src, dst, error, timestamp``).
STATUS_TRANSITION = "status_transition"
#: A trigger the graph rejected (``trigger, state, reason``).
STATUS_TRANSITION_REJECTED = "status_transition_rejected"
#: Live data started or stopped flowing by REST polling only (``degraded``, ``state``, ``reason``).
DEGRADED_MODE_CHANGED = "degraded_mode_changed"
#: A status event from the Engine that arrived after shutdown was initiated (ignored).
STATUS_EVENT_IGNORED = "status_event_ignored"

_open_files: list[IO[str]] = []


def configure_logging(config: LoggingConfig | None = None, *, stream: TextIO | None = None) -> None:
    """Configure structlog process-wide: JSON lines (file or stderr) or a console format."""
    config = config or LoggingConfig()
    level = logging.getLevelNamesMapping()[config.level.upper()]
    for handle in _open_files:
        handle.close()
    _open_files.clear()
    if config.file is not None:
        out: TextIO = open(config.file, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        _open_files.append(out)
    else:
        out = stream or cast(TextIO, _CurrentStderr())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if config.format == "json":
        renderer: list[Any] = [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(default=str),
        ]
    else:
        renderer = [structlog.dev.ConsoleRenderer(colors=out.isatty())]
    structlog.configure(
        processors=[*shared, *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


class _CurrentStderr(io.TextIOBase):
    """Whatever ``sys.stderr`` is at each write, so that a live terminal display that
    redirects stderr (rich) can print log lines above itself instead of being torn by them."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def get_logger(**context: Any) -> Any:
    """A structlog logger bound to ``context`` (e.g. ``run_id``, ``actor``)."""
    return structlog.get_logger("qx_actors").bind(**context)


# --- reading logs back ----------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineEntry:
    """One ``status_transition`` read back from a JSON log line."""

    timestamp: str
    run_id: str
    mode: str
    trigger: str
    src: str
    dst: str
    error: str | None
    in_graph: bool


def _edge_in_graph(trigger: str, src: str, dst: str) -> bool:
    try:
        t, s, d = Trigger(trigger), State(src), State(dst)
    except ValueError:
        return False
    return any(tt is t and s in sources and dd is d for tt, sources, dd in TRANSITIONS)


def read_timeline(lines: Iterable[str]) -> Iterator[TimelineEntry]:
    """The status transitions found in JSON log lines (other lines are skipped)."""
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or record.get("event") != STATUS_TRANSITION:
            continue
        trigger, src, dst = (str(record.get(k, "")) for k in ("trigger", "src", "dst"))
        yield TimelineEntry(
            timestamp=str(record.get("timestamp", "")),
            run_id=str(record.get("run_id", "")),
            mode=str(record.get("mode", "")),
            trigger=trigger,
            src=src,
            dst=dst,
            error=record.get("error"),
            in_graph=_edge_in_graph(trigger, src, dst),
        )


def format_timeline(entries: Iterable[TimelineEntry]) -> str:
    """A plain-text timeline: time, run, src -> dst, trigger, error; off-graph edges flagged."""
    out = []
    for e in entries:
        flag = "" if e.in_graph else "  !! not in the status graph"
        error = f"  error={e.error}" if e.error else ""
        out.append(f"{e.timestamp}  {e.run_id}  {e.src} -> {e.dst}  [{e.trigger}]{error}{flag}")
    return "\n".join(out)
