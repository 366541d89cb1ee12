"""Chaos: the exchange answers with cut bodies, garbled JSON and stray HTTP 400s.

Each fault hits more candle requests in a row than ``rest_error_max_trials``: the trials are
spent, the run goes ``Running.Recovering`` naming the fault, restarts, and ends
``Running.Backfilled`` with an exact database (never ``Failed``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from qx_actors.config import config_from_mapping
from qx_actors.simulator import Simulator
from qx_actors.status import State
from tests.chaos.chaos_helpers import (
    CHAOS_SYNC,
    EngineFactory,
    SimFactory,
    assert_history_exact,
    is_recovering,
    sim_config,
    utc_now,
)

#: One more faulty answer than the trials of a request: one recoverable error, then success.
FAULTS = int(CHAOS_SYNC["rest_error_max_trials"]) + 1


def _truncate(sim: Simulator) -> None:
    truncate_next = getattr(sim.faults, "truncate_next", None)
    if truncate_next is None:
        pytest.fail("the simulator has no Faults.truncate_next(n, endpoint) switch (issue 9 #8)")
    truncate_next(n=FAULTS, endpoint="candles")


def _malformed(sim: Simulator) -> None:
    sim.faults.malformed_next(FAULTS, endpoint="candles")


def _http_400(sim: Simulator) -> None:
    sim.faults.fail_next(FAULTS, status=400, endpoint="candles")


@pytest.mark.parametrize(
    ("inject", "kind", "text"),
    [
        pytest.param(_truncate, "ExchangeBodyError", "", id="truncated-body"),
        pytest.param(_malformed, "ExchangeBodyError", "", id="malformed-json"),
        pytest.param(_http_400, "ExchangeClientError", "HTTP 400", id="http-400"),
    ],
)
def test_bad_rest_answers_are_retried_then_recovered(
    sim: SimFactory,
    engines: EngineFactory,
    tmp_path: Path,
    inject: Callable[[Simulator], None],
    kind: str,
    text: str,
) -> None:
    """Faulty candle answers beyond the trials: Recovering (naming the fault), Backfilled."""
    simulator = sim(tick_rate_per_s=0)
    inject(simulator)
    url = f"sqlite:///{tmp_path / 'qx.db'}"
    reach = "2d"
    started_at = utc_now()
    watch = engines(config_from_mapping(sim_config(url, simulator, price_history_reach=reach)))
    recovering = watch.wait_for(is_recovering(kind, text), 30, what=f"Recovering ({kind})")
    print(recovering)
    backfilled = watch.wait_for_state(State.BACKFILLED, 30)
    assert State.BACKFILLED is backfilled.state, watch.names()
    watch.shutdown()
    assert_history_exact(
        url, simulator, reach=reach, started_at=started_at, backfilled_at=backfilled.since
    )
