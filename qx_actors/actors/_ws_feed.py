"""The WS feed actor: follows last-price ticks over the Stream API and feeds the DB writer.

The stream client runs on the actor's own event loop and reconnects by itself with capped,
jittered backoff. A tick whose time was already received in this run (sent twice, or again
after a reconnect) is dropped here and counted. Ticks are batched: one batch at a time is with
the DB writer; the next leaves as soon as the writer acknowledges the previous one. On stop,
the connection is cancelled and every tick still queued is handed to the DB writer before the
actor ends (``ws_feed_stopped`` logs the counters).

The stream outlives the database: when the DB writer fails, the Engine restarts the writer
(and what needs the database) but not the feed. It tells the feed :class:`UseDbWriter`
``(None)``: from then on every received tick waits here, in the queue, together with the batch
in flight unless the old writer acknowledged it (acknowledged means the writer holds it: a
writer that could not store it hands it to the Engine for the next one). ``UseDbWriter(new)``
sends the unacknowledged batch again (the database ignores a tick time stored twice), then the
queue. A feed stopped while it has no writer hands what it holds to the Engine
(:class:`UnwrittenTicks`).

**The queue's bound and overflow policy.** At most :data:`MAX_QUEUED_TICKS` ticks wait (about
an hour at 50 ticks/s); past it the *oldest* are dropped, counted in
``FeedCounters.overflowed`` (``qx_feed_overflowed_total``) and logged (``tick_queue_overflow``,
an error): the newest ticks are the ones no one can fetch later either, and an outage longer
than that is better told than hidden by a growing process. The feed counts the received ticks
that no DB writer holds now (the queue, plus the unacknowledged batch while the writer is
replaced) in the run's :class:`TicksWaiting` (``/health``'s ticks waiting). The bound is
``sync.tick_queue_capacity`` (default :data:`MAX_QUEUED_TICKS`).

**The spool** (``sync.tick_spool``, off by default): with one, the ticks held during a database
outage go to an append-only local file (:mod:`~qx_actors.actors._tick_spool`, each append flushed
and fsync'ed), counted in ``FeedCounters.spooled`` and ``TicksWaiting.spooled``. The feed is in an
outage while it has no DB writer (``UseDbWriter(None)``) or while the writer has not acknowledged
the batch in flight for :data:`SPOOL_FLUSH_S`; then every tick it holds is appended (the
unacknowledged batch first, it is older): at once, then whenever :data:`SPOOL_FLUSH_S` passed or
the queue reached a spool batch (:data:`SPOOL_BATCH_TICKS`, a quarter of the bound if that is
smaller), and the queue keeps only what is not on disk yet. **A crash during an outage loses at
most the last unflushed batch**: the ticks received since the last append, fewer than a spool batch
and none received more than :data:`SPOOL_FLUSH_S` before it (the first append of an outage also
holds the batch the writer kept for that second; and a batch the writer failed at once, a database
down or full, is appended as soon as the writer says so). Past the bound without an outage (a
writer slower than the stream), the oldest ticks go to the spool too, a spool batch at a time,
instead of being dropped. A healthy writer (each batch acknowledged within :data:`SPOOL_FLUSH_S`)
costs no file I/O. The feed sends the spool's records to the DB writer before its queue (they are
older), :data:`REPLAY_BATCH_TICKS` a batch; a committed batch confirms the records up to it (the
writer stores the ticks it holds from a failed write together with the next batch), a new writer
gets the unconfirmed ones again (a record may be stored twice, which the database ignores), and the
file is removed once all are stored. A spool left by a crash is replayed first when the next feed
starts; a feed stopped during an outage adds what it holds to it.

The feed watches its own stream and tells the Engine what it sees: ``StreamUp``,
``StreamDown``, ``TicksFlowing`` (a batch committed, the first since the start of the stream
or a new writer; or ticks received again after a quiet spell), ``FeedQuiet`` (connected, no tick
*received* for half of ``live_price_tick_max_interval_s``), and a recoverable
:class:`~qx_actors.errors.StaleFeedError` once the whole interval passed. Staleness is about the
ticks received, never about the writer: a slow or stuck DB writer is the writer's own fault
(``DatabaseBusyError`` after the busy timeout, from the writer) and never makes the feed
reconnect. A writer that does not acknowledge a batch within ``live_price_tick_max_interval_s``
(stuck past any timeout of its own) is reported by the feed as the writer's fault too: a
:class:`~qx_actors.errors.DatabaseBusyError` (the Engine replaces the writer, the feed goes on).
A stream that is down is not silent: it is being reconnected.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from qx_actors.actors._base import AsyncQxActor, RunThreads, tell
from qx_actors.actors._engine import TicksWaiting
from qx_actors.actors._tick_spool import SpoolChunk, TickSpool
from qx_actors.actors.messages import (
    ActorRef,
    ChildFailed,
    FeedQuiet,
    StartStream,
    StoreTicks,
    StreamDown,
    StreamUp,
    TicksFlowing,
    TicksStored,
    UnwrittenTicks,
    UseDbWriter,
)
from qx_actors.domain.values import PriceTick
from qx_actors.errors import ChildDied, DatabaseBusyError, StaleFeedError, StreamError
from qx_actors.lnmarkets.stream import StreamClient
from qx_actors.logs import get_logger
from qx_actors.observability._run_health import RunHealth

#: Ticks waiting for the DB writer (while a batch is written, or while the writer is replaced
#: after a database error); beyond this the oldest are dropped (and counted).
MAX_QUEUED_TICKS = 200_000
#: Ticks appended to the spool at once (one fsync each): during an outage, the queue is
#: appended when it holds this many (or a quarter of the bound, if smaller); past the bound
#: otherwise, the oldest this many go.
SPOOL_BATCH_TICKS = 1000
#: During an outage the held ticks are appended at least this often (seconds); a batch the DB
#: writer has not acknowledged for this long starts an outage (with a spool).
SPOOL_FLUSH_S = 1.0
#: Spooled ticks sent to the DB writer in one batch.
REPLAY_BATCH_TICKS = 5000
#: Reconnect backoff: first delay, cap (seconds); each delay is jittered by ±50 %.
BACKOFF_FIRST_S = 0.1
BACKOFF_CAP_S = 10.0
#: Tick times remembered to drop a tick the stream sends again (duplicates, replays).
RECENT_TICK_TIMES = 10_000


class RecentTimes:
    """The last ``capacity`` distinct tick times seen."""

    def __init__(self, capacity: int) -> None:
        self._order: deque[datetime] = deque()
        self._seen: set[datetime] = set()
        self._capacity = capacity

    def add(self, time: datetime) -> bool:
        """Remember ``time``; ``False`` if it was seen already."""
        if time in self._seen:
            return False
        self._seen.add(time)
        self._order.append(time)
        if len(self._order) > self._capacity:
            self._seen.discard(self._order.popleft())
        return True

    def fresh(self, ticks: list[PriceTick]) -> list[PriceTick]:
        """The ticks whose times were not seen (remembered now), in order: :meth:`add` of
        each; a batch of distinct, unseen times (the usual) is taken with set operations."""
        seen, order = self._seen, self._order
        times = [tick.time for tick in ticks]
        if seen.isdisjoint(times):
            unique = set(times)
            if len(unique) == len(times):
                seen |= unique
                order.extend(times)
                for _ in range(len(order) - self._capacity):
                    seen.discard(order.popleft())
                return ticks
        return [tick for tick in ticks if self.add(tick.time)]


@dataclass
class FeedGauges:
    """Current figures for the health probe (the feed's loop writes, the probe reads)."""

    queued_ticks: int = 0
    #: 1 while a tick batch is with the DB writer (one at a time)
    unacknowledged_batches: int = 0


@dataclass
class FeedCounters:
    """What the feed did, for metrics."""

    received: int = 0
    duplicates: int = 0
    batches: int = 0
    overflowed: int = 0
    reconnects: int = 0
    #: ticks written to the spool (``sync.tick_spool``) instead of being dropped
    spooled: int = 0


class WsFeedActor(AsyncQxActor):
    """Owns the Stream API connection of a run."""

    def __init__(
        self,
        *,
        threads: RunThreads,
        connect_stream: Callable[[], StreamClient],
        db_writer: ActorRef,
        engine: ActorRef,
        run_id: str,
        tick_max_interval_s: float,
        health: RunHealth | None = None,
        ticks_waiting: TicksWaiting | None = None,
        child_name: str | None = None,
        max_queued_ticks: int = MAX_QUEUED_TICKS,
        tick_spool: str | None = None,
    ) -> None:
        super().__init__(threads=threads, run_id=run_id, supervisor=engine, child_name=child_name)
        self._client = connect_stream()
        self._engine = engine
        self._tick_max_interval_s = tick_max_interval_s
        self._follow: asyncio.Task[None] | None = None
        self._queue: deque[PriceTick] = deque()
        # The batch with the DB writer, until acknowledged (sent again to a new writer if the
        # old one stopped without acknowledging it).
        self._in_flight: tuple[PriceTick, ...] | None = None
        self._db_writer_ref: ActorRef | None = db_writer
        self._connected = False
        self._recent = RecentTimes(RECENT_TICK_TIMES)
        # The silence watch: from the last of start, (re)connection and committed batch.
        self._silent_since: float | None = None
        self._quiet = False
        self._ticks_flowing = False
        self._watch: asyncio.TimerHandle | None = None
        # Fires when the DB writer kept a batch unacknowledged for the stale limit.
        self._ack_watch: asyncio.TimerHandle | None = None
        self._ticks_waiting = ticks_waiting
        self._max_queued = max_queued_ticks
        self._spill_batch = max(1, min(SPOOL_BATCH_TICKS, max_queued_ticks // 4))
        # The spool (opened at the start) and the spooled records in flight, if the batch with
        # the DB writer is some; ``_spool_acked``: the end of the last spooled batch acknowledged
        # (a committed batch confirms the records up to it).
        self._spool_path = tick_spool
        self._spool: TickSpool | None = None
        self._in_flight_chunk: SpoolChunk | None = None
        self._spool_acked: tuple[int, int] = (0, 0)
        # The batch with the DB writer is in the spool too (appended during an outage).
        self._in_flight_spooled = False
        # The writer kept the batch in flight unacknowledged for SPOOL_FLUSH_S (an outage).
        self._writer_late = False
        # With a spool: the writer's acknowledgement is late, or the next append of an outage.
        self._flush_timer: asyncio.TimerHandle | None = None
        self.counters = FeedCounters()
        self.gauges = FeedGauges()
        if health is not None:
            counters, gauges = self.counters, self.gauges
            health.register("feed", lambda: dataclasses.asdict(counters))
            health.register_gauges("feed", lambda: dataclasses.asdict(gauges))
        self._log = get_logger(run_id=run_id, actor="ws_feed")

    def on_start(self) -> None:
        super().on_start()
        if self._spool_path is None:
            return
        try:
            self._spool = TickSpool.open(self._spool_path, log=self._log)
        except OSError as exc:
            # Without it the feed works as without a spool: better than no feed.
            self._log.error("tick_spool_unavailable", path=self._spool_path, error=str(exc))
            return
        if self._spool.records:
            # Left by a run that ended during an outage: stored first, before any new tick.
            self._log.warning("tick_spool_found", path=self._spool_path, ticks=self._spool.records)
            self._send_batch()
        self._update_gauges()

    def on_stop(self) -> None:
        # release() cancelled the connection: what is queued goes to the DB writer, all of it
        # (the batch in flight is in its inbox already); during an outage, to the spool if
        # there is one, else (without a writer) to the Engine.
        if self._spooling():
            self._flush_held()
        held = list(self._queue)
        if self._db_writer_ref is None and self._in_flight is not None:
            if not self._in_flight_on_disk():
                held[:0] = self._in_flight
            self._in_flight = None
        flushed = len(held)
        if held:
            if self._db_writer_ref is not None:
                tell(self._db_writer_ref, StoreTicks(tuple(held), None))
            elif not self._spill(held):
                tell(self._engine, UnwrittenTicks(tuple(held)))
            self._queue.clear()
        if self._spool is not None:
            if self._spool.records:
                self._log.warning(
                    "tick_spool_kept", path=self._spool_path, ticks=self._spool.waiting
                )
            self._spool.close()
        counters = self.counters
        self._log.info(
            "ws_feed_stopped",
            received=counters.received,
            duplicates=counters.duplicates,
            batches=counters.batches,
            flushed_on_stop=flushed,
            overflowed=counters.overflowed,
            reconnects=counters.reconnects,
            spooled=counters.spooled,
        )
        super().on_stop()

    async def release(self) -> None:
        self._stop_watch()
        self._stop_ack_watch()
        self._stop_flush_timer()
        await super().release()

    def on_receive(self, message: Any) -> Any:
        match message:
            case StartStream():
                self._ticks_flowing = False
                if self._follow is not None and not self._follow.done():
                    return None  # it outlived a DB writer: the stream goes on
                self._follow = self.start_task(self._follow_stream(), name="ws-follow")
                self._silent_since = time.monotonic()
                self._arm_watch()
            case TicksStored(committed=committed):
                self._written(committed)
            case UseDbWriter(writer=writer):
                self._use_writer(writer)
            case _:
                self._log.warning("unknown_message", message=repr(message))
        return None

    # -- the connection ----------------------------------------------------------------------

    async def _follow_stream(self) -> None:
        """Follow the stream; an unexpected error is a dead child: the Engine restarts us."""
        try:
            await self._reconnect_forever()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            cause = f"{type(exc).__name__}: {exc}"
            self._log.error("ws_feed_crashed", error=cause)
            self.tell_supervisor(ChildFailed(self.child_name, ChildDied(self.child_name, cause)))

    async def _reconnect_forever(self) -> None:
        """Connect, stream, and on failure reconnect with capped, jittered backoff."""
        delay = BACKOFF_FIRST_S
        while True:
            self._connected = False
            try:
                await self._client.run(self._on_ticks, on_connected=self._on_connected)
            except StreamError as exc:
                if self._connected:  # it worked until now: the backoff starts over
                    delay = BACKOFF_FIRST_S
                self.counters.reconnects += 1
                self._stop_watch()  # a stream being reconnected is not silent
                tell(self._engine, StreamDown(exc))
                wait = delay * random.uniform(0.5, 1.5)
                self._log.info("stream_reconnect_scheduled", error=str(exc), delay_s=wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, BACKOFF_CAP_S)
            else:  # pragma: no cover - run() only returns by raising
                return

    def _on_connected(self) -> None:
        self._connected = True
        tell(self._engine, StreamUp())
        self._silent_since = time.monotonic()
        self._arm_watch()

    # -- ticks to the DB writer --------------------------------------------------------------

    def _on_ticks(self, ticks: list[PriceTick]) -> None:
        self.counters.received += len(ticks)
        if self._connected and ticks:
            # Staleness is about ticks received, whatever the DB writer does with them.
            self._silent_since = time.monotonic()
            if self._quiet:
                self._quiet = False
                tell(self._engine, TicksFlowing())
        fresh = self._recent.fresh(ticks)
        self.counters.duplicates += len(ticks) - len(fresh)
        if not fresh:
            return
        self._queue.extend(fresh)
        overflow = len(self._queue) - self._max_queued
        if overflow > 0:
            self._overflow(overflow)
        if self._in_flight is None:
            self._send_batch()
        if len(self._queue) >= self._spill_batch and self._spooling():
            self._flush_held()
        self._update_gauges()

    def _overflow(self, overflow: int) -> None:
        """The queue holds ``overflow`` ticks too many: the oldest go to the spool (a batch of
        them at once), or are dropped and counted without one."""
        if self._spool is not None:
            count = min(len(self._queue), max(overflow, self._spill_batch))
            spilled = [self._queue.popleft() for _ in range(count)]
            if self._spill(spilled):
                return
            self._queue.extendleft(reversed(spilled))
        for _ in range(overflow):
            self._queue.popleft()
        self.counters.overflowed += overflow
        self._log.error("tick_queue_overflow", dropped=overflow, bound=self._max_queued)

    def _spooling(self) -> bool:
        """Whether the feed is in an outage with a spool: no DB writer, or one that has not
        acknowledged its batch for :data:`SPOOL_FLUSH_S`."""
        return self._spool is not None and (self._db_writer_ref is None or self._writer_late)

    def _in_flight_on_disk(self) -> bool:
        """Whether the batch in flight is in the spool (read from it, or appended to it)."""
        return self._in_flight_chunk is not None or self._in_flight_spooled

    def _flush_held(self) -> None:
        """Append every tick held in memory to the spool (the queue keeps them if it fails)."""
        if self._spill(list(self._queue)):
            self._queue.clear()

    def _spill(self, ticks: list[PriceTick]) -> bool:
        """Append ``ticks`` to the spool (flushed and fsync'ed), after the batch in flight if
        it is not on disk yet; ``False`` without a spool or if it can't be written (the caller
        keeps them)."""
        spool = self._spool
        if spool is None:
            return False
        held = self._in_flight
        with_held = held is not None and not self._in_flight_on_disk()
        if with_held and held is not None:
            # The batch with (or left by) the writer is older than the queue: it goes first,
            # so that the spool stays in time order before the queue (an acknowledgement after
            # all only makes it stored twice, which the database ignores).
            ticks = [*held, *ticks]
        if not ticks:
            return True
        first = not spool.records
        try:
            spool.append(ticks)
        except OSError as exc:
            self._log.error(
                "tick_spool_write_failed", path=self._spool_path, ticks=len(ticks), error=str(exc)
            )
            return False
        if with_held:
            if self._db_writer_ref is None:
                self._in_flight = None  # nothing left to send again: the spool has it
            else:
                self._in_flight_spooled = True
        self.counters.spooled += len(ticks)
        log = self._log.warning if first else self._log.debug
        log("ticks_spooled", path=self._spool_path, ticks=len(ticks), waiting=spool.waiting)
        return True

    def _arm_flush_timer(self) -> None:
        self._stop_flush_timer()
        if self._spool is not None:
            self._flush_timer = self.call_later(SPOOL_FLUSH_S, self._on_flush_due)

    def _stop_flush_timer(self) -> None:
        _cancel(self._flush_timer)
        self._flush_timer = None

    def _on_flush_due(self) -> None:
        """:data:`SPOOL_FLUSH_S` passed with the batch unacknowledged (an outage starts) or
        since the last timed append of an outage: what is held goes to the spool."""
        self._flush_timer = None
        if self._db_writer_ref is not None:
            if self._in_flight is None:
                return
            if not self._writer_late:
                self._writer_late = True
                self._log.info("db_writer_late", waited_s=SPOOL_FLUSH_S, waiting=self._waiting())
        self._flush_held()
        self._update_gauges()
        self._arm_flush_timer()

    def _next_spooled(self) -> tuple[PriceTick, ...] | None:
        """The next batch of spooled records to send, if any are unsent."""
        spool = self._spool
        while spool is not None and spool.unread:
            chunk = spool.read(REPLAY_BATCH_TICKS)
            if chunk.ticks:
                self._in_flight_chunk = chunk
                return chunk.ticks
            self._spool_acked = (chunk.end, chunk.records_through)  # records that were no ticks
        return None

    def _spool_stored(self, committed: bool) -> None:
        """A batch was acknowledged: a committed one confirms the spooled records sent before
        it (and itself); the spool goes once all are stored."""
        chunk, self._in_flight_chunk = self._in_flight_chunk, None
        spool = self._spool
        if spool is None:
            return
        if chunk is not None:
            self._spool_acked = (chunk.end, chunk.records_through)
        if committed:
            spool.confirm(*self._spool_acked)
            if spool.records and spool.done:
                self._log.info("tick_spool_stored", path=self._spool_path, ticks=spool.records)
                spool.clear()
                self._spool_acked = (0, 0)

    def _send_batch(self) -> None:
        writer = self._db_writer_ref
        if writer is None:
            return
        batch = self._next_spooled()
        if batch is None:
            if not self._queue:
                return
            batch = tuple(self._queue)
            self._queue.clear()
        self._in_flight = batch
        self.counters.batches += 1
        tell(writer, StoreTicks(batch, self.actor_ref))
        self._stop_ack_watch()
        self._ack_watch = self.call_later(self._tick_max_interval_s, self._on_ack_overdue)
        self._arm_flush_timer()

    def _stop_ack_watch(self) -> None:
        _cancel(self._ack_watch)
        self._ack_watch = None

    def _on_ack_overdue(self) -> None:
        self._ack_watch = None
        if self._in_flight is None or self._db_writer_ref is None:
            return
        limit = self._tick_max_interval_s
        error = DatabaseBusyError(
            f"the DB writer acknowledged no tick batch for {limit:g} s "
            f"(sync.live_price_tick_max_interval_s); {self._waiting()} ticks wait in the feed"
        )
        self._log.warning("db_writer_unresponsive", waited_s=limit, waiting=self._waiting())
        self.tell_supervisor(ChildFailed(self.child_name, error))

    def _written(self, committed: bool) -> None:
        if not committed and self._in_flight is not None:
            # The writer failed with this batch and keeps it for the next writer, in memory
            # only: a database that refuses at once (down, full) answers before the spool's
            # second. The spool (if any) takes it now unless it has it, before anything newer,
            # so that a crash during the outage can't lose it (stored twice later, which the
            # database ignores).
            self._spill([])
        self._in_flight = None
        self._in_flight_spooled = False
        self._writer_late = False
        self._stop_flush_timer()
        self._spool_stored(committed)
        self._stop_ack_watch()
        if committed and not self._ticks_flowing:
            self._ticks_flowing = True
            tell(self._engine, TicksFlowing())
        self._send_batch()
        self._update_gauges()

    def _use_writer(self, writer: ActorRef | None) -> None:
        """The DB writer changes (``None``: none until the next)."""
        if writer is self._db_writer_ref:
            return
        self._db_writer_ref = writer
        self._writer_late = False
        if writer is None:
            self._stop_ack_watch()
            self._log.info("ws_feed_holds_ticks", waiting=self._waiting())
            if self._spool is not None:
                # An outage: what is held goes to disk now, then at least every SPOOL_FLUSH_S.
                self._flush_held()
                self._arm_flush_timer()
        else:
            self._log.info("ws_feed_new_db_writer", waiting=self._waiting())
            self._stop_flush_timer()
            # Synced again once the new writer has committed a batch.
            self._ticks_flowing = False
            batch, self._in_flight = self._in_flight, None
            if self._in_flight_on_disk():
                # sent again from the spool
                self._in_flight_chunk, self._in_flight_spooled = None, False
            elif batch is not None:
                self._queue.extendleft(reversed(batch))
            if self._spool is not None:
                # The records not known to be stored go (again) first: the database ignores a
                # tick time stored twice.
                self._spool.rewind()
                self._spool_acked = (0, 0)
            self._send_batch()
        self._update_gauges()

    def _waiting(self) -> int:
        """Received ticks held here in memory that no DB writer holds (the spool apart)."""
        held = self._db_writer_ref is None and not self._in_flight_on_disk()
        return len(self._queue) + (len(self._in_flight or ()) if held else 0)

    def _update_gauges(self) -> None:
        gauges = self.gauges
        gauges.queued_ticks = len(self._queue)
        gauges.unacknowledged_batches = int(self._in_flight is not None)
        if self._ticks_waiting is not None:
            self._ticks_waiting.in_feed = self._waiting()
            self._ticks_waiting.spooled = self._spool.waiting if self._spool is not None else 0

    # -- the silence watch -------------------------------------------------------------------

    def _arm_watch(self) -> None:
        self._stop_watch()
        if self._silent_since is None:
            return
        limit = self._tick_max_interval_s
        due = self._silent_since + (limit if self._quiet else limit / 2)
        self._watch = self.call_later(due - time.monotonic(), self._on_watch_due)

    def _stop_watch(self) -> None:
        _cancel(self._watch)
        self._watch = None

    def _on_watch_due(self) -> None:
        self._watch = None
        if self._silent_since is None:
            return
        silent_s = time.monotonic() - self._silent_since
        limit = self._tick_max_interval_s
        if silent_s >= limit:
            error = StaleFeedError(f"no tick for {limit:g} s (sync.live_price_tick_max_interval_s)")
            self._silent_since = None
            self.tell_supervisor(ChildFailed(self.child_name, error))
            return
        if not self._quiet and silent_s >= limit / 2:
            self._quiet = True
            tell(self._engine, FeedQuiet(limit / 2))
        self._arm_watch()


def _cancel(timer: asyncio.TimerHandle | None) -> None:
    """Cancel ``timer``, if set (the caller forgets it)."""
    if timer is not None:
        timer.cancel()
