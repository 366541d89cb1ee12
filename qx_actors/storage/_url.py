"""Database URLs: which backend a URL names, the SQLite path in it, and how to show it.

``sqlite:///path.db`` (``sqlite:///:memory:``) and ``postgresql://user:pass@host:port/db``
(``postgres://`` is accepted as its alias). Messages show a URL through :func:`describe_url`,
never with its password.
"""

from __future__ import annotations

import os
from typing import Literal
from urllib.parse import quote, unquote

from qx_actors.errors import StorageError
from qx_actors.redact import redact_url

__all__ = ["backend_kind", "describe_url", "normalize_url", "read_only_uri", "sqlite_path"]


def backend_kind(url: str) -> Literal["sqlite", "postgresql"]:
    """Which backend ``url`` names; a ``StorageError`` naming the URL for anything else."""
    if url.startswith("sqlite:///"):
        return "sqlite"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql"
    raise StorageError(
        f"unsupported database URL {describe_url(url)!r}: "
        "expected sqlite:///path.db or postgresql://user:pass@host:port/db"
    )


def normalize_url(url: str) -> str:
    """``url`` with ``postgres://`` spelled ``postgresql://`` (the drivers' name)."""
    if url.startswith("postgres://"):
        return "postgresql://" + url[len("postgres://") :]
    return url


def read_only_uri(path: str, *, immutable: bool = False) -> str:
    """The ``file:`` URI opening ``path`` read-only (``immutable``: no locking at all)."""
    uri = f"file:{quote(os.path.abspath(path))}?mode=ro"
    return uri + "&immutable=1" if immutable else uri


def sqlite_path(url: str) -> str:
    rest = url[len("sqlite:///") :]
    if not rest:
        raise StorageError(f"no path in database URL {url!r}")
    return rest if rest == ":memory:" else unquote(rest)


def describe_url(url: str) -> str:
    """The URL without its password (for messages): one implementation, :func:`redact_url`."""
    return redact_url(url)
