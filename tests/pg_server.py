"""The throwaway PostgreSQL server, now :mod:`qx_actors.testing.postgres`.

Kept because ``.ci/run`` runs ``python3 tests/pg_server.py`` (prints the URL, stops on a line
of stdin) and ``tests/storage/test_storage_faults.py`` imports it as ``tests.pg_server``.
"""

from __future__ import annotations

from qx_actors.testing.postgres import (
    DEFAULT_DB,
    SUPERUSER,
    PgServer,
    PgServerUnavailable,
    create_database,
    drop_database,
    main,
    start_server,
)

__all__ = [
    "DEFAULT_DB",
    "SUPERUSER",
    "PgServer",
    "PgServerUnavailable",
    "create_database",
    "drop_database",
    "main",
    "start_server",
]

if __name__ == "__main__":
    main()
