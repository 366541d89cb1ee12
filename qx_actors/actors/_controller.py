"""The Controller actor: the only owner of the status machine.

It applies status events from the Engine, publishes every applied transition (as a
``SyncUpdate.Status`` and a ``status_transition`` log event), handles the shutdown request of
the public handle, and, when the graceful shutdown times out, stops every actor forcibly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pykka

from qx_actors.actors._base import QxActor, RunThreads
from qx_actors.actors.messages import (
    BeginRun,
    ChildrenStarted,
    DegradedChanged,
    EngineBegin,
    EngineStop,
    EngineStopped,
    ForceStop,
    PublishUpdates,
    RequestShutdown,
    RunComplete,
    StatusEvent,
)
from qx_actors.domain.timeutil import utc_now
from qx_actors.logs import (
    DEGRADED_MODE_CHANGED,
    STATUS_EVENT_IGNORED,
    STATUS_TRANSITION,
    STATUS_TRANSITION_REJECTED,
    get_logger,
)
from qx_actors.status import (
    State,
    StatusMachine,
    SyncStatus,
    TransitionRejected,
    Trigger,
    shutdown_refusal,
)
from qx_actors.updates import UpdateHub

#: Builds the Engine actor of a run, given the Controller's ref.
EngineSpawner = Callable[[pykka.ActorRef[Any]], pykka.ActorRef[Any]]


class ControllerActor(QxActor):
    """Owns the status machine of one run."""

    def __init__(
        self,
        *,
        run_id: str,
        mode: str,
        hub: UpdateHub,
        spawn_engine: EngineSpawner,
        threads: RunThreads,
    ) -> None:
        super().__init__(threads=threads, run_id=run_id)
        self._run_id = run_id
        self._mode = mode
        self._hub = hub
        self._spawn_engine = spawn_engine
        self._machine = StatusMachine()
        self._engine: pykka.ActorRef[Any] | None = None
        self._children: tuple[pykka.ActorRef[Any], ...] = ()
        self._log = get_logger(run_id=run_id, mode=mode, actor="controller")

    # -- machine -----------------------------------------------------------------------------

    def _fire(
        self, trigger: Trigger, error: BaseException | None = None, degraded: bool | None = None
    ) -> bool:
        current = self._hub.status()
        try:
            applied = self._machine.fire(trigger)
        except TransitionRejected as exc:
            self._log.warning(
                STATUS_TRANSITION_REJECTED,
                trigger=trigger.value,
                state=exc.state.value,
                reason=exc.reason,
            )
            return False
        if applied is None:
            if degraded is not None and degraded != current.degraded:
                self._hub.set_status(replace(current, degraded=degraded))
            return True
        keeps_error = applied.dst in (State.RECOVERING, State.FAILED)
        status = SyncStatus(
            state=applied.dst,
            error=error if keeps_error else None,
            degraded=current.degraded if degraded is None else degraded,
            since=utc_now(),
        )
        self._log.info(
            STATUS_TRANSITION,
            trigger=trigger.value,
            src=applied.src.value,
            dst=applied.dst.value,
            error=None if error is None else f"{type(error).__name__}: {error}",
            timestamp=status.since.isoformat(),
        )
        self._hub.set_status(status)
        if status.is_stopped:
            self._hub.close()
            self.actor_ref.stop(block=False)
        return True

    # -- messages ----------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        match message:
            case StatusEvent(trigger=trigger, error=error, degraded=degraded):
                self._on_status_event(trigger, error, degraded)
            case DegradedChanged(degraded=degraded, reason=reason):
                self._set_degraded(degraded, reason)
            case PublishUpdates(updates=updates):
                for update in updates:
                    self._hub.publish(update)
            case BeginRun():
                self._begin()
            case RequestShutdown():
                return self._request_shutdown()
            case RunComplete():
                self._on_run_complete()
            case EngineStopped(error=error):
                self._on_engine_stopped(error)
            case ChildrenStarted(refs=refs):
                self._children = refs
            case ForceStop(error=error):
                self._force_stop(error)
            case _:
                self._log.warning("unknown_message", message=repr(message))
        return None

    def _set_degraded(self, degraded: bool, reason: str | None) -> None:
        current = self._hub.status()
        if not current.is_running or current.degraded == degraded:
            return
        self._log.info(DEGRADED_MODE_CHANGED, degraded=degraded, state=current.name, reason=reason)
        self._hub.set_status(replace(current, degraded=degraded))

    def _begin(self) -> None:
        if not self._fire(Trigger.START):
            return
        self._engine = self._spawn_engine(self.actor_ref)
        self._engine.tell(EngineBegin())

    def _on_status_event(
        self, trigger: Trigger, error: BaseException | None, degraded: bool | None
    ) -> None:
        state = self._machine.state
        if not state.is_running:
            # After a shutdown was initiated the Engine's view no longer decides the status.
            self._log.info(
                STATUS_EVENT_IGNORED,
                trigger=trigger.value,
                state=state.value,
                error=None if error is None else str(error),
            )
            return
        self._fire(trigger, error, degraded)

    def _request_shutdown(self) -> None:
        refusal = shutdown_refusal(self._hub.status())
        if refusal is not None:
            self._log.info(
                STATUS_TRANSITION_REJECTED,
                trigger=Trigger.SHUTDOWN.value,
                state=self._machine.state.value,
                reason=str(refusal),
            )
            raise refusal
        self._fire(Trigger.SHUTDOWN)
        if self._engine is not None:
            self._engine.tell(EngineStop())

    def _on_run_complete(self) -> None:
        """The program did all it was to do (a replay reached its end): the same shutdown a
        user asks for (a later ``shutdown()`` is then refused as a second one)."""
        if not self._machine.state.is_running:
            return
        self._log.info("run_complete", state=self._machine.state.value)
        self._fire(Trigger.SHUTDOWN)
        if self._engine is not None:
            self._engine.tell(EngineStop())

    def _on_engine_stopped(self, error: BaseException | None) -> None:
        state = self._machine.state
        if state is State.SHUTDOWN_INITIATED:
            if error is None:
                self._fire(Trigger.SHUTDOWN_COMPLETE)
            else:  # e.g. a child that did not stop in time
                self._fire(Trigger.FATAL_ERROR, error)
        elif state.is_running:
            self._fire(Trigger.FATAL_ERROR, error or RuntimeError("engine stopped unexpectedly"))

    def _force_stop(self, error: BaseException) -> None:
        if self._machine.state is not State.SHUTDOWN_INITIATED:
            return
        for ref in (*self._children, *([self._engine] if self._engine else [])):
            ref.stop(block=False)
        self._fire(Trigger.FATAL_ERROR, error)

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self._log.error("controller_crashed", error=repr(exception_value))
