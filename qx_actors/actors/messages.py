"""Every message the actors exchange: small frozen dataclasses, nothing else.

Actors never call each other's methods; they ``tell`` (or, for the public handle, ``ask``)
one of these. Requests that expect an answer travel in an :class:`Envelope` and are answered
with a :class:`Reply` carrying the same ``request_id``.

Mode programs (generators run by the Engine) yield *effects*: :class:`Sleep`, :class:`Report`,
:class:`Publish` and :class:`Call`; the Engine turns them into timers and messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pykka

from qx_actors.status import Trigger
from qx_actors.updates import SyncUpdate

# --- to the Controller ----------------------------------------------------------------------


@dataclass(frozen=True)
class BeginRun:
    """Ask: fire ``start`` and spawn the Engine."""


@dataclass(frozen=True)
class StatusEvent:
    """From the Engine: fire ``trigger`` (with the error it carries, if any)."""

    trigger: Trigger
    error: BaseException | None = None
    degraded: bool | None = None


@dataclass(frozen=True)
class PublishUpdates:
    """From the Engine: deliver these updates to subscribers."""

    updates: tuple[SyncUpdate, ...]


@dataclass(frozen=True)
class RequestShutdown:
    """Ask: fire ``shutdown`` (or raise the user-facing refusal) and stop the Engine."""


@dataclass(frozen=True)
class ForceStop:
    """Ask: the graceful shutdown timed out; stop every actor and fail the run."""

    error: BaseException


@dataclass(frozen=True)
class ChildrenStarted:
    """From the Engine: the actors it started (so a forced stop can reach them)."""

    refs: tuple[pykka.ActorRef[Any], ...]


@dataclass(frozen=True)
class EngineStopped:
    """From the Engine: every child has stopped; ``error`` is the fatal cause, if any."""

    error: BaseException | None = None


# --- to the Engine --------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineBegin:
    """Start the children and run the mode program."""


@dataclass(frozen=True)
class EngineStop:
    """Graceful stop: children flush and stop, then report ``EngineStopped``."""


@dataclass(frozen=True)
class TimerFired:
    """A timer the Engine set has expired (stale tokens are ignored)."""

    token: int


@dataclass(frozen=True)
class Envelope:
    """A request to a child actor; it answers ``reply_to`` with a :class:`Reply`."""

    request_id: int
    reply_to: pykka.ActorRef[Any]
    payload: Any


@dataclass(frozen=True)
class Reply:
    """The answer to an :class:`Envelope`: a value or an error."""

    request_id: int
    value: Any = None
    error: BaseException | None = None


@dataclass(frozen=True)
class ChildFailed:
    """A child reports an error that did not answer any request (e.g. the WS feed died)."""

    source: str
    error: BaseException


# --- effects yielded by mode programs ------------------------------------------------------


@dataclass(frozen=True)
class Sleep:
    """Resume the program after ``seconds``."""

    seconds: float


@dataclass(frozen=True)
class Report:
    """Fire a status trigger (``progress``, ``synced``, ``backfilled``); resumes at once."""

    trigger: Trigger
    degraded: bool | None = None


@dataclass(frozen=True)
class Publish:
    """Deliver an update to subscribers; resumes at once."""

    update: SyncUpdate


@dataclass(frozen=True)
class Call:
    """Send ``payload`` to the child actor ``target``; resumes with its reply (or its error)."""

    target: str
    payload: Any
