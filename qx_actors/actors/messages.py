"""The whole conversation between the actors of a run: every message, in one file.

Actors never call each other's methods; they ``tell`` one of these frozen dataclasses (the
public handle ``ask``\\ s the Controller). Read it top to bottom:

* **Requests** (:class:`Request` ``[T]``): the Engine sends a payload in an :class:`Envelope`
  to one child; *that child* answers with one :class:`Reply` carrying a ``T`` or an error.
  Each request type names its answer type.
* **Flow control** between the REST fetcher, the WS feed and the DB writer: pages and tick
  batches go to the writer, which acknowledges each (with the error if the write failed).
* **Events** the children tell their supervisor (the Engine), and the Engine tells the
  Controller (status, degraded flag, lifecycle).
* **Effects** that mode programs (generators run by the Engine) yield: :class:`Sleep`,
  :class:`Report`, :class:`Publish`, :class:`Call`, ... The Engine turns them into timers and
  messages and resumes the program with the answer.

Data does not cross the supervisors: committed ticks go from the DB writer to the update hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar, dataclass_transform

import pykka

from qx_actors.domain.funding import FundingSettlementsFacts
from qx_actors.domain.history import DownloadRange, PriceHistoryFacts
from qx_actors.domain.spans import Span
from qx_actors.domain.values import Candle, FundingSettlement, PriceTick
from qx_actors.status import Trigger
from qx_actors.updates import SyncUpdate

__all__ = [
    "ActorRef",
    "BeginRun",
    "Call",
    "CancelRequest",
    "CandleRangeStored",
    "ChildExited",
    "ChildFailed",
    "ChildrenStarted",
    "DbWriterReady",
    "DegradedChanged",
    "Effect",
    "EndRun",
    "EngineBegin",
    "EngineStop",
    "EngineStopped",
    "Envelope",
    "FeedQuiet",
    "FeedState",
    "FetchCandleRange",
    "FetchSettlementRange",
    "FlagHoles",
    "ForceStop",
    "Notice",
    "PageStored",
    "PlayReplay",
    "PruneTicks",
    "Publish",
    "PublishUpdates",
    "QueryFunding",
    "QueryPriceHistory",
    "RecordVerifiedEmpty",
    "ReplayFinished",
    "Reply",
    "Report",
    "Request",
    "RequestShutdown",
    "RunComplete",
    "SetDegraded",
    "SettlementRangeStored",
    "Sleep",
    "StartStream",
    "StatusEvent",
    "StoreCandlePage",
    "StoreSettlementPage",
    "StoreTicks",
    "StreamDown",
    "StreamUp",
    "T",
    "Tell",
    "TicksFlowing",
    "TicksStored",
    "UnwrittenTicks",
    "UseDbWriter",
]

T = TypeVar("T")

#: A reference to any actor of the run.
ActorRef = pykka.ActorRef[Any]


@dataclass_transform(frozen_default=True)
class _Message:
    """Every message derives from it: each subclass is a frozen dataclass (compared and hashed
    by its fields), as if written with ``@dataclass(frozen=True)``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclass(frozen=True)(cls)


# === requests and their answers ============================================================


class Request(Generic[T]):
    """A payload the Engine sends to one child in an :class:`Envelope`, answered with a ``T``.

    Not a :class:`_Message` itself: a request of one's own is declared as before,
    ``@dataclass(frozen=True) class MyRequest(Request[int])`` (a second dataclass decorator on
    a class that already is one would fail); the library's requests take ``_Message`` first.
    """


class Envelope(_Message, Generic[T]):
    """A request to a child actor; it answers ``reply_to`` with a :class:`Reply`."""

    request_id: int
    reply_to: ActorRef
    payload: Request[T]


class Reply(_Message, Generic[T]):
    """The one answer to an :class:`Envelope`: a value or an error, from the child asked."""

    request_id: int
    value: T | None = None
    error: BaseException | None = None


class CancelRequest(_Message):
    """The Engine no longer waits for ``request_id`` (its program restarted): drop the work."""

    request_id: int


# --- to the REST fetcher -------------------------------------------------------------------


class CandleRangeStored(_Message):
    """The answer to :class:`FetchCandleRange`: every page of it is in the database.

    ``missing``: the inclusive minute ranges of the requested range that the exchange returned
    no candle for (descending), the part older than the oldest candle included.
    """

    download: DownloadRange
    received_count: int
    received_oldest: datetime | None
    missing: tuple[Span, ...]


class FetchCandleRange(_Message, Request[CandleRangeStored]):
    """Fetch the candles of ``download`` in pages of ``batch_size`` and store them."""

    download: DownloadRange
    batch_size: int


class SettlementRangeStored(_Message):
    """The answer to :class:`FetchSettlementRange`: every page of it is in the database."""

    received_count: int


class FetchSettlementRange(_Message, Request[SettlementRangeStored]):
    """Fetch the settlements in ``[start, end]`` and store them."""

    start: datetime
    end: datetime
    batch_size: int


# --- to the replayer ----------------------------------------------------------------------


class ReplayFinished(_Message):
    """The answer to :class:`PlayReplay`: everything up to the end was delivered."""

    #: updates delivered by this replayer (after a restart: since it resumed)
    delivered: int


class PlayReplay(_Message, Request[ReplayFinished]):
    """Deliver the run's replay window (from where the run's replay clock stands) to the
    update hub, paced; answered once the end is reached."""


# --- to the DB writer ----------------------------------------------------------------------


class QueryPriceHistory(_Message, Request[PriceHistoryFacts]):
    """What the stored candles look like (every write before it included)."""


class QueryFunding(_Message, Request[FundingSettlementsFacts]):
    """What the stored settlements look like from ``scan_from`` on."""

    scan_from: datetime


class FlagHoles(_Message, Request[None]):
    """Mark the candles around these holes (gap / unstable flags)."""

    holes: tuple[Span, ...]


class RecordVerifiedEmpty(_Message, Request[None]):
    """The exchange confirmed these inclusive minute ranges have no candle."""

    ranges: tuple[Span, ...]


class PruneTicks(_Message, Request[int]):
    """Delete ticks at or before ``up_to``; answered with how many went."""

    up_to: datetime


# === flow control: pages and ticks to the DB writer =========================================


class StoreCandlePage(_Message):
    """From the REST fetcher: validated candles to upsert; acknowledged to ``ack_to``.

    ``asked_at``: the run-clock time the first of these pages was asked for (``None``: now);
    a candle is stored ``stable`` only if it was an hour old then.
    """

    candles: tuple[Candle, ...]
    ack_to: ActorRef
    request_id: int
    asked_at: datetime | None = None


class StoreSettlementPage(_Message):
    """From the REST fetcher: validated settlements to upsert; acknowledged to ``ack_to``."""

    settlements: tuple[FundingSettlement, ...]
    ack_to: ActorRef
    request_id: int


class PageStored(_Message):
    """To the REST fetcher: a page of ``request_id`` was written, or failed with ``error``."""

    request_id: int
    error: BaseException | None = None


class StoreTicks(_Message):
    """From the WS feed (or the Engine, ticks carried over): insert, duplicates ignored.

    Acknowledged to ``ack_to`` if set. The writer publishes the new ones to the update hub.
    """

    ticks: tuple[PriceTick, ...]
    ack_to: ActorRef | None


class TicksStored(_Message):
    """To the WS feed: the batch is done (``committed``, or kept by the writer); send the next."""

    committed: bool = True


class StartStream(_Message):
    """To the WS feed: connect and subscribe. A feed that follows its stream already keeps the
    connection (it outlived a restart of the DB writer) and tells ``TicksFlowing`` again at its
    next committed batch."""


class UseDbWriter(_Message):
    """From the Engine to the WS feed: send tick batches to ``writer`` from now on; ``None``:
    the DB writer is being replaced, hold every tick (the batch in flight included, unless it
    is acknowledged) until the next one."""

    writer: ActorRef | None


# === events to the Engine ==================================================================


class ChildFailed(_Message):
    """From a child: an error that answers no request (e.g. a tick write, a stale stream)."""

    source: str
    error: BaseException


class ChildExited(_Message):
    """From a child: it stopped. Unexpected unless the Engine stopped it (a ``ChildDied``)."""

    source: str
    ref: ActorRef


class DbWriterReady(_Message):
    """From the DB writer: the database is open and the writer lock held; ticks may come."""

    ref: ActorRef


class UnwrittenTicks(_Message):
    """From a stopping DB writer (or a stopping WS feed without a writer): received ticks not
    stored, for the next writer."""

    ticks: tuple[PriceTick, ...]


class StreamUp(_Message):
    """From the WS feed: subscribed; the silence watch starts over."""


class StreamDown(_Message):
    """From the WS feed: the connection failed; it reconnects with backoff by itself."""

    error: BaseException


class FeedQuiet(_Message):
    """From the WS feed: connected, but no tick for ``silent_s`` (half the stale limit)."""

    silent_s: float


class TicksFlowing(_Message):
    """From the WS feed: a batch was committed, the first since it started or went quiet."""


class FeedState(_Message):
    """The stream as the Engine last heard of it; what a live program's ``Sleep`` resumes with."""

    #: the connection failed: data flows by REST polling (degraded) until it is back
    down: bool = False
    #: connected but silent for half the stale limit: polled too, degraded
    quiet: bool = False


class EngineBegin(_Message):
    """From the Controller: start the children and run the mode program."""


class EngineStop(_Message):
    """From the Controller: graceful stop; children flush and stop, then ``EngineStopped``."""


# === events to the Controller ==============================================================


class BeginRun(_Message):
    """Ask (from the public handle): fire ``start`` and spawn the Engine."""


class RequestShutdown(_Message):
    """Ask: fire ``shutdown`` (or raise the user-facing refusal) and stop the Engine."""


class ForceStop(_Message):
    """Ask: the graceful shutdown timed out; stop every actor and fail the run."""

    error: BaseException


class StatusEvent(_Message):
    """From the Engine: fire ``trigger`` (with the error it carries, if any)."""

    trigger: Trigger
    error: BaseException | None = None
    degraded: bool | None = None


class RunComplete(_Message):
    """From the Engine: the program has done everything it was to do (a replay reached its
    end): shut the run down as a user's ``shutdown()`` would."""


class PublishUpdates(_Message):
    """From the Engine: deliver these updates (the program's states) to subscribers."""

    updates: tuple[SyncUpdate, ...]


class DegradedChanged(_Message):
    """From the Engine: live data now flows (or no longer flows) by REST polling only."""

    degraded: bool
    reason: str | None = None


class ChildrenStarted(_Message):
    """From the Engine: the actors it started (so a forced stop can reach them)."""

    refs: tuple[ActorRef, ...]


class EngineStopped(_Message):
    """From the Engine: every child has stopped; ``error`` is the fatal cause, if any."""

    error: BaseException | None = None


# === effects yielded by mode programs =======================================================


class Sleep(_Message):
    """Resume the program after ``seconds`` with the current :class:`FeedState`.

    ``until_feed_changes``: resume early, as soon as the feed's state changes.
    """

    seconds: float
    until_feed_changes: bool = False


class Report(_Message):
    """Fire a status trigger (``progress``, ``synced``, ``backfilled``); resumes at once."""

    trigger: Trigger
    degraded: bool | None = None


class SetDegraded(_Message):
    """Tell the Controller that live data does (not) flow by REST polling only; resumes at once."""

    degraded: bool
    reason: str


class Publish(_Message):
    """Deliver an update to subscribers; resumes at once."""

    update: SyncUpdate


class EndRun(_Message):
    """The program's work is done (a replay reached its end): the run shuts down."""


#: What a mode program may tell a child without waiting for an answer.
Notice = StartStream


class Tell(_Message):
    """Send ``message`` to the child actor ``target``; resumes at once."""

    target: str
    message: Notice


class Call(_Message, Generic[T]):
    """Send ``payload`` to the child actor ``target``; resumes with its ``T`` (or its error)."""

    target: str
    payload: Request[T]


#: Everything a mode program may yield. A :class:`Sleep` resumes it with a :class:`FeedState`,
#: a :class:`Call` with the answer of its request, the others with ``None``; the typed way to
#: wait for an answer is ``yield from call(...)`` / ``yield from sleep(...)``
#: (:mod:`qx_actors.actors._program`).
Effect = Sleep | Report | SetDegraded | Publish | Tell | Call[Any] | EndRun
