"""Copying partitions onto this broker: one task per move, fetching from its source broker.

Created and started by the HTTP app (``broker/http/app.py``), which gives it the HTTP side of
:class:`Source` (``broker/http/move_source.py``: the source's admin routes, with the token);
stopped when the app shuts down. It follows the :class:`~.node.ClusterNode`: every change of
moves or placement (:meth:`~.node.ClusterNode.on_change`) starts a task for a move that needs
one, stops the task of a move that is gone, and wakes the others so they see their new state.

A task, by the move's state (see :mod:`~millstream.broker.cluster.moves`):

- **copying**: fetch raw batches from the source at the copy's log end and append them with
  :meth:`~millstream.broker.storage.partition_log.PartitionLog.append_replica` (offsets
  kept, fsynced), paced by the move's throttle (:mod:`.throttle`). Once the copy reaches the
  source's high watermark it is *in sync* and long-polls the source for what comes next.
- **switching**: fence the source (it stops taking writes and answers its final log end,
  which is recorded), copy up to that offset, flush, then complete: the node serves the copy.
- **completed**: ask the source to drop its retired copy, then end.

Errors: a retriable one (a broker down or stopping) is retried with backoff and shown in the
progress; while copying, any other fails the move (the operator may start it again), except
that a damaged response or a source that does not know the partition yet (just started) gets
a few tries first. While
switching nothing fails the move: the partition is placed here and only this task can bring it
into service, so it keeps trying and reports why. A copy whose end does not fit the source's
log (retention removed what it needs next, or the source's log ends before it) starts over
from the source's log start; so does one whose next batch does not follow on.

A restart needs nothing: storage recovered the copy (a torn tail cut), the node replayed the
moves, and the tasks carry on from the copy's end. Not thread-safe: the event loop's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, Protocol, TypeVar

from millstream import errors
from millstream.broker.cluster.moves import Move, MoveState, PartitionKey
from millstream.broker.cluster.node import ClusterNode
from millstream.broker.cluster.throttle import Throttle, chunk_bytes
from millstream.broker.storage.log_manager import LogManager
from millstream.records import BatchInfo, check_batch, now_ms
from millstream.waits import wait_event

log = logging.getLogger(__name__)

T = TypeVar("T")

_BACKOFF_S: Final = (0.1, 5.0)
# Tries a copy gets over a damaged response or a source not yet serving before it fails.
_TRANSIENT_TRIES: Final = 5


@dataclass(frozen=True, slots=True)
class SourceChunk:
    """Whole batches from the source's log, and where its log starts and ends (readable)."""

    data: bytes
    log_start_offset: int
    high_watermark: int


class Source(Protocol):
    """The brokers partitions are copied from. Every method raises MillstreamError."""

    async def fetch(
        self,
        url: str,
        topic: str,
        partition: int,
        offset: int | None,
        max_bytes: int,
        wait_ms: int,
    ) -> SourceChunk:
        """Batches from ``offset`` (None: the log start), long-polling up to ``wait_ms``;
        OffsetOutOfRange if the log does not hold ``offset``."""
        ...

    async def fence(self, url: str, topic: str, partition: int, epoch: int, owner: int) -> int:
        """Stop the source's writes to the partition in favour of broker ``owner`` at topic
        epoch ``epoch``; its final log end."""
        ...

    async def release(self, url: str, topic: str, partition: int) -> None:
        """Let the source drop its retired copy."""
        ...


@dataclass(slots=True)
class Progress:
    """What the task of one move knows now; not stored (it starts again with the process)."""

    started: float  # monotonic
    bytes_copied: int = 0
    source_log_start_offset: int | None = None
    source_high_watermark: int | None = None
    in_sync: bool = False
    restarts: int = 0  # times the copy started over from the source's log start
    retries: int = 0
    error: str | None = None
    throttle: Throttle = field(default_factory=Throttle)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class Mover:
    def __init__(
        self,
        node: ClusterNode,
        logs: LogManager,
        source: Source,
        *,
        poll_wait_ms: int = 500,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._node = node
        self._logs = logs
        self._source = source
        self._poll_wait_ms = poll_wait_ms
        self._clock = clock
        self._tasks: dict[PartitionKey, asyncio.Task[None]] = {}
        self._progress: dict[PartitionKey, Progress] = {}
        self._started = False
        self._closed = False

    def start(self) -> None:
        """Resume the moves the node has, and follow its changes. On the event loop."""
        if not self._started:
            self._started = True
            self._node.on_change(self._sync)
        self._sync()

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def progress(self, key: PartitionKey) -> Progress | None:
        return self._progress.get(key)

    async def cancel(self, topic: str, partition: int) -> None:
        """Cancel a move (see ClusterNode.cancel_move) and wait for its task to end."""
        task = self._tasks.get((topic, partition))
        self._node.cancel_move(topic, partition)  # its listener stops the task
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        self._progress.pop((topic, partition), None)

    def _sync(self) -> None:
        if self._closed or not self._started:
            return
        moves = self._node.transfers.moves
        for key, move in moves.items():
            running = self._tasks.get(key)
            # A task that ended but whose done callback has not run yet counts as none: the
            # move may have been started again in between (a failed one, say).
            if (running is None or running.done()) and _needs_task(move):
                task = asyncio.get_running_loop().create_task(self._run(key), name=f"move {key}")
                self._tasks[key] = task
                task.add_done_callback(functools.partial(self._ended, key))
        for key, task in self._tasks.items():
            if key not in moves:
                task.cancel()
        for key in [k for k in self._progress if k not in moves and k not in self._tasks]:
            del self._progress[key]  # the move was forgotten (cancelled, or pruned when done)
        for progress in self._progress.values():
            progress.wake.set()

    def _ended(self, key: PartitionKey, task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if key not in self._node.transfers.moves:
            self._progress.pop(key, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("the task of the move of %s/%d died", *key, exc_info=task.exception())

    # --- one move --------------------------------------------------------------------------

    async def _run(self, key: PartitionKey) -> None:
        progress = self._progress.get(key)
        if progress is None:
            progress = self._progress[key] = Progress(self._clock())
        attempt = 0
        while True:
            progress.wake.clear()
            move = self._node.transfers.moves.get(key)
            if move is None or not _needs_task(move):
                return
            try:
                if move.state is MoveState.COPYING:
                    await self._copy(move, progress, until=None)
                elif move.state is MoveState.SWITCHING:
                    await self._switch(move, progress)
                else:
                    await self._release(move)
            except errors.MillstreamError as exc:
                attempt += 1
                progress.retries += 1
                progress.error = exc.message
                now = self._node.transfers.moves.get(key)
                if now != move:
                    continue  # the move changed meanwhile (cancelled, switched...): look again
                # A response damaged in transit, or a source still replaying its metadata at
                # start, says nothing lasting: a few more tries before the move fails.
                passing = isinstance(exc, errors.CorruptBatch | errors.NotFound)
                lasting = not exc.retriable and not (passing and attempt <= _TRANSIENT_TRIES)
                if move.state is MoveState.COPYING and lasting:
                    log.warning("move of %s/%d failed: %s", *key, exc.message)
                    self._node.update_move(key, state=MoveState.FAILED, error=exc.message)
                    return
                log.info("move of %s/%d: %s; trying again", *key, exc.message)
            except Exception as exc:  # a bug or the disk: keep the move alive and say why
                attempt += 1
                progress.retries += 1
                progress.error = f"unexpected error: {exc!r}"
                log.exception("move of %s/%d: unexpected error; trying again", *key)
            else:
                attempt = 0
                progress.error = None
                continue
            delay = min(_BACKOFF_S[1], _BACKOFF_S[0] * 2 ** min(attempt - 1, 10))
            await self._pause(progress, delay)

    async def _copy(self, move: Move, progress: Progress, until: int | None) -> None:
        """One step of the copy: a fetch, an append, the throttle's pause. The tail of a
        switching move (``until`` its final offset) is not throttled: the partition is
        unavailable until it is copied."""
        topic, partition = move.key
        copy = self._logs.held_log(topic, partition)
        offset = copy.log_end_offset
        url = self._node.broker_url(move.source)
        wait_ms = self._poll_wait_ms if until is None and progress.in_sync else 0
        rate = move.throttle_bytes_per_s if until is None else None
        started = self._clock()
        fetch = self._source.fetch(url, topic, partition, offset, chunk_bytes(rate), wait_ms)
        try:
            chunk = await (self._unless_woken(progress, fetch) if wait_ms else fetch)
        except errors.OffsetOutOfRange:
            await self._start_over(move, progress, url, offset)
            return
        if chunk is None:
            return  # woken: the move may have changed
        progress.source_log_start_offset = chunk.log_start_offset
        progress.source_high_watermark = chunk.high_watermark
        if chunk.data:
            infos = _check_copied(chunk.data)
            try:
                await copy.append_replica(chunk.data, infos)
            except errors.InvalidOffset:  # the next batch does not follow on: diverged
                await self._start_over(move, progress, url, offset)
                return
            progress.bytes_copied += len(chunk.data)
        progress.in_sync = copy.log_end_offset >= chunk.high_watermark
        pace = progress.throttle.delay(len(chunk.data), rate, started, self._clock())
        await self._pause(progress, pace)

    async def _start_over(self, move: Move, progress: Progress, url: str, offset: int) -> None:
        topic, partition = move.key
        head = await self._source.fetch(url, topic, partition, None, 1, 0)
        log.warning(
            "move of %s/%d: the copy's end %d does not fit the source's log (%d to %d); "
            "the copy starts over at %d",
            *(topic, partition, offset, head.log_start_offset, head.high_watermark),
            head.log_start_offset,
        )
        self._logs.reset_held(topic, partition, head.log_start_offset)
        progress.restarts += 1
        progress.in_sync = False

    async def _switch(self, move: Move, progress: Progress) -> None:
        topic, partition = move.key
        if move.final_offset is None:
            me, epoch = self._node.broker_id, move.epoch
            assert epoch is not None and me is not None
            url = self._node.broker_url(move.source)
            final = await self._source.fence(url, topic, partition, epoch, me)
            if self._node.transfers.moves.get(move.key) != move:
                return  # it changed while the source answered: look again
            move = self._node.update_move(move.key, final_offset=final)
            log.info("move of %s/%d: source fenced, its log ends at %d", topic, partition, final)
        assert move.final_offset is not None
        copy = self._logs.held_log(topic, partition)
        if copy.log_end_offset < move.final_offset:
            await self._copy(move, progress, until=move.final_offset)
            return
        if copy.log_end_offset > move.final_offset:
            url = self._node.broker_url(move.source)
            await self._start_over(move, progress, url, copy.log_end_offset)
            return
        await copy.flush()
        if self._node.transfers.moves.get(move.key) == move:
            self._node.complete_move(move.key, now_ms())
            progress.in_sync = True

    async def _release(self, move: Move) -> None:
        topic, partition = move.key
        try:
            url = self._node.broker_url(move.source)
            await self._source.release(url, topic, partition)
        except (errors.InvalidPlacement, errors.UnknownPartition, errors.MoveConflict) as exc:
            # Gone from the cluster, released already, or serving it again: nothing to drop.
            log.info("move of %s/%d: no retired copy to release (%s)", topic, partition, exc)
        if self._node.transfers.moves.get(move.key) == move:
            self._node.update_move(move.key, source_released=True)

    # --- waiting ---------------------------------------------------------------------------

    async def _unless_woken(self, progress: Progress, work: Awaitable[T]) -> T | None:
        """``work``'s result, or None if the move is woken first (``work`` is cancelled)."""
        task = asyncio.ensure_future(work)
        woken = asyncio.ensure_future(progress.wake.wait())
        try:
            await asyncio.wait({task, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return None if task.cancelled() else task.result()

    async def _pause(self, progress: Progress, seconds: float) -> None:
        if seconds > 0:
            await wait_event(progress.wake, seconds)


def _needs_task(move: Move) -> bool:
    if move.state is MoveState.COMPLETED:
        return not move.source_released
    return move.state is not MoveState.FAILED


def _check_copied(data: bytes) -> list[BatchInfo]:
    """The batches of a fetched chunk, each CRC-checked; CorruptBatch unless whole."""
    infos, position = [], 0
    while position < len(data):
        info = check_batch(data, position, deep=False)
        infos.append(info)
        position += info.size
    return infos
