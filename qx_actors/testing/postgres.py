"""A throwaway PostgreSQL server for tests and benchmarks, and scratch databases on it.

The server runs as a non-root user (``postgres``, through ``runuser`` when we are root) from a
fresh temporary directory, listens on a free port of 127.0.0.1 with its unix socket in the same
directory, trusts local connections, and runs with ``fsync=off`` (its data is thrown away).
It needs the PostgreSQL server binaries (``initdb``, ``pg_ctl``); without them, or as root
without a ``postgres`` user, :func:`start_server` raises :class:`PgServerUnavailable`::

    with throwaway_server() as server:          # or: server = start_server(); server.stop()
        server.url                              # postgresql://qx@127.0.0.1:PORT/qx
        with scratch_database(server.url) as url:
            ...                                 # an empty database, dropped afterwards
        server.halt("immediate"); server.start()   # a crash and a restart, for fault tests

``python -m qx_actors.testing.postgres`` starts one, prints its URL and stops it on Enter.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psycopg2

__all__ = [
    "DEFAULT_DB",
    "RUN_AS",
    "SUPERUSER",
    "PgServer",
    "PgServerUnavailable",
    "create_database",
    "database_url",
    "drop_database",
    "execute",
    "find_bin_dir",
    "main",
    "scratch_database",
    "start_server",
    "throwaway_server",
]

SUPERUSER = "qx"
DEFAULT_DB = "qx"
RUN_AS = "postgres"


class PgServerUnavailable(RuntimeError):
    """PostgreSQL binaries or a non-root user to run them as are missing."""


def find_bin_dir() -> str:
    """Where ``initdb``/``pg_ctl`` live: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("initdb")
    if on_path:
        bin_dir = os.path.dirname(os.path.realpath(on_path))
        if os.path.exists(os.path.join(bin_dir, "pg_ctl")):
            return bin_dir

    def version(path: str) -> float:
        try:
            return float(path.split("/")[-2])
        except ValueError:
            return 0.0

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True)
    for initdb in candidates:
        bin_dir = os.path.dirname(initdb)
        if os.path.exists(os.path.join(bin_dir, "pg_ctl")):
            return bin_dir
    raise PgServerUnavailable("PostgreSQL binaries (initdb, pg_ctl) not found")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PgServer:
    """A running throwaway server; ``url`` points at its default database."""

    bin_dir: str
    base_dir: str
    port: int
    prefix: tuple[str, ...]

    @property
    def data_dir(self) -> str:
        """The cluster's data directory."""
        return os.path.join(self.base_dir, "data")

    @property
    def socket_dir(self) -> str:
        """Where the server puts its unix socket."""
        return os.path.join(self.base_dir, "sock")

    @property
    def log_file(self) -> str:
        """The server's log."""
        return os.path.join(self.base_dir, "server.log")

    @property
    def is_running(self) -> bool:
        """Whether the server's postmaster is up (its pid file exists)."""
        return os.path.exists(os.path.join(self.data_dir, "postmaster.pid"))

    @property
    def url(self) -> str:
        """URL of the default database (superuser, trust auth)."""
        return self.url_for(DEFAULT_DB)

    def url_for(self, dbname: str) -> str:
        """URL of database ``dbname`` on this server."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str) -> None:
        cmd = [*self.prefix, *args]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = ""
            if os.path.exists(self.log_file):
                with open(self.log_file, encoding="utf-8", errors="replace") as fh:
                    log = fh.read()[-2000:]
            raise PgServerUnavailable(
                f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()} {log}"
            )

    def pg_ctl(self, *args: str) -> None:
        """Run ``pg_ctl -D <data dir> ARGS`` as the server's user."""
        self._run(os.path.join(self.bin_dir, "pg_ctl"), "-D", self.data_dir, *args)

    def start(self) -> None:
        """Start the (stopped) server with its options; ``-l``: the postmaster's output goes
        to the log file, not to the caller's pipes."""
        self.pg_ctl("-l", self.log_file, "-o", _options(self), "-w", "-t", "60", "start")

    def halt(self, mode: str = "fast") -> None:
        """Stop the server, keeping its data (``fast``: sessions are disconnected;
        ``immediate``: like a crash)."""
        self.pg_ctl("-m", mode, "-w", "stop")

    def restart(self) -> None:
        """Restart the server (fast: every session is disconnected)."""
        self.pg_ctl("-l", self.log_file, "-m", "fast", "-w", "-t", "60", "restart")

    def stop(self) -> None:
        """Stop the server (fast mode) and delete its directory."""
        try:
            if self.is_running:
                self.halt()
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)


def _options(server: PgServer) -> str:
    """The server's command-line options: loopback only, durability off (throwaway data)."""
    return (
        f"-p {server.port} -k {server.socket_dir} -c listen_addresses=127.0.0.1"
        " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        " -c max_connections=200 -c shared_buffers=256MB"
    )


def database_url(server_url: str, name: str) -> str:
    """``server_url`` pointing at database ``name`` instead."""
    return urlsplit(server_url)._replace(path=f"/{name}").geturl()


def execute(url: str, statement: str) -> tuple[Any, ...] | None:
    """Run one statement on a fresh connection, outside a transaction (``CREATE DATABASE``
    can't run inside one); its first row, if it returns rows."""
    conn = psycopg2.connect(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
            row = cur.fetchone() if cur.description is not None else None
            return None if row is None else tuple(row)
    finally:
        conn.close()


def create_database(admin_url: str, name: str) -> None:
    """``CREATE DATABASE name`` through ``admin_url`` (a role with CREATEDB)."""
    execute(admin_url, f'CREATE DATABASE "{name}"')


def drop_database(admin_url: str, name: str) -> None:
    """``DROP DATABASE name WITH (FORCE)`` through ``admin_url`` (no error if it is gone)."""
    execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def scratch_database(admin_url: str, prefix: str = "qx_test") -> Iterator[str]:
    """The URL of a fresh, empty database named ``<prefix>_<random>``; dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    create_database(admin_url, name)
    try:
        yield database_url(admin_url, name)
    finally:
        drop_database(admin_url, name)


def start_server() -> PgServer:
    """Initialise and start a fresh server; raises ``PgServerUnavailable`` when impossible."""
    bin_dir = find_bin_dir()
    prefix: tuple[str, ...] = ()
    uid = gid = -1
    if os.geteuid() == 0:
        try:
            entry = pwd.getpwnam(RUN_AS)
        except KeyError as exc:
            raise PgServerUnavailable(f"running as root and no {RUN_AS!r} user exists") from exc
        runuser = shutil.which("runuser")
        if runuser is None:
            raise PgServerUnavailable("running as root and runuser is missing")
        prefix = (runuser, "-u", RUN_AS, "--")
        uid, gid = entry.pw_uid, entry.pw_gid
    base_dir = tempfile.mkdtemp(prefix="qx-pg-")
    server = PgServer(bin_dir=bin_dir, base_dir=base_dir, port=_free_port(), prefix=prefix)
    os.mkdir(server.socket_dir)
    if uid >= 0:
        for path in (base_dir, server.socket_dir):
            os.chown(path, uid, gid)
    try:
        server._run(
            os.path.join(bin_dir, "initdb"), "-D", server.data_dir, "-U", SUPERUSER,
            "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        server.start()
        create_database(server.url_for("postgres"), DEFAULT_DB)
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def throwaway_server() -> Iterator[PgServer]:
    """A started :func:`start_server`, stopped and deleted afterwards."""
    server = start_server()
    try:
        yield server
    finally:
        server.stop()


def main() -> None:
    """Start a server, print its URL, and stop it on Enter (for ad-hoc measurements)."""
    server = start_server()
    try:
        print(server.url, flush=True)
        input()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
