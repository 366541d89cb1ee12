"""The WS feed actor: follows last-price ticks over the Stream API and feeds the DB writer.

The stream client runs on the actor's own event-loop thread and reconnects by itself with
capped, jittered backoff; the Engine hears ``StreamUp`` / ``StreamDown`` and reports the
degraded flag. A tick whose time was already received in this run (sent twice, or again after
a reconnect) is dropped here and counted. Ticks are batched: while one batch is being written,
new ticks queue (bounded by :data:`MAX_QUEUED_TICKS`; the oldest are dropped and counted if it
ever overflows); the next batch leaves as soon as the DB writer acknowledges the previous one.
On stop, the connection is cancelled and every tick still queued is handed to the DB writer
before the actor ends (``ws_feed_stopped`` logs the counters).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pykka

from qx_actors.actors.base import QxActor, RunThreads
from qx_actors.actors.loop_thread import LoopThread
from qx_actors.actors.messages import (
    ChildFailed,
    StoreTicks,
    StreamDown,
    StreamUp,
    TicksStored,
)
from qx_actors.config import QxConfig
from qx_actors.domain.values import PriceTick
from qx_actors.errors import ChildDied, StreamError
from qx_actors.lnmarkets.stream import StreamClient
from qx_actors.logs import get_logger

#: Ticks queued while a batch is written; beyond this the oldest are dropped (and counted).
MAX_QUEUED_TICKS = 200_000
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


@dataclass(frozen=True)
class StartStream:
    """Connect and subscribe (again): a running connection is dropped and re-established."""


@dataclass
class FeedGauges:
    """Current figures for the health probe (loop thread writes, the probe reads)."""

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


class WsFeedActor(QxActor):
    """Owns the Stream API connection of a run."""

    def __init__(
        self,
        *,
        threads: RunThreads,
        config: QxConfig,
        db_writer: pykka.ActorRef[Any],
        engine: pykka.ActorRef[Any],
        run_id: str,
        child_name: str | None = None,
    ) -> None:
        super().__init__(threads=threads, run_id=run_id, supervisor=engine, child_name=child_name)
        exchange = config.exchange
        self._client = StreamClient(
            exchange.stream_url,
            heartbeat_interval_s=exchange.heartbeat_interval_s,
            disconnect_timeout_s=exchange.disconnect_timeout_s,
            open_timeout_s=max(exchange.disconnect_timeout_s, 1.0),
        )
        self._db_writer = db_writer
        self._engine = engine
        self._loop = LoopThread(f"qx-ws-{run_id}")
        self._task: concurrent.futures.Future[None] | None = None
        # Owned by the loop thread (and by on_stop once the loop's tasks are cancelled).
        self._queue: deque[PriceTick] = deque()
        self._writing = False
        self._connected = False
        self._recent = RecentTimes(RECENT_TICK_TIMES)
        self.counters = FeedCounters()
        self.gauges = FeedGauges()
        self._log = get_logger(run_id=run_id, actor="ws_feed")

    def on_start(self) -> None:
        super().on_start()
        self._loop.start()
        self.threads.add(self._loop.thread)

    def on_stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._loop.stop()
        # The loop is gone: what is queued is ours to hand over, all of it, before we end.
        flushed = len(self._queue)
        if self._queue:
            _tell(self._db_writer, StoreTicks(tuple(self._queue), None))
            self._queue.clear()
        counters = self.counters
        self._log.info(
            "ws_feed_stopped",
            received=counters.received,
            duplicates=counters.duplicates,
            batches=counters.batches,
            flushed_on_stop=flushed,
            overflowed=counters.overflowed,
            reconnects=counters.reconnects,
        )
        super().on_stop()

    def on_receive(self, message: Any) -> Any:
        match message:
            case StartStream():
                if self._task is not None:
                    self._task.cancel()
                self._task = self._loop.submit(self._follow())
            case TicksStored():
                self._loop.call_soon(self._written)
            case _:
                self._log.warning("unknown_message", message=repr(message))
        return None

    # -- loop thread -------------------------------------------------------------------------

    async def _follow(self) -> None:
        """Follow the stream; an unexpected error is a dead child: the Engine restarts us."""
        try:
            await self._reconnect_forever()
        except Exception as exc:
            cause = f"{type(exc).__name__}: {exc}"
            self._log.error("ws_feed_crashed", error=cause)
            _tell(self._engine, ChildFailed(self.child_name, ChildDied(self.child_name, cause)))
            raise

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
                self._tell_engine(StreamDown(exc))
                wait = delay * random.uniform(0.5, 1.5)
                self._log.info("stream_reconnect_scheduled", error=str(exc), delay_s=wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, BACKOFF_CAP_S)
            else:  # pragma: no cover - run() only returns by raising
                return

    def _on_connected(self) -> None:
        self._connected = True
        self._tell_engine(StreamUp())

    def _on_ticks(self, ticks: list[PriceTick]) -> None:
        self.counters.received += len(ticks)
        fresh = [tick for tick in ticks if self._recent.add(tick.time)]
        self.counters.duplicates += len(ticks) - len(fresh)
        if not fresh:
            return
        self._queue.extend(fresh)
        overflow = len(self._queue) - MAX_QUEUED_TICKS
        if overflow > 0:
            for _ in range(overflow):
                self._queue.popleft()
            self.counters.overflowed += overflow
            self._log.error("tick_queue_overflow", dropped=overflow)
        if not self._writing:
            self._send_batch()
        self.gauges.queued_ticks = len(self._queue)

    def _send_batch(self) -> None:
        if not self._queue:
            return
        batch = tuple(self._queue)
        self._queue.clear()
        self._writing = True
        self.gauges.unacknowledged_batches = 1
        self.counters.batches += 1
        _tell(self._db_writer, StoreTicks(batch, self.actor_ref))

    def _written(self) -> None:
        self._writing = False
        self.gauges.unacknowledged_batches = 0
        self._send_batch()
        self.gauges.queued_ticks = len(self._queue)

    def _tell_engine(self, message: Any) -> None:
        _tell(self._engine, message)


def _tell(ref: pykka.ActorRef[Any], message: Any) -> None:
    # A dead peer means the run is ending: nobody is left to hear it.
    with contextlib.suppress(pykka.ActorDeadError):
        ref.tell(message)
