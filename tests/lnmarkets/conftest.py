"""Fixtures of the lnmarkets tests (servers live in ``lnm_scripted``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
from lnm_scripted import free_port

T = TypeVar("T")


@pytest.fixture
def arun() -> Callable[[Coroutine[Any, Any, T]], T]:
    """Run a coroutine in a fresh event loop, bounded by 15 s."""

    def run(coro: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
        return asyncio.run(asyncio.wait_for(coro, timeout))

    return run


@pytest.fixture
def unused_port() -> int:
    """A 127.0.0.1 port nothing listens on."""
    return free_port()
