"""The stream's one-pass decoding of a last-price notification gives the tick the general
decoding gives (epoch ms, whole or not, RFC 3339 times)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from qx_actors.lnmarkets import wire
from qx_actors.lnmarkets.stream import LAST_PRICE_TOPIC, StreamClient, _Session


def _frame(time: str) -> str:
    return (
        '{"jsonrpc":"2.0","method":"subscription","params":{"topic":"'
        + LAST_PRICE_TOPIC
        + '","data":{"time":'
        + time
        + ',"lastPrice":90000.5}}}'
    )


@given(
    st.one_of(
        st.integers(min_value=0, max_value=2**42 + 10).map(str),
        st.floats(min_value=0, max_value=4e12).map(repr),
        st.integers(min_value=0, max_value=2**40).map(lambda ms: f"{ms}.0"),
        st.sampled_from(['"2026-01-01T00:00:00.123Z"', '"2026-01-01T01:00:00+01:00"']),
    )
)
def test_the_fast_path_gives_the_general_tick(time: str) -> None:
    session: Any = _Session(StreamClient("ws://127.0.0.1:9/v1"), None, lambda ticks: None)  # type: ignore[arg-type]
    session._handle(_frame(time))
    data = wire.last_price_decoder.decode('{"time":' + time + ',"lastPrice":90000.5}')
    assert session.pending == [wire.to_tick(data)]
