"""Shared fixtures: every test ends with no actor and no qx thread left running."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import pykka
import pytest

_OUR_THREADS = re.compile(r"^(qx-.*|\w+Actor-\d+)$")


@pytest.fixture(autouse=True)
def _stop_all_actors() -> Iterator[None]:
    """Stop every pykka actor after each test and fail if an actor or loop thread survives."""
    yield
    pykka.ActorRegistry.stop_all(block=True, timeout=10)
    lingering = [t for t in threading.enumerate() if _OUR_THREADS.match(t.name)]
    for thread in lingering:
        thread.join(5)
    still = [t.name for t in lingering if t.is_alive()]
    assert still == [], f"threads left running after the test: {still}"
