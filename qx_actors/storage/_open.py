"""Opening a database by URL: the backend it names, connected once."""

from __future__ import annotations

from contextlib import suppress

from qx_actors.logs import get_logger
from qx_actors.redact import register_url_secret

from ._backend import Backend, guard
from ._postgres import PostgresBackend
from ._sqlite import SQLITE_BUSY_TIMEOUT_S, SqliteBackend
from ._url import backend_kind, describe_url, normalize_url

__all__ = ["DATABASE_CREATED", "open_backend"]

#: A writer opened a SQLite path with no file: a new, empty database was created there
#: (``database``), said once, when it is created.
DATABASE_CREATED = "created_new_database"


def open_backend(
    url: str, *, read_only: bool = False, busy_timeout_s: float | None = None
) -> Backend:
    """The backend for ``url`` (``sqlite:///path`` or ``postgresql://...``); connects once.

    ``busy_timeout_s`` (SQLite): how long a statement waits for another connection's lock
    before ``DatabaseBusyError`` (default ``SQLITE_BUSY_TIMEOUT_S``). A writer
    (``read_only=False``) on PostgreSQL never reconnects: once its session is lost every use
    raises ``DatabaseUnavailable``.
    """
    register_url_secret(url)  # any message that quotes it is scrubbed from now on
    backend: Backend
    if backend_kind(url) == "sqlite":
        backend = SqliteBackend(
            url,
            read_only=read_only,
            busy_timeout_s=SQLITE_BUSY_TIMEOUT_S if busy_timeout_s is None else busy_timeout_s,
        )
    else:
        url = normalize_url(url)
        backend = PostgresBackend(url, read_only=read_only)
    try:
        with guard(backend, f"open {describe_url(url)}"):
            backend.db.connect()
    except BaseException:
        # e.g. a pragma failed after the file was opened: don't leave the connection behind
        with suppress(Exception):
            backend.db.close()
        raise
    if isinstance(backend, SqliteBackend) and backend.creates_file:
        get_logger().info(DATABASE_CREATED, database=describe_url(url))
    return backend
