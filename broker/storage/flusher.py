"""Group commit for one partition log: each fsync covers every append written before it starts.

Owned by :class:`~millstream.broker.storage.partition_log.PartitionLog`, one per partition.
The log writes on the event loop's thread and then awaits :meth:`Flusher.sync`; the flusher's
task runs one sync job at a time in a worker thread, so the loop keeps serving meanwhile:

- A waiter registered before a job starts is released when that job is done; waiters that
  arrive while a job runs share the next one. With N producers and fsync time T, each
  producer waits at most about 2T and the disk sees one fsync per T, not N.
- With ``flush.ms`` > 0 nobody waits: :meth:`Flusher.request` asks for a sync, which starts
  at most every ``flush.ms`` (a sync wanted with ``urgent`` skips that delay).
- Every ``checkpoint_interval_s`` (and on close) a job is prepared with ``checkpoint=True``:
  the log then also fsyncs its indexes and writes its recovery point.

If a job fails, the flusher stops and every waiter, now and later, gets StorageError: after
a failed fsync the kernel may have dropped the dirty pages, so nothing after it can be
acknowledged (the partition recovers from disk on restart).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

from millstream.errors import BrokerUnavailable, MillstreamError, StorageError

log = logging.getLogger(__name__)

CHECKPOINT_INTERVAL_S = 10.0


@dataclass(frozen=True, slots=True)
class SyncJob:
    run: Callable[[], None]  # the blocking part (fsyncs), run in a worker thread
    done: Callable[[], None]  # run on the loop once ``run`` succeeded


class Flusher:
    def __init__(
        self,
        name: str,
        prepare: Callable[[bool], SyncJob],
        *,
        interval_ms: int = 0,
        executor: Executor | None = None,
        checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S,
        on_sync: Callable[[float], None] | None = None,
    ) -> None:
        self.name = name
        self.interval_ms = interval_ms  # the log's flush.ms; may change at any time
        self.checkpoint_interval_s = checkpoint_interval_s
        self.fsync_count = 0  # sync jobs completed
        self.error: MillstreamError | None = None
        self._prepare = prepare
        self._executor = executor
        self._on_sync = on_sync  # told how long each sync job's disk work took, in seconds
        self._task: asyncio.Task[None] | None = None
        self._wanted = False
        self._urgent = False
        self._checkpoint = False
        self._stopped = False
        self._stop_error: MillstreamError = BrokerUnavailable(f"{name} is closed")
        self._waiting: list[asyncio.Future[None]] = []  # released by the next job to start
        self._idle: asyncio.Future[None] | None = None  # the task waits for work on this
        self._delay: asyncio.Future[None] | None = None  # ... and for flush.ms on this
        self._last_start = float("-inf")
        self._last_checkpoint: float | None = None
        self._on_idle: Callable[[], None] | None = None

    @property
    def busy(self) -> bool:
        """Whether the flusher's task exists (it may be using the log's descriptors)."""
        return self._task is not None

    def request(self, *, urgent: bool = False, checkpoint: bool = False) -> None:
        """Ask for a sync without waiting for it."""
        if self._stopped:
            return
        self._wanted = True
        self._urgent |= urgent
        self._checkpoint |= checkpoint
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)
        _release(self._idle)
        if self._urgent:
            _release(self._delay)

    async def sync(self, *, urgent: bool = False, checkpoint: bool = False) -> None:
        """Return once a sync that started after this call has completed."""
        if self.error is not None:
            raise self.error
        if self._stopped:
            raise self._stop_error
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        self.request(urgent=urgent, checkpoint=checkpoint)
        await waiter

    async def close(self) -> None:
        """Run a last sync with a checkpoint, then stop. Raises StorageError if it fails."""
        try:
            if not self._stopped:
                await self.sync(urgent=True, checkpoint=True)
        finally:
            if not self._stopped:
                self._stop(self._stop_error)
            if self._task is not None:
                await asyncio.shield(self._task)

    def abort(self, error: MillstreamError, on_idle: Callable[[], None]) -> None:
        """Stop now: fail every waiter with ``error``; call ``on_idle`` once no job runs."""
        self._stop(error)
        if self._task is None:
            on_idle()
        else:
            self._on_idle = on_idle

    def _stop(self, error: MillstreamError) -> None:
        self._stopped = True
        self._stop_error = error
        waiting, self._waiting = self._waiting, []
        _fail(waiting, error)
        _release(self._idle)
        _release(self._delay)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self._stopped:
                if not self._wanted:
                    self._idle = loop.create_future()
                    await self._idle
                    continue
                delay = self._last_start + self.interval_ms / 1000 - loop.time()
                if self.interval_ms > 0 and not self._urgent and delay > 0:
                    self._delay = loop.create_future()
                    timer = loop.call_later(delay, _release, self._delay)
                    try:
                        await self._delay
                    finally:
                        timer.cancel()
                    continue
                await self._sync_once(loop)
        finally:
            self._task = None
            if self._on_idle is not None:
                self._on_idle()

    async def _sync_once(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._last_checkpoint is None:
            self._last_checkpoint = loop.time()
        checkpoint = self._checkpoint or (
            loop.time() - self._last_checkpoint >= self.checkpoint_interval_s
        )
        self._wanted = self._urgent = self._checkpoint = False
        released, self._waiting = self._waiting, []
        self._last_start = loop.time()
        try:
            job = self._prepare(checkpoint)
            seconds = await loop.run_in_executor(self._executor, _timed, job.run)
        except Exception as exc:  # OSError mostly; anything else is as fatal here
            error = StorageError(f"fsync of {self.name} failed: {exc}")
            if not self._stopped:
                log.error("%s; refusing further writes until restart", error)
            self.error = error
            _fail(released, error)
            self._stop(error)
            return
        self.fsync_count += 1
        if self._on_sync is not None:
            self._on_sync(seconds)
        if checkpoint:
            self._last_checkpoint = self._last_start
        if self._stopped:
            _fail(released, self._stop_error)
            return
        job.done()
        for waiter in released:
            if not waiter.done():
                waiter.set_result(None)


def _release(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


def _fail(waiters: list[asyncio.Future[None]], error: MillstreamError) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_exception(error)


def _timed(run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started
