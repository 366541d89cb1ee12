"""Structured logging: the event names, ``configure_logging``, and the transition timeline.

The package only *emits* structlog events (snake_case names with key/value fields); it is
configured by the CLI or the embedding application, never on import.

Whatever ``configure_logging`` writes is scrubbed of secrets (:mod:`qx_actors.redact`): every
string of every event, its formatted exception included, and then the rendered line; the
records of other libraries' standard-library loggers are scrubbed the same way.
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
from qx_actors.redact import redact_text, redact_value
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
        # Exceptions become text here (plain, no locals), so that the next step scrubs them.
        structlog.processors.format_exc_info,
        redact_event,
    ]
    renderer: Any
    if config.format == "json":
        renderer = structlog.processors.JSONRenderer(default=str)
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    structlog.configure(
        processors=[*shared, renderer, redact_rendered],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    _route_stdlib_logging(out, level, renderer)


def redact_event(logger: Any, method_name: str, event_dict: Any) -> Any:
    """structlog processor: every value of the event with its secrets replaced by ``***``."""
    return {
        key: value if key == "exc_info" else redact_value(value)
        for key, value in event_dict.items()
    }


def redact_rendered(logger: Any, method_name: str, rendered: Any) -> Any:
    """structlog processor after the renderer: the rendered line scrubbed once more (a
    secret that only appears once the renderer escaped or joined the values)."""
    return redact_text(rendered) if isinstance(rendered, str) else rendered


class _RedactingProcessorFormatter(structlog.stdlib.ProcessorFormatter):
    """Renders a standard-library record like a structlog event, then scrubs it."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


_STDLIB_HANDLER_NAME = "qx-actors-redacted"


def _route_stdlib_logging(out: TextIO, level: int, renderer: Any) -> None:
    """Send warnings and errors of other libraries' loggers (pykka, aiohttp, ...) to ``out``
    as events of the same format, scrubbed, instead of Python's last-resort handler (which
    prints them, tracebacks and all, unscrubbed on stderr)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _STDLIB_HANDLER_NAME:
            root.removeHandler(old)
    handler = logging.StreamHandler(out)
    handler.set_name(_STDLIB_HANDLER_NAME)
    handler.setLevel(max(level, logging.WARNING))
    handler.setFormatter(
        _RedactingProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact_event,
                renderer,
            ],
        )
    )
    root.addHandler(handler)


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
