"""The one error tree of qx_actors.

Every error the package raises derives from :class:`QxError`. The Engine decides what to do
with an error from its type alone: a :class:`RecoverableError` restarts the mode after
``restart_interval_s``; a :class:`FatalError` (or anything unexpected) stops the run in
``Failed``. Errors of lower layers (aiohttp, websockets, msgspec, peewee, sqlite3, psycopg2)
are mapped into this tree where they enter (``raise ... from exc``).

::

    QxError
    ├── RecoverableError                      -> Running.Recovering, restart
    ├── FatalError                            -> Failed
    ├── ConfigError (Fatal)                   bad YAML / key / value; names the key path
    ├── ExchangeError                         anything the exchange did
    │   ├── ExchangeTransportError (Recov.)   connection refused/reset, DNS, ...
    │   │   ├── ExchangeTimeout               a request that took longer than rest_timeout_s
    │   │   └── ExchangeBodyError             truncated body / not JSON at all
    │   ├── ExchangeHttpError (Recov.)        non-2xx answer (status, message, body excerpt)
    │   │   ├── ExchangeServerError           408, 5xx, and 429 once the trials are spent
    │   │   └── ExchangeClientError           other 4xx (quantoxide retries these too)
    │   ├── ExchangeDecodeError (Recov.)      well-formed JSON of the wrong shape; names the path
    │   │                                     and the value; retried, then recoverable
    │   ├── InvalidMarketData (Recov.)        bad types/ranges, OHLC inconsistent, unrounded or
    │   │                                     unordered candles, off-grid or unordered
    │   │                                     settlements; names the time, field and value;
    │   │                                     retried, then recoverable
    │   └── StreamError (Recov.)              WebSocket feed problems
    │       ├── StreamProtocolError           unexpected JSON-RPC answer / subscription
    │       ├── StreamHeartbeatTimeout        no pong within disconnect_timeout_s
    │       └── StaleFeedError                no tick for live_price_tick_max_interval_s
    ├── HistoryError (Fatal)                  history that can't be completed
    │   ├── UnreachableGapError               no longer raised (kept for callers)
    │   ├── ReachBeforeHistoryError           reach before the exchange's first data
    │   ├── LookbackBeyondReachError          live lookback older than the reach
    │   ├── UnreachableMissingSettlement      a missing settlement older than the reach
    │   └── SettlementsBeforeHistoryStart     settlements asked for before the exchange has any
    ├── ChildDied (Recov.)                    a child actor died unexpectedly; names it
    ├── StorageError                          the database
    │   ├── DatabaseUnavailable (Recov.)      server down/restarted, connection lost, auth
    │   │   │                                 failed, disk full, read-only file
    │   │   └── DatabaseBusyError             SQLite locked past the busy timeout
    │   ├── DatabaseInUseError (Fatal)        another engine writes this database
    │   └── SchemaError (Fatal)               unknown or newer schema version
    ├── ShutdownTimeout (Fatal)               kept as the error of Failed after a slow shutdown
    └── SyncError                             misuse of the public handles
        ├── SyncAlreadyStarted                engine.start() called twice
        ├── SyncNotStarted                    shutdown before start
        ├── SyncAlreadyShutdown               second shutdown
        ├── SyncAlreadyTerminated             shutdown after Failed (carries the final status)
        └── SyncShutdownFailed                shutdown did not complete in time
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ChildDied",
    "ConfigError",
    "DatabaseBusyError",
    "DatabaseInUseError",
    "DatabaseUnavailable",
    "ExchangeBodyError",
    "ExchangeClientError",
    "ExchangeDecodeError",
    "ExchangeError",
    "ExchangeHttpError",
    "ExchangeServerError",
    "ExchangeTimeout",
    "ExchangeTransportError",
    "FatalError",
    "HistoryError",
    "InvalidMarketData",
    "LookbackBeyondReachError",
    "QxError",
    "ReachBeforeHistoryError",
    "RecoverableError",
    "SchemaError",
    "SettlementsBeforeHistoryStart",
    "ShutdownTimeout",
    "StaleFeedError",
    "StorageError",
    "StreamError",
    "StreamHeartbeatTimeout",
    "StreamProtocolError",
    "SyncAlreadyShutdown",
    "SyncAlreadyStarted",
    "SyncAlreadyTerminated",
    "SyncError",
    "SyncNotStarted",
    "SyncShutdownFailed",
    "UnreachableGapError",
    "UnreachableMissingSettlement",
    "is_recoverable",
]


class QxError(Exception):
    """Base of every error raised by qx_actors."""


class RecoverableError(QxError):
    """An error after which the mode restarts (network, timeouts, 5xx, undecodable or invalid
    market data after its trials, stale feed, DB busy)."""


class FatalError(QxError):
    """An error that stops the run in ``Failed`` (bad config, unreachable gap, reach before the
    exchange's history, unknown schema, another writer)."""


class ConfigError(FatalError):
    """Invalid configuration; the message names the key path and what was expected."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.detail = message
        super().__init__(f"{path}: {message}" if path else message)


# --- exchange -------------------------------------------------------------------------------


class ExchangeError(QxError):
    """Something the exchange (or the way to it) did wrong."""


class ExchangeTransportError(ExchangeError, RecoverableError):
    """The request did not get an answer: connection refused or reset, DNS failure."""


class ExchangeTimeout(ExchangeTransportError):
    """A request took longer than the configured timeout."""


class ExchangeBodyError(ExchangeTransportError):
    """The answer's body could not be read whole or is not JSON at all (truncated, garbled).

    A transport failure like a reset connection: retried, then recoverable. Well-formed JSON
    of the wrong shape is :class:`ExchangeDecodeError` instead (retried, then recoverable too).
    """


class ExchangeHttpError(ExchangeError, RecoverableError):
    """A non-2xx answer; carries the status, the exchange's message and the raw body.

    Retried ``rest_error_max_trials`` times with the cooldown, then recoverable (as quantoxide
    treats every REST error).
    """

    def __init__(
        self, status: int, message: str, body: str = "", *, endpoint: str = "", **extra: Any
    ) -> None:
        self.status = status
        self.message = message
        self.body = body
        self.endpoint = endpoint
        self.extra = extra
        where = f" {endpoint}" if endpoint else ""
        super().__init__(f"HTTP {status}{where}: {message}")


class ExchangeServerError(ExchangeHttpError):
    """408, 5xx, or 429 after the last trial: the exchange may answer later."""


class ExchangeClientError(ExchangeHttpError):
    """A 4xx other than 408/429 (e.g. a stray 400): retried, then recoverable."""


class ExchangeDecodeError(ExchangeError, RecoverableError):
    """The answer is not the documented JSON; ``path`` names the offending field (msgspec's
    ``$.data[3].open``), ``value`` quotes what was there when it is known.

    As quantoxide treats its SDK's deserialisation errors: retried ``rest_error_max_trials``
    times with the cooldown, then recoverable (the mode restarts); nothing of the page is
    written.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str = "",
        endpoint: str = "",
        value: str | None = None,
        item_time: str | None = None,
    ) -> None:
        """``value``: the offending value as JSON text; ``item_time``: the ``time`` of the
        item (candle, settlement) it belongs to, as sent."""
        self.path = path
        self.endpoint = endpoint
        self.detail = message
        self.value = value
        self.item_time = item_time
        where = f" from {endpoint}" if endpoint else ""
        at = f" at {path}" if path else ""
        known = [f"value {value}"] if value is not None else []
        if item_time is not None:
            known.append(f"item time {item_time}")
        got = f" ({', '.join(known)})" if known else ""
        super().__init__(f"invalid JSON{where}{at}: {message}{got}")


class InvalidMarketData(ExchangeError, RecoverableError):
    """Well-formed data that breaks the exchange's rules: a price that is not finite and > 0,
    an inconsistent OHLC (``low <= open/close <= high``), an unrounded or unordered candle time,
    an off-grid or unordered funding settlement. The message names the item's time, the field
    and its value (``/v3/futures/candles: candle 2026-01-01T00:05:00Z: low 90010.0 is above
    open 90000.5``).

    As quantoxide treats its SDK's deserialisation errors: retried ``rest_error_max_trials``
    times with the cooldown, then recoverable (the mode restarts); nothing of the page is
    written.
    """

    def __init__(self, message: str, *, endpoint: str = "") -> None:
        self.detail = message
        self.endpoint = endpoint
        super().__init__(f"{endpoint}: {message}" if endpoint else message)


class StreamError(ExchangeError, RecoverableError):
    """The WebSocket feed failed; the feed reconnects."""


class StreamProtocolError(StreamError):
    """An unexpected JSON-RPC answer (e.g. a subscription that was not confirmed as asked)."""


class StreamHeartbeatTimeout(StreamError):
    """No answer to a ping within the disconnect timeout: the connection is dead."""


class StaleFeedError(StreamError):
    """No tick arrived for ``live_price_tick_max_interval_s``."""


# --- history --------------------------------------------------------------------------------


class HistoryError(FatalError):
    """The requested history can't be completed."""


class UnreachableGapError(HistoryError):
    """Once: a gap older than the configured reach. No longer raised: a hole older than the
    reach is not the engine's business (``PriceHistoryState.holes_before_reach`` lists it).
    Kept so that code catching it still imports."""


class ReachBeforeHistoryError(HistoryError):
    """The exchange has no data for a range that should exist: the reach is too old."""


class LookbackBeyondReachError(HistoryError):
    """A live lookback that starts before the configured reach."""


class UnreachableMissingSettlement(HistoryError):
    """A funding settlement is missing before the configured reach: it can't be repaired
    (quantoxide's ``UnreachableMissingSettlement``); names the time and the reach."""


class SettlementsBeforeHistoryStart(HistoryError):
    """The exchange has no funding settlements before its history start, yet they were asked
    for (quantoxide's ``ApiSettlementsNotAvailableBeforeHistoryStart``)."""


# --- supervision ----------------------------------------------------------------------------


class ChildDied(RecoverableError):
    """A child actor of the Engine died unexpectedly (uncaught exception, stopped)."""

    def __init__(self, child: str, cause: str) -> None:
        self.child = child
        self.cause = cause
        super().__init__(f"{child} died: {cause}")


# --- storage --------------------------------------------------------------------------------


class StorageError(QxError):
    """The database failed."""


class DatabaseUnavailable(StorageError, RecoverableError):
    """The database can't be used right now: server down or restarted, connection lost,
    authentication failed, disk full, read-only file. The message keeps the driver's cause."""


class DatabaseBusyError(DatabaseUnavailable):
    """The database is locked by another connection past the busy timeout."""


class DatabaseInUseError(StorageError, FatalError):
    """Another engine holds the single-writer lock of this database."""


class SchemaError(StorageError, FatalError):
    """The database's schema version is unknown or newer than this package."""


# --- lifecycle ------------------------------------------------------------------------------


class ShutdownTimeout(FatalError):
    """The actors did not stop within ``shutdown_timeout_s`` and were stopped forcibly."""


class SyncError(QxError):
    """Misuse of the public handles (start twice, shutdown twice, ...)."""


class SyncAlreadyStarted(SyncError):
    """``SyncEngine.start()`` was called a second time."""


class SyncNotStarted(SyncError):
    """A shutdown was requested before the engine was started."""


class SyncAlreadyShutdown(SyncError):
    """A shutdown was already requested or completed."""


class SyncAlreadyTerminated(SyncError):
    """The run already stopped (``Failed``); carries the final status."""

    def __init__(self, status: Any) -> None:
        self.status = status
        super().__init__(f"sync already terminated with status {status}")


class SyncShutdownFailed(SyncError):
    """The shutdown did not complete cleanly; the run ended in ``Failed``."""

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause
        super().__init__(f"shutdown failed: {cause}")


def is_recoverable(error: BaseException) -> bool:
    """Whether the Engine should restart the mode after ``error`` (decided by type alone)."""
    return isinstance(error, RecoverableError) and not isinstance(error, FatalError)
