"""Structured logging: the event names and ``configure_logging``.

The package only *emits* events (snake_case names with key/value fields) and stays silent
until someone configures logging: it never configures anything on import.

* After :func:`configure_logging` (what the CLI calls) or once the application configured
  structlog itself, events go through structlog's configuration.
* Otherwise they are records of the standard-library logger ``qx_actors`` (which has a
  ``NullHandler``): the application's ``logging`` configuration decides where they go, and
  without one nothing is written. A record's message is ``event key=value ...``; the event's
  fields, as a dict, are its ``qx_event`` attribute.

Whatever ``configure_logging`` writes is scrubbed of secrets (:mod:`qx_actors.redact`): every
string of every event, its formatted exception included, and then the rendered line; the
records of other libraries' standard-library loggers are scrubbed the same way.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any, TextIO, cast

import structlog

from qx_actors.config import LoggingConfig
from qx_actors.redact import redact_text, redact_value

__all__ = [
    "CANDLES_STORED",
    "DEGRADED_MODE_CHANGED",
    "LOGGER_NAME",
    "REPEAT_WINDOW_S",
    "SETTLEMENTS_STORED",
    "STATUS_EVENT_IGNORED",
    "STATUS_TRANSITION",
    "STATUS_TRANSITION_REJECTED",
    "QxLogger",
    "RepeatSummary",
    "configure_logging",
    "get_logger",
    "mute_logging",
    "redact_event",
    "redact_rendered",
]

#: An applied status transition (``run_id, mode, trigger, src, dst, error, timestamp``).
STATUS_TRANSITION = "status_transition"
#: A trigger the graph rejected (``trigger, state, reason``).
STATUS_TRANSITION_REJECTED = "status_transition_rejected"
#: Live data started or stopped flowing by REST polling only (``degraded``, ``state``, ``reason``).
DEGRADED_MODE_CHANGED = "degraded_mode_changed"
#: A status event from the Engine that arrived after shutdown was initiated (ignored).
STATUS_EVENT_IGNORED = "status_event_ignored"
#: A range fetch stored candles (``kind, start, end, received``), at info: what a healthy run
#: does, one line per fetched range (``kind``: latest, upper_bound, revision, gap, lower_bound).
CANDLES_STORED = "candles_stored"
#: A range fetch stored funding settlements (``received``), at info.
SETTLEMENTS_STORED = "settlements_stored"

_open_files: list[IO[str]] = []

#: A failure repeated within this many seconds of its last occurrence is summarised.
REPEAT_WINDOW_S = 600.0
#: Events whose ``error`` field is read back as it was (``qx-actors logs``' timeline).
_VERBATIM_EVENTS = frozenset({"status_transition"})


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class RepeatSummary:
    """structlog processor: quiet retries. An event's ``error`` is written in full the first
    time; the same event with the same error again (the next failed attempt of a restart loop)
    says only its kind and how often: ``ExchangeServerError: … again (5th time in 50 s)``,
    with ``repeat`` = the count. A pause of :data:`REPEAT_WINDOW_S` starts afresh.
    ``status_transition`` keeps its error as it is (the log's timeline reads it)."""

    def __init__(
        self, window_s: float = REPEAT_WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], tuple[float, float, int]] = {}

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> Any:
        error = event_dict.get("error")
        event = str(event_dict.get("event", ""))
        if not isinstance(error, str) or not error or event in _VERBATIM_EVENTS:
            return event_dict
        now = self._clock()
        key = (event, error)
        with self._lock:
            first, last, count = self._seen.get(key, (now, now, 0))
            if count and now - last > self._window_s:
                first, count = now, 0
            count += 1
            self._seen[key] = (first, now, count)
            if len(self._seen) > 1000:  # errors that differ every time: forget the oldest
                oldest = min(self._seen, key=lambda k: self._seen[k][1])
                del self._seen[oldest]
        if count > 1:
            kind = error.split(":", 1)[0] if ":" in error[:60] else error[:60]
            event_dict["error"] = f"{kind}: … again ({_ordinal(count)} time in {now - first:.0f} s)"
            event_dict["repeat"] = count
        return event_dict


#: Set by :func:`mute_logging`: every event of the package is dropped from then on.
_muted = threading.Event()


def mute_logging() -> None:
    """Drop every event from now on, the package's and other libraries' (a forced exit: no
    line is logged after it), and flush what was written."""
    _muted.set()
    logging.disable(logging.CRITICAL)
    for handle in _open_files:
        with contextlib.suppress(Exception):
            handle.flush()


def _nothing(*args: Any, **kwargs: Any) -> None:
    """A muted logger's every method."""


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
        RepeatSummary(),
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


#: The standard-library logger the package's events go to while structlog is not configured.
LOGGER_NAME = "qx_actors"
_stdlib_logger = logging.getLogger(LOGGER_NAME)
# A library's convention: no output of its own unless the application adds a handler (this
# also keeps Python's last-resort handler from printing our warnings on stderr).
if not any(isinstance(h, logging.NullHandler) for h in _stdlib_logger.handlers):
    _stdlib_logger.addHandler(logging.NullHandler())

_logfmt = structlog.processors.LogfmtRenderer(bool_as_flag=False)


def _to_stdlib_record(logger: Any, method_name: str, event_dict: Any) -> Any:
    """structlog processor, last: the keyword arguments of the ``logging`` call — the message
    ``event key=value ...`` (scrubbed) and the fields as the record's ``qx_event``."""
    fields = dict(event_dict)
    event = str(fields.pop("event", ""))
    rest = _logfmt(logger, method_name, dict(fields))
    message = redact_text(f"{event} {rest}" if rest else event)
    return {"msg": message, "extra": {"qx_event": {"event": event, **fields}}}


_STDLIB_PROCESSORS: list[Any] = [
    structlog.stdlib.filter_by_level,  # cheap drop of what the application does not want
    structlog.contextvars.merge_contextvars,
    structlog.processors.format_exc_info,
    redact_event,
    _to_stdlib_record,
]


class QxLogger:
    """A logger of the package, bound to a context (``run_id``, ``actor`` ...).

    Each call goes through structlog's configuration when there is one (:func:`configure_logging`,
    the application's own, ``structlog.testing.capture_logs``), else to the standard-library
    logger ``qx_actors`` (silent unless the application configured ``logging``).
    """

    __slots__ = ("_context",)

    def __init__(self, context: dict[str, Any]) -> None:
        self._context = context

    def bind(self, **values: Any) -> QxLogger:
        """A logger with ``values`` added to the context."""
        return QxLogger({**self._context, **values})

    def new(self, **values: Any) -> QxLogger:
        """A logger with only ``values`` as its context."""
        return QxLogger(dict(values))

    def _target(self) -> Any:
        if structlog.is_configured():
            return structlog.get_logger(LOGGER_NAME).bind(**self._context)
        return structlog.wrap_logger(
            _stdlib_logger,
            processors=_STDLIB_PROCESSORS,
            wrapper_class=structlog.stdlib.BoundLogger,
            context_class=dict,
        ).bind(**self._context)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if _muted.is_set():
            return _nothing
        target = self._target()
        if name == "exception" and not structlog.is_configured():
            # The traceback goes into the (scrubbed) message, not to the application's
            # formatter (``logging.Logger.exception`` would hand it the raw exception).
            return functools.partial(target.error, exc_info=True)
        return getattr(target, name)


def get_logger(**context: Any) -> QxLogger:
    """A logger of the package bound to ``context`` (e.g. ``run_id``, ``actor``)."""
    return QxLogger(dict(context))
