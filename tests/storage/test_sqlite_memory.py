"""A closed SQLite connection leaves no page cache resident (issue 23: a long run's memory stays
flat through database faults).

A DB writer restarted after a database fault is a new thread. Its connection's page cache (up
to 16 MiB) lives in that thread's malloc arena; once anything the old writer allocated later
outlives it (a batch handed on, a cached statement), the arena's top is pinned and glibc keeps
the freed cache resident, so every restart added a page cache to the process.
``SqliteBackend.close`` hands the free pages back (glibc's ``malloc_trim``).
"""

from __future__ import annotations

import sqlite3
import sys
import threading
from pathlib import Path

import pytest

from qx_actors.storage import open_storage
from qx_actors.storage._sqlite import _MALLOC_TRIM

pytestmark = pytest.mark.skipif(
    _MALLOC_TRIM is None, reason="glibc only: elsewhere the C library manages its own heap"
)

#: Writer generations, each a thread of its own that fills its page cache and leaves an
#: allocation behind.
GENERATIONS = 6
#: Rows of a table larger than the 16 MiB page cache (~30 MB of pages).
ROWS = 250_000


def _resident_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _big_database(path: Path) -> str:
    url = f"sqlite:///{path}"
    open_storage(url).close()  # the schema
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE filler (id INTEGER PRIMARY KEY, payload TEXT)")
        conn.executemany(
            "INSERT INTO filler (payload) VALUES (?)", (("x" * 100,) for _ in range(ROWS))
        )
    conn.close()
    return url


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
def test_restarted_writers_do_not_each_keep_a_page_cache_resident(tmp_path: Path) -> None:
    url = _big_database(tmp_path / "big.db")
    survivors: list[list[None]] = []

    def writer_generation() -> None:
        storage = open_storage(url)
        cursor = storage._backend.cursor()
        cursor.execute("SELECT SUM(LENGTH(payload)) FROM filler").fetchone()  # fills the cache
        # something this thread allocated outlives it (as a tick batch handed on does)
        survivors.append([None] * 20_000)
        storage.close()

    siblings_done = threading.Event()

    def sibling(attached: threading.Event) -> None:
        # allocates, so glibc attaches this thread to an arena: the one the last writer left
        buffers = [bytearray(4096) for _ in range(64)]
        attached.set()
        siblings_done.wait()
        del buffers

    siblings: list[threading.Thread] = []

    def run_generation() -> None:
        thread = threading.Thread(target=writer_generation)
        thread.start()
        thread.join()
        # the actors restarted with the writer (the REST fetcher's thread) start next, and
        # stay: the next writer's thread gets an arena of its own
        attached = threading.Event()
        siblings.append(threading.Thread(target=sibling, args=(attached,)))
        siblings[-1].start()
        assert attached.wait(10)

    try:
        run_generation()  # the first cache, and whatever the process keeps anyway
        before = _resident_mb()
        for _ in range(GENERATIONS - 1):
            run_generation()
        grown = _resident_mb() - before
    finally:
        siblings_done.set()
        for thread in siblings:
            thread.join(10)
    # without the trim each generation keeps its ~16 MiB cache: > 60 MB over 5 of them
    assert grown < 24, f"{GENERATIONS - 1} writer generations kept {grown:.0f} MB resident"
