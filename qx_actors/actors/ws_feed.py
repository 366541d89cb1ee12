"""The WS feed actor: follows last-price ticks over the Stream API and feeds the DB writer.

The stream client runs on the actor's own event-loop thread and reconnects by itself with
capped, jittered backoff; the Engine hears ``StreamUp`` / ``StreamDown`` and reports the
degraded flag. Ticks are batched: while one batch is being written, new ticks queue (bounded by
:data:`MAX_QUEUED_TICKS`; the oldest are dropped and counted if it ever overflows); the next
batch leaves as soon as the DB writer acknowledges the previous one. On stop, the connection is
cancelled and every tick still queued is handed to the DB writer before the actor ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
from collections import deque
from dataclasses import dataclass
from typing import Any

import pykka

from qx_actors.actors.base import QxActor, RunThreads
from qx_actors.actors.loop_thread import LoopThread
from qx_actors.actors.messages import StoreTicks, StreamDown, StreamUp, TicksStored
from qx_actors.config import QxConfig
from qx_actors.domain.values import PriceTick
from qx_actors.errors import StreamError
from qx_actors.lnmarkets.stream import StreamClient
from qx_actors.logs import get_logger

#: Ticks queued while a batch is written; beyond this the oldest are dropped (and counted).
MAX_QUEUED_TICKS = 200_000
#: Reconnect backoff: first delay, cap (seconds); each delay is jittered by ±50 %.
BACKOFF_FIRST_S = 0.1
BACKOFF_CAP_S = 10.0


@dataclass(frozen=True)
class StartStream:
    """Connect and subscribe (again): a running connection is dropped and re-established."""


@dataclass
class FeedCounters:
    """What the feed did, for metrics."""

    received: int = 0
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
    ) -> None:
        super().__init__(threads=threads)
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
        self.counters = FeedCounters()
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
        if self._queue:
            self._db_writer.tell(StoreTicks(tuple(self._queue), None))
            self._queue.clear()

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
        """Connect, stream, and on failure reconnect with capped, jittered backoff."""
        delay = BACKOFF_FIRST_S
        while True:
            try:
                await self._client.run(self._on_ticks, on_connected=self._on_connected)
            except StreamError as exc:
                self.counters.reconnects += 1
                self._tell_engine(StreamDown(exc))
                wait = delay * random.uniform(0.5, 1.5)
                self._log.info("stream_reconnect_scheduled", error=str(exc), delay_s=wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, BACKOFF_CAP_S)
            else:  # pragma: no cover - run() only returns by raising
                return
            if self._connected_once:
                delay = BACKOFF_FIRST_S
                self._connected_once = False

    _connected_once = False

    def _on_connected(self) -> None:
        self._connected_once = True
        self._tell_engine(StreamUp())

    def _on_ticks(self, ticks: list[PriceTick]) -> None:
        self.counters.received += len(ticks)
        self._queue.extend(ticks)
        overflow = len(self._queue) - MAX_QUEUED_TICKS
        if overflow > 0:
            for _ in range(overflow):
                self._queue.popleft()
            self.counters.overflowed += overflow
            self._log.error("tick_queue_overflow", dropped=overflow)
        if not self._writing:
            self._send_batch()

    def _send_batch(self) -> None:
        if not self._queue:
            return
        batch = tuple(self._queue)
        self._queue.clear()
        self._writing = True
        self.counters.batches += 1
        self._db_writer.tell(StoreTicks(batch, self.actor_ref))

    def _written(self) -> None:
        self._writing = False
        self._send_batch()

    def _tell_engine(self, message: Any) -> None:
        try:
            self._engine.tell(message)
        except pykka.ActorDeadError:
            pass
