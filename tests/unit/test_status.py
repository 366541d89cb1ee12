"""The status machine: the whole graph, rejections, and the diagram."""

from __future__ import annotations

from pathlib import Path

import pytest
from transitions import MachineError

from qx_actors import status as status_module
from qx_actors.errors import SyncAlreadyShutdown, SyncAlreadyTerminated, SyncNotStarted
from qx_actors.status import (
    TRANSITIONS,
    State,
    StatusMachine,
    SyncStatus,
    TransitionRejected,
    Trigger,
    is_edge,
    mermaid_diagram,
    shutdown_refusal,
)

# Shortest trigger paths from NotInitiated to every state, to put a fresh machine there.
PATHS: dict[State, list[Trigger]] = {
    State.NOT_INITIATED: [],
    State.STARTING: [Trigger.START],
    State.IN_PROGRESS: [Trigger.START, Trigger.PROGRESS],
    State.SYNCED: [Trigger.START, Trigger.PROGRESS, Trigger.SYNCED],
    State.BACKFILLED: [Trigger.START, Trigger.PROGRESS, Trigger.BACKFILLED],
    State.RECOVERING: [Trigger.START, Trigger.RECOVERABLE_ERROR],
    State.RESTARTING: [Trigger.START, Trigger.RECOVERABLE_ERROR, Trigger.RESTART],
    State.SHUTDOWN_INITIATED: [Trigger.START, Trigger.SHUTDOWN],
    State.SHUTDOWN: [Trigger.START, Trigger.SHUTDOWN, Trigger.SHUTDOWN_COMPLETE],
    State.FAILED: [Trigger.START, Trigger.FATAL_ERROR],
}

EXPECTED_EDGES: dict[tuple[Trigger, State], State] = {}
_running = [s for s in State if s.value.startswith("Running.")]
EXPECTED_EDGES[(Trigger.START, State.NOT_INITIATED)] = State.STARTING
for _src in (State.STARTING, State.RESTARTING, State.SYNCED, State.BACKFILLED):
    EXPECTED_EDGES[(Trigger.PROGRESS, _src)] = State.IN_PROGRESS
EXPECTED_EDGES[(Trigger.SYNCED, State.IN_PROGRESS)] = State.SYNCED
EXPECTED_EDGES[(Trigger.BACKFILLED, State.IN_PROGRESS)] = State.BACKFILLED
for _src in _running:
    EXPECTED_EDGES[(Trigger.RECOVERABLE_ERROR, _src)] = State.RECOVERING
    EXPECTED_EDGES[(Trigger.FATAL_ERROR, _src)] = State.FAILED
    EXPECTED_EDGES[(Trigger.SHUTDOWN, _src)] = State.SHUTDOWN_INITIATED
EXPECTED_EDGES[(Trigger.RESTART, State.RECOVERING)] = State.RESTARTING
EXPECTED_EDGES[(Trigger.FATAL_ERROR, State.SHUTDOWN_INITIATED)] = State.FAILED
EXPECTED_EDGES[(Trigger.SHUTDOWN_COMPLETE, State.SHUTDOWN_INITIATED)] = State.SHUTDOWN


def machine_in(state: State) -> StatusMachine:
    """A fresh machine driven to ``state``."""
    machine = StatusMachine()
    for trigger in PATHS[state]:
        machine.fire(trigger)
    assert state == machine.state
    return machine


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
@pytest.mark.parametrize("trigger", list(Trigger), ids=lambda t: t.value)
def test_every_trigger_from_every_state(trigger: Trigger, state: State) -> None:
    """Every (trigger, state) pair is applied as the status graph says, a no-op, or rejected."""
    machine = machine_in(state)
    expected = EXPECTED_EDGES.get((trigger, state))
    destination = {t: d for t, _, d in TRANSITIONS}[trigger]
    if destination is state and state.is_running:
        # Repeating the Running state you are in is a no-op (no event, no log).
        assert machine.fire(trigger) is None
        assert state == machine.state
    elif expected is not None:
        applied = machine.fire(trigger)
        assert applied is not None
        assert (trigger, state, expected) == (applied.trigger, applied.src, applied.dst)
        assert expected == machine.state
    else:
        with pytest.raises(TransitionRejected) as info:
            machine.fire(trigger)
        assert state == info.value.state
        assert state == machine.state


@pytest.mark.parametrize(
    ("state", "trigger"),
    [
        (State.SYNCED, Trigger.START),
        (State.NOT_INITIATED, Trigger.SHUTDOWN),
        (State.SHUTDOWN, Trigger.SHUTDOWN),
    ],
    ids=lambda v: str(v),
)
def test_an_illegal_trigger_is_rejected_once_by_the_machine(
    state: State, trigger: Trigger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One owner of the graph: the ``transitions`` machine. An illegal trigger reaches it once
    and its MachineError is the rejection (the cause); the table's is_edge is never asked,
    for a rejected step nor for an applied one."""
    asked: list[tuple[object, ...]] = []

    def is_edge_spy(*args: object) -> bool:
        asked.append(args)
        return True

    monkeypatch.setattr(status_module, "is_edge", is_edge_spy)
    machine = machine_in(state)
    fired: list[str] = []
    real_trigger = machine._model.trigger

    def spy(name: str) -> bool:
        fired.append(name)
        return bool(real_trigger(name))

    monkeypatch.setattr(machine._model, "trigger", spy)
    with pytest.raises(TransitionRejected) as info:
        machine.fire(trigger)
    assert [trigger.value] == fired
    assert isinstance(info.value.__cause__, MachineError)
    assert f"no '{trigger}' transition from {state}" == info.value.reason
    assert (trigger, state, state) == (info.value.trigger, info.value.state, machine.state)
    if state is State.SYNCED:
        assert machine.fire(Trigger.PROGRESS) is not None  # a legal step: the machine alone
    assert [] == asked


def test_transitions_table_matches_the_graph() -> None:
    """The module's table lists exactly the edges of the status graph."""
    table = {(t, s): d for t, sources, d in TRANSITIONS for s in sources}
    assert EXPECTED_EDGES == table


def test_is_edge_answers_for_exactly_the_edges_of_the_graph() -> None:
    """is_edge holds for each edge of the graph and for no other (trigger, src, dst)."""
    answered = {
        (trigger, src): dst
        for trigger in Trigger
        for src in State
        for dst in State
        if is_edge(trigger, src, dst)
    }
    assert EXPECTED_EDGES == answered


def test_dotted_state_names_do_not_change_the_library_default() -> None:
    """The machine uses dotted names without touching transitions' global separator."""
    from transitions.extensions.nesting import NestedState

    machine = machine_in(State.IN_PROGRESS)
    assert "Running.InProgress" == machine.state.value
    assert "_" == NestedState.separator


@pytest.mark.parametrize(
    ("state", "error"),
    [
        (State.NOT_INITIATED, SyncNotStarted),
        (State.SHUTDOWN_INITIATED, SyncAlreadyShutdown),
        (State.SHUTDOWN, SyncAlreadyShutdown),
        (State.FAILED, SyncAlreadyTerminated),
    ],
)
def test_shutdown_refusals(state: State, error: type[Exception]) -> None:
    """A shutdown is refused before start, a second time, and after a fatal stop."""
    refusal = shutdown_refusal(SyncStatus(state))
    assert isinstance(refusal, error)


def test_shutdown_allowed_from_every_running_state() -> None:
    """Every Running.* state accepts a shutdown."""
    assert [None] * len(_running) == [shutdown_refusal(SyncStatus(s)) for s in _running]


def test_already_terminated_carries_the_final_status() -> None:
    """SyncAlreadyTerminated keeps the Failed status with its error."""
    status = SyncStatus(State.FAILED, error=ValueError("bad candle"))
    refusal = shutdown_refusal(status)
    assert isinstance(refusal, SyncAlreadyTerminated)
    assert status == refusal.status


def test_mermaid_diagram_has_every_edge() -> None:
    """The generated Mermaid text has each state and each edge of the graph."""
    text = mermaid_diagram()
    assert text.startswith("---") and "stateDiagram-v2" in text
    for (trigger, src), dst in EXPECTED_EDGES.items():
        assert f"{src.value} --> {dst.value}: {trigger.value}" in text
    assert "[*] --> NotInitiated" in text


def test_status_snapshot_properties() -> None:
    """SyncStatus exposes name, error and is_stopped."""
    failed = SyncStatus(State.FAILED, error=RuntimeError("x"))
    assert ("Failed", True) == (failed.name, failed.is_stopped)
    assert not SyncStatus(State.SYNCED).is_stopped
    assert "Running.Synced (degraded)" == SyncStatus(State.SYNCED, degraded=True).text
    assert "Synced (degraded)" == str(SyncStatus(State.SYNCED, degraded=True))


def test_readme_has_the_generated_diagram() -> None:
    """The README's Mermaid block is exactly what the machine generates."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert f"```mermaid\n{mermaid_diagram()}```" in readme
