"""A restarted SQLite writer does not add its predecessor's page cache to the process (issue 23:
a long run's memory stays flat through database faults).

A DB writer restarted after a database fault is a new thread. Its connection's page cache (up
to 16 MiB) lives in that thread's malloc arena; the REST fetcher restarted beside it takes the
arena the old writer left, the new writer gets another, and once anything the old writer
allocated outlives it glibc keeps the freed cache resident: every restart added a page cache.
Two remedies, each tested here: ``SqliteBackend.close`` hands the free pages back (glibc's
``malloc_trim``), and a process that called ``limit_malloc_arenas`` (``qx-actors`` does) shares
arenas, so the next writer reuses the freed cache in place.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import qx_actors.storage._sqlite as sqlite_backend
from qx_actors.storage import open_storage

pytestmark = [
    pytest.mark.skipif(
        sqlite_backend._MALLOC_TRIM is None,
        reason="glibc only: elsewhere the C library manages its own heap",
    ),
    pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status"),
]

#: Writer generations, each a thread of its own that fills its page cache and leaves an
#: allocation behind.
GENERATIONS = 6
#: Rows of a table larger than the 16 MiB page cache (~30 MB of pages).
ROWS = 250_000
#: Without a remedy each generation keeps its ~16 MiB cache: > 60 MB over five of them.
BOUND_MB = 24
ROOT = Path(__file__).resolve().parents[2]


def _resident_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def big_database(path: Path) -> str:
    """A database of the engine's schema plus a table larger than the page cache."""
    url = f"sqlite:///{path}"
    open_storage(url).close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE filler (id INTEGER PRIMARY KEY, payload TEXT)")
        conn.executemany(
            "INSERT INTO filler (payload) VALUES (?)", (("x" * 100,) for _ in range(ROWS))
        )
    conn.close()
    return url


def grown_over_generations(url: str) -> float:
    """MB the process grew by over writer generations 2 .. GENERATIONS (the first one's cache
    and whatever the process keeps anyway not counted)."""
    survivors: list[list[None]] = []
    siblings_done = threading.Event()
    siblings: list[threading.Thread] = []

    def writer_generation() -> None:
        storage = open_storage(url)
        cursor = storage._backend.cursor()
        cursor.execute("SELECT SUM(LENGTH(payload)) FROM filler").fetchone()  # fills the cache
        # something this thread allocated outlives it (as a tick batch handed on does)
        survivors.append([None] * 20_000)
        storage.close()

    def sibling(attached: threading.Event) -> None:
        # allocates, so glibc attaches this thread to an arena: the one the last writer left
        buffers = [bytearray(4096) for _ in range(64)]
        attached.set()
        siblings_done.wait()
        del buffers

    def run_generation() -> None:
        writer = threading.Thread(target=writer_generation)
        writer.start()
        writer.join()
        # the actors restarted with the writer (the REST fetcher's thread) start next and stay
        attached = threading.Event()
        siblings.append(threading.Thread(target=sibling, args=(attached,)))
        siblings[-1].start()
        assert attached.wait(10)

    try:
        run_generation()
        before = _resident_mb()
        for _ in range(GENERATIONS - 1):
            run_generation()
        return _resident_mb() - before
    finally:
        siblings_done.set()
        for thread in siblings:
            thread.join(10)


def test_closing_a_connection_hands_its_page_cache_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without shared arenas (an embedding process): the trim at close keeps it bounded."""
    monkeypatch.setattr(sqlite_backend, "_trim_on_close", True)  # whatever ran before here
    grown = grown_over_generations(big_database(tmp_path / "big.db"))
    assert grown < BOUND_MB, f"{GENERATIONS - 1} writer generations kept {grown:.0f} MB resident"


def test_with_shared_arenas_the_next_writer_reuses_the_cache(tmp_path: Path) -> None:
    """``limit_malloc_arenas`` first thing in a fresh process (as ``qx-actors`` does): no trim
    at close, and still no page cache per generation."""
    url = big_database(tmp_path / "big.db")
    script = (
        "import sys\n"
        "from qx_actors.storage import limit_malloc_arenas\n"
        "import qx_actors.storage._sqlite as backend\n"
        "assert limit_malloc_arenas()\n"
        "assert not backend._trim_on_close\n"
        "from tests.storage.test_sqlite_memory import grown_over_generations\n"
        f"print(grown_over_generations({url!r}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    grown = float(done.stdout.strip().splitlines()[-1])
    assert grown < BOUND_MB, f"{GENERATIONS - 1} writer generations kept {grown:.0f} MB resident"
