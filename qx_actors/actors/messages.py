"""Every message the actors exchange: small frozen dataclasses, nothing else.

Actors never call each other's methods; they ``tell`` (or, for the public handle, ``ask``)
one of these. Requests that expect an answer travel in an :class:`Envelope` and are answered
with a :class:`Reply` carrying the same ``request_id``.

Mode programs (generators run by the Engine) yield *effects*: :class:`Sleep`, :class:`Report`,
:class:`Publish` and :class:`Call`; the Engine turns them into timers and messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pykka

from qx_actors.domain.history import DownloadRange
from qx_actors.domain.values import Candle, FundingSettlement, PriceTick
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
class DegradedChanged:
    """From the Engine: live data now flows (or no longer flows) by REST polling only."""

    degraded: bool
    reason: str | None = None


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
class CancelRequest:
    """The Engine no longer waits for ``request_id`` (its program restarted): drop the work."""

    request_id: int


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


@dataclass(frozen=True)
class ChildExited:
    """From a child: it stopped. Unexpected unless the Engine stopped it (a :class:`ChildDied`)."""

    source: str
    ref: pykka.ActorRef[Any]


@dataclass(frozen=True)
class UnwrittenTicks:
    """From a stopping DB writer: received ticks it could not store, for the next writer."""

    ticks: tuple[PriceTick, ...]


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
class SetDegraded:
    """Tell the Controller that live data does (not) flow by REST polling only; resumes at once."""

    degraded: bool
    reason: str


@dataclass(frozen=True)
class Publish:
    """Deliver an update to subscribers; resumes at once."""

    update: SyncUpdate


@dataclass(frozen=True)
class Tell:
    """Send ``message`` to the child actor ``target``; resumes at once."""

    target: str
    message: Any


@dataclass(frozen=True)
class Call:
    """Send ``payload`` to the child actor ``target``; resumes with its reply (or its error)."""

    target: str
    payload: Any


# --- REST fetcher ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchCandleRange:
    """Envelope payload: fetch the candles of ``download`` and hand them to the DB writer.

    Answered (by the DB writer, once every page is stored) with a :class:`CandleRangeStored`.
    """

    download: DownloadRange
    batch_size: int


@dataclass(frozen=True)
class FetchSettlementRange:
    """Envelope payload: fetch the settlements in ``[start, end]`` and store them.

    Answered (by the DB writer) with a :class:`SettlementRangeStored`.
    """

    start: datetime
    end: datetime
    batch_size: int


@dataclass(frozen=True)
class StoreCandlePage:
    """From the REST fetcher: one validated page of candles to upsert; acked to ``ack_to``."""

    candles: tuple[Candle, ...]
    ack_to: pykka.ActorRef[Any]
    request_id: int


@dataclass(frozen=True)
class PageStored:
    """To the REST fetcher: a page of ``request_id`` was written (flow control)."""

    request_id: int


@dataclass(frozen=True)
class FinishCandleRange:
    """From the REST fetcher, after the last page: answer the Engine's request.

    ``missing``: the inclusive minute ranges of the requested range that the exchange returned
    no candle for (descending), the part older than the oldest candle included.
    """

    request_id: int
    reply_to: pykka.ActorRef[Any]
    download: DownloadRange
    received_count: int
    received_oldest: datetime | None
    missing: tuple[tuple[datetime, datetime], ...]


@dataclass(frozen=True)
class CandleRangeStored:
    """The answer to :class:`FetchCandleRange`: every page of it is in the database."""

    download: DownloadRange
    received_count: int
    received_oldest: datetime | None
    missing: tuple[tuple[datetime, datetime], ...]


@dataclass(frozen=True)
class StoreSettlementPage:
    """From the REST fetcher: one validated page of settlements to upsert."""

    settlements: tuple[FundingSettlement, ...]
    ack_to: pykka.ActorRef[Any]
    request_id: int


@dataclass(frozen=True)
class FinishSettlementRange:
    """From the REST fetcher, after the last settlement page."""

    request_id: int
    reply_to: pykka.ActorRef[Any]
    received_count: int


@dataclass(frozen=True)
class SettlementRangeStored:
    """The answer to :class:`FetchSettlementRange`."""

    received_count: int


@dataclass(frozen=True)
class QueryPriceHistory:
    """Envelope payload: answer with the :class:`PriceHistoryFacts` from ``scan_from`` on."""

    scan_from: datetime


@dataclass(frozen=True)
class QueryFunding:
    """Envelope payload: answer with the :class:`FundingSettlementsFacts`."""

    scan_from: datetime


@dataclass(frozen=True)
class FlagHoles:
    """Envelope payload: mark the candles around these holes (gap / unstable flags)."""

    holes: tuple[tuple[datetime, datetime], ...]


@dataclass(frozen=True)
class RecordVerifiedEmpty:
    """Envelope payload: the exchange confirmed these inclusive minute ranges have no candle."""

    ranges: tuple[tuple[datetime, datetime], ...]


@dataclass(frozen=True)
class PruneTicks:
    """Envelope payload: delete ticks at or before ``up_to``; answered with the count."""

    up_to: datetime


@dataclass(frozen=True)
class StoreTicks:
    """From the WS feed: ticks to insert (duplicates ignored); acked to ``ack_to`` if set."""

    ticks: tuple[PriceTick, ...]
    ack_to: pykka.ActorRef[Any] | None


@dataclass(frozen=True)
class TicksStored:
    """To the WS feed: the last batch is committed; send the next."""


@dataclass(frozen=True)
class StreamUp:
    """From the WS feed: subscribed, ticks flow."""


@dataclass(frozen=True)
class StreamDown:
    """From the WS feed: the connection failed; it reconnects with backoff."""

    error: BaseException


@dataclass(frozen=True)
class TicksCommitted:
    """To the Engine: a batch was written; ``ticks`` are the new ones (duplicates left out)."""

    ticks: tuple[PriceTick, ...]
    #: how many ticks the batch had, duplicates included
    received: int
