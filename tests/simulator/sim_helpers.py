"""Helpers shared by the simulator tests (imported by name: pytest puts this folder on the path)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from qx_actors.simulator import Simulator

#: A fixed "now" for deterministic tests (30 s into a minute, in settlement phase C).
NOW = datetime(2025, 6, 1, 12, 0, 30, tzinfo=UTC)


@dataclass
class Reply:
    """One HTTP answer."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.body)


def http_get(base: str, path: str, /, **params: Any) -> Reply:
    """GET ``base + path`` with query ``params`` (``_timeout``: client timeout in seconds);
    non-2xx answers are returned, not raised."""
    timeout = float(params.pop("_timeout", 10.0))
    query = urllib.parse.urlencode({k: str(v) for k, v in params.items()})
    url = f"{base}{path}" + (f"?{query}" if query else "")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return Reply(resp.status, dict(resp.headers.items()), resp.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers.items()), exc.read())


SimFactory = Callable[..., Simulator]
