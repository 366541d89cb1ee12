"""The lifecycle status machine: states, the transitions table, the machine, and its diagram.

The status graph is data: :data:`TRANSITIONS` lists ``(trigger, sources, destination)``. The
table only *describes* the graph; one thing enforces it: :class:`StatusMachine` wraps a
``transitions`` ``HierarchicalMachine`` built from the table (``Running`` has nested children,
named with a dot: ``Running.InProgress``), and a step the graph lacks is rejected by that machine
(its ``MachineError``), never by a second check of the table. Only the Controller actor owns a
``StatusMachine``. :func:`is_edge` answers from the same table for code that *reads* recorded
steps (the ``logs`` timeline, the test probe) without a machine. The Mermaid diagram is
generated from the same machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from transitions import MachineError
from transitions.extensions.diagrams import HierarchicalGraphMachine
from transitions.extensions.nesting import HierarchicalMachine, NestedState

from qx_actors.errors import SyncAlreadyShutdown, SyncAlreadyTerminated, SyncNotStarted
from qx_actors.redact import redact_text

__all__ = [
    "EDGES",
    "RUNNING",
    "TRANSITIONS",
    "AppliedTransition",
    "State",
    "StatusMachine",
    "SyncStatus",
    "TransitionRejected",
    "Trigger",
    "is_edge",
    "mermaid_diagram",
    "shutdown_refusal",
]


class State(StrEnum):
    """The public status names (exactly these strings appear in the API and in logs)."""

    NOT_INITIATED = "NotInitiated"
    STARTING = "Running.Starting"
    IN_PROGRESS = "Running.InProgress"
    SYNCED = "Running.Synced"
    BACKFILLED = "Running.Backfilled"
    RECOVERING = "Running.Recovering"
    RESTARTING = "Running.Restarting"
    SHUTDOWN_INITIATED = "ShutdownInitiated"
    SHUTDOWN = "Shutdown"
    FAILED = "Failed"

    @property
    def is_running(self) -> bool:
        """Whether this is one of the ``Running.*`` states."""
        return self.value.startswith("Running.")

    @property
    def is_stopped(self) -> bool:
        """Whether this is a terminal state."""
        return self in (State.SHUTDOWN, State.FAILED)

    def __str__(self) -> str:
        return self.value


class Trigger(StrEnum):
    """The events that move the machine."""

    START = "start"
    PROGRESS = "progress"
    SYNCED = "synced"
    BACKFILLED = "backfilled"
    RECOVERABLE_ERROR = "recoverable_error"
    RESTART = "restart"
    FATAL_ERROR = "fatal_error"
    SHUTDOWN = "shutdown"
    SHUTDOWN_COMPLETE = "shutdown_complete"

    def __str__(self) -> str:
        return self.value


RUNNING: tuple[State, ...] = tuple(s for s in State if s.is_running)

#: The whole graph: ``(trigger, sources, destination)``. Everything else is rejected.
TRANSITIONS: tuple[tuple[Trigger, tuple[State, ...], State], ...] = (
    (Trigger.START, (State.NOT_INITIATED,), State.STARTING),
    (
        Trigger.PROGRESS,
        (State.STARTING, State.RESTARTING, State.SYNCED, State.BACKFILLED),
        State.IN_PROGRESS,
    ),
    (Trigger.SYNCED, (State.IN_PROGRESS,), State.SYNCED),
    (Trigger.BACKFILLED, (State.IN_PROGRESS,), State.BACKFILLED),
    (Trigger.RECOVERABLE_ERROR, RUNNING, State.RECOVERING),
    (Trigger.RESTART, (State.RECOVERING,), State.RESTARTING),
    (Trigger.FATAL_ERROR, (*RUNNING, State.SHUTDOWN_INITIATED), State.FAILED),
    (Trigger.SHUTDOWN, RUNNING, State.SHUTDOWN_INITIATED),
    (Trigger.SHUTDOWN_COMPLETE, (State.SHUTDOWN_INITIATED,), State.SHUTDOWN),
)

#: Where each trigger leads: only to see that a trigger repeats the Running state it is in (a
#: no-op), not to judge it.
_DESTINATION = {trigger: dest for trigger, _, dest in TRANSITIONS}


#: Every edge of the graph as ``(trigger, source, destination)``.
EDGES: frozenset[tuple[Trigger, State, State]] = frozenset(
    (trigger, source, dest) for trigger, sources, dest in TRANSITIONS for source in sources
)


def is_edge(trigger: Trigger, src: State, dst: State) -> bool:
    """Whether ``src --trigger--> dst`` is an edge of the graph: a query for recorded steps
    (timelines, probes); a running machine does not ask it, ``transitions`` enforces."""
    return (trigger, src, dst) in EDGES


class _DottedState(NestedState):  # type: ignore[misc]
    """Nested state named ``Parent.Child`` (without touching the library-wide separator)."""

    separator = "."


class _Machine(HierarchicalMachine):  # type: ignore[misc]
    state_cls = _DottedState


class _GraphMachine(HierarchicalGraphMachine):  # type: ignore[misc]
    state_cls = _DottedState


def _machine_states() -> list[Any]:
    children = [s.value.split(".", 1)[1] for s in RUNNING]
    return [
        State.NOT_INITIATED.value,
        {"name": "Running", "children": children},
        State.SHUTDOWN_INITIATED.value,
        State.SHUTDOWN.value,
        State.FAILED.value,
    ]


def _machine_transitions() -> list[list[Any]]:
    return [[t.value, [s.value for s in sources], dest.value] for t, sources, dest in TRANSITIONS]


@dataclass(frozen=True)
class SyncStatus:
    """A snapshot of a run's status: its name, the error it carries (if any), and flags."""

    state: State
    error: BaseException | None = None
    #: True while live data flows by REST polling because the stream is down or stale.
    degraded: bool = False
    since: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def name(self) -> str:
        """The status name, e.g. ``Running.InProgress``."""
        return self.state.value

    @property
    def is_stopped(self) -> bool:
        """Whether the run has ended (``Shutdown`` or ``Failed``)."""
        return self.state.is_stopped

    @property
    def is_running(self) -> bool:
        """Whether the run is in one of the ``Running.*`` states."""
        return self.state.is_running

    @property
    def text(self) -> str:
        """The dotted name, the degraded flag and the error with its kind, as the CLI, the
        dashboards and /health show it: ``Running.Recovering: DatabaseUnavailable: ...``.

        Scrubbed: an application printing a status must not print a database password.
        """
        text = self.name
        if self.degraded:
            text += " (degraded)"
        if self.error is not None:
            text += redact_text(f": {_describe(self.error)}")
        return text

    def __str__(self) -> str:
        """Like quantoxide's Display: ``Not synced (In progress)``, ``Synced``,
        ``Not synced (Failed: DatabaseUnavailable: ...)``, ``Terminated: ...``."""
        label = _DISPLAY[self.state]
        if self.state is State.RECOVERING:
            label = f"Not synced (Failed: {self._error_text()})"
        elif self.state is State.FAILED:
            label = f"Terminated: {self._error_text()}"
        return f"{label} (degraded)" if self.degraded else label

    def _error_text(self) -> str:
        return "unknown error" if self.error is None else redact_text(_describe(self.error))


class TransitionRejected(Exception):
    """A trigger the graph has no edge for from the current state (internal)."""

    def __init__(self, trigger: Trigger, state: State, reason: str) -> None:
        self.trigger = trigger
        self.state = state
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class AppliedTransition:
    """One applied edge of the graph."""

    trigger: Trigger
    src: State
    dst: State


class _MachineModel:
    """What ``transitions`` decorates with the state and trigger methods."""

    state: str
    trigger: Any


class StatusMachine:
    """The status graph on a ``transitions`` machine; owned by one Controller."""

    def __init__(self) -> None:
        # A private model keeps the trigger methods transitions attaches off this class.
        self._model = _MachineModel()
        self._machine = _Machine(
            model=self._model,
            states=_machine_states(),
            transitions=_machine_transitions(),
            initial=State.NOT_INITIATED.value,
            auto_transitions=False,
            ignore_invalid_triggers=False,
        )

    @property
    def state(self) -> State:
        """The current state."""
        return State(self._model.state)

    def fire(self, trigger: Trigger) -> AppliedTransition | None:
        """Apply ``trigger``; ``None`` when it would repeat the current Running state (a no-op).

        Raises :class:`TransitionRejected` when the graph has no such edge: the ``transitions``
        machine is what refuses it (the ``MachineError`` is the rejection's ``__cause__``); the
        table is not consulted here.
        """
        src = self.state
        if _DESTINATION[trigger] is src and src.is_running:
            return None
        try:
            self._model.trigger(trigger.value)
        except MachineError as exc:
            raise TransitionRejected(trigger, src, f"no '{trigger}' transition from {src}") from exc
        return AppliedTransition(trigger, src, self.state)


def shutdown_refusal(status: SyncStatus) -> Exception | None:
    """The user-facing error for a ``shutdown()`` in ``status``, or ``None`` if it is allowed."""
    if status.state is State.NOT_INITIATED:
        return SyncNotStarted("the sync engine was not started")
    if status.state in (State.SHUTDOWN_INITIATED, State.SHUTDOWN):
        return SyncAlreadyShutdown(f"shutdown already requested (status {status.name})")
    if status.state is State.FAILED:
        return SyncAlreadyTerminated(status)
    return None


def mermaid_diagram() -> str:
    """The status graph as Mermaid ``stateDiagram-v2`` text, generated from the machine."""

    class _Model:
        pass

    graph_machine = _GraphMachine(
        model=_Model(),
        states=_machine_states(),
        transitions=_machine_transitions(),
        initial=State.NOT_INITIATED.value,
        auto_transitions=False,
        graph_engine="mermaid",
        title="qx_actors sync status",
    )
    text: str = graph_machine.get_graph().draw(None)
    # Styling lines only mark the model's current state; the diagram documents the graph.
    lines = [
        line
        for line in text.splitlines()
        if not re.match(r"\s*(classDef|Class|class)\s", line) and line.strip() != ""
    ]
    return "\n".join(lines) + "\n"


def _describe(error: BaseException) -> str:
    # the error's kind first (e.g. "DatabaseUnavailable: ... authentication failed")
    return f"{type(error).__name__}: {error}"


#: quantoxide's Display of each status (the ones carrying an error are built in __str__).
_DISPLAY: dict[State, str] = {
    State.NOT_INITIATED: "Not synced (Not initiated)",
    State.STARTING: "Not synced (Starting)",
    State.IN_PROGRESS: "Not synced (In progress)",
    State.RECOVERING: "Not synced (Failed)",
    State.RESTARTING: "Not synced (Restarting)",
    State.SYNCED: "Synced",
    State.BACKFILLED: "Backfilled",
    State.SHUTDOWN_INITIATED: "Shutdown initiated",
    State.SHUTDOWN: "Shutdown",
    State.FAILED: "Terminated",
}
