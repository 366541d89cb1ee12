"""How driver (sqlite3, psycopg2, peewee) errors map into the error tree.

``DatabaseBusyError``: another connection holds the lock past the busy timeout;
``DatabaseUnavailable``: the database can't serve us now (down, full, read-only, connection
lost): both recoverable. Anything else (constraints, bad SQL, schema) is a ``StorageError``.
Messages never carry the URL's password.
"""

from __future__ import annotations

import sqlite3

import peewee as pw
import psycopg2

from qx_actors.errors import DatabaseBusyError, DatabaseUnavailable, StorageError
from qx_actors.redact import redact_text, register_url_secret

__all__ = ["DRIVER_ERRORS", "driver_cause", "map_error"]


DRIVER_ERRORS: tuple[type[Exception], ...] = (pw.PeeweeException, sqlite3.Error, psycopg2.Error)

#: SQLite primary result codes (``sqlite_errorcode & 0xFF``)
_SQLITE_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED
#: SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN
_SQLITE_UNAVAILABLE_CODES = frozenset({8, 10, 13, 14})
_SQLITE_UNAVAILABLE_TEXTS = (
    "database or disk is full",
    "attempt to write a readonly database",
    "disk i/o error",
    "unable to open database file",
)
#: SQLSTATE classes of a server that can't serve us now: connection exception, insufficient
#: resources (disk full, out of memory, too many connections), operator intervention
#: (terminated by an administrator, shutting down, starting up)
_PG_UNAVAILABLE_CLASSES = ("08", "53", "57")


def driver_cause(exc: BaseException) -> BaseException | None:
    """The deepest sqlite3/psycopg2 error behind ``exc``, or None.

    peewee re-raises a driver error as its own (the driver's error in ``args[0]``, and as
    ``__context__`` since it raises inside the driver's ``except``); inside a transaction a
    failed commit is followed by a failed rollback, so the real cause can sit several levels
    down. Walks ``args[0]``, ``__cause__`` and ``__context__``, each error once.
    """
    best: BaseException | None = None
    best_depth = -1
    seen: set[int] = set()
    stack: list[tuple[BaseException, int]] = [(exc, 0)]
    while stack:
        node, depth = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, sqlite3.Error | psycopg2.Error) and depth > best_depth:
            best, best_depth = node, depth
        links: list[BaseException] = []
        if node.args and isinstance(node.args[0], BaseException):
            links.append(node.args[0])
        if node.__cause__ is not None:
            links.append(node.__cause__)
        if node.__context__ is not None:
            links.append(node.__context__)
        stack.extend((link, depth + 1) for link in reversed(links))
    return best


def _error_type(cause: BaseException | None) -> type[StorageError]:
    if isinstance(cause, sqlite3.Error):
        code = getattr(cause, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        text = str(cause).lower()
        if primary in _SQLITE_BUSY_CODES or "locked" in text or "busy" in text:
            return DatabaseBusyError
        if primary in _SQLITE_UNAVAILABLE_CODES or any(
            known in text for known in _SQLITE_UNAVAILABLE_TEXTS
        ):
            return DatabaseUnavailable
        return StorageError
    if isinstance(cause, psycopg2.Error):
        # OperationalError covers refused/lost connections, failed authentication, a server
        # starting up or shutting down, DiskFull; InterfaceError a connection already closed
        if isinstance(cause, psycopg2.OperationalError | psycopg2.InterfaceError):
            return DatabaseUnavailable
        if (cause.pgcode or "")[:2] in _PG_UNAVAILABLE_CLASSES:
            return DatabaseUnavailable
    # constraint violations, bad SQL or data, schema trouble: retrying can't help
    return StorageError


def _redact(text: str, url: str | None) -> str:
    if url is not None:
        register_url_secret(url)  # every form of the password (encoded, decoded, escaped)
    return redact_text(text)


def map_error(exc: BaseException, what: str, url: str | None = None) -> StorageError:
    """The error-tree equivalent of a driver (or peewee) error raised while doing ``what``.

    The message is ``"<what>: <driver's message>"`` on one line; ``url`` (the database's)
    lets a password the driver may have echoed be replaced by ``***``.
    """
    cause = driver_cause(exc)
    detail = " ".join(str(cause if cause is not None else exc).split())
    message = _redact(f"{what}: {detail}" if detail else what, url)
    return _error_type(cause)(message)
