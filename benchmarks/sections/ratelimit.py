"""Section 2, ``ratelimit``: the wall time of a backfill paced at 20 requests/s against the
``requests / rate`` bound, requests counted by the simulator.

200 requests (40 with ``--quick``) at ``rest_rate_limit_per_s`` 20 against
the simulator limiting at 20/s: wall time from ``start()`` to ``Running.Backfilled`` against
the ``requests / rate`` bound, requests counted by the simulator (candle pages + the one
funding page). Target ratio <= 1.05; 429 answers are reported (target 0).
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import Report, Row, engine_config, iso_reach, log, wait_status
from _processes import SimProcess

from qx_actors import SyncEngine


def reach_for_requests(requests: int, now: datetime) -> str:
    """An ISO-date reach so that ``[reach, now]`` is about ``requests`` pages of 1000 candles."""
    minutes_today = now.hour * 60 + now.minute + 1
    days = max(1, round((requests * 1000 - minutes_today) / 1440))
    return iso_reach(days, now)


def run(report: Report, opts: argparse.Namespace, workdir: Path) -> None:
    """Wall time of a backfill paced at 20 req/s against ``requests / rate``."""
    rate = 20.0
    planned = 40 if opts.quick else 200
    reach = reach_for_requests(planned - 1, datetime.now(UTC))  # + 1 funding request
    url = f"sqlite:///{workdir / 'ratelimit.db'}"
    log(f"[2] rate-limited backfill: ~{planned} requests at {rate:g}/s, reach {reach}")
    with SimProcess(workdir, rate_limit=rate, name="sim-ratelimit") as sim:
        config = engine_config(
            database=url, rest_url=sim.rest_url, stream_url=sim.stream_url, mode="backfill",
            rate=rate, reach=reach, stream=False, log_file=str(workdir / "ratelimit.engine.log"),
        )  # fmt: skip
        engine = SyncEngine(config)
        receiver = engine.update_receiver()
        started = time.perf_counter()
        controller = engine.start()
        status, seen = wait_status(receiver, {"Running.Backfilled"}, planned / rate * 3 + 30)
        elapsed = time.perf_counter() - started
        stats = sim.stats()
        if not status.is_stopped:
            controller.shutdown()
    if status.error is not None:
        raise RuntimeError(f"rate-limited backfill ended {status.name}: {status.error!r}")
    requests = int(stats["requests"])
    limited = sum(v for k, v in stats["by_status"].items() if k.endswith(":429"))
    bound = requests / rate
    ratio = elapsed / bound
    report.figures["ratelimit"] = {
        "reach": reach, "rate": rate, "requests": requests, "by_status": stats["by_status"],
        "elapsed_s": elapsed, "bound_s": bound, "statuses": seen,
    }  # fmt: skip
    s = "2 rate-limited backfill"
    report.add(Row(s, "requests (simulator count)", requests, note=f"at {rate:g} req/s"))
    report.add(Row(s, "429 answers", limited, target="0", ok=limited == 0))
    report.add(
        Row(
            s, "wall time", elapsed, "s", f"<= 1.05 x {bound:.2f} s", ratio, ratio <= 1.05,
            note="bound = requests / rate",
        )
    )  # fmt: skip
