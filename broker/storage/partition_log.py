"""One partition: an ordered, durable sequence of record batches with offsets.

Created by :class:`~millstream.broker.storage.log_manager.LogManager` (one per partition) and
used by the HTTP layer to produce, fetch and long-poll. The directory holds the segments (see
:mod:`~millstream.broker.storage.segment`) and the recovery point (see
:mod:`~millstream.broker.storage.recovery`), which opening the log checks.

Offsets: ``log_start_offset`` (first kept; moves with retention) <= ``high_watermark`` (end
of what readers may see) <= ``log_end_offset`` (next offset to assign). With ``flush.ms`` 0 the
high watermark is the fsynced end, so a reader never sees a write that a crash could undo;
with ``flush.ms`` > 0 it is the written end.

Appends run synchronously up to and including the write, so they are applied in call order;
only the wait for durability yields. Durability comes from the
:class:`~millstream.broker.storage.flusher.Flusher` (group commit).

Two kinds of append:

- :meth:`PartitionLog.append` (producers): the log assigns offsets, rewriting each batch's
  ``baseOffset`` (the first 8 bytes, outside the CRC).
- :meth:`PartitionLog.append_replica` (a partition being copied from another broker): the
  batches keep the offsets they were given there. Invariant, enforced: the first batch starts
  at ``log_end_offset`` and each next one right after the one before (``baseOffset ==
  previous lastOffset + 1``), so a copy can only follow on, never overwrite, skip or
  reorder. It returns once the batches are fsynced, whatever ``flush.ms`` says.

A log may be *sealed* (:meth:`PartitionLog.seal`): producers' appends are then refused with
the error it was sealed with (a partition that moved to another broker keeps its log here,
read-only, until the new broker has copied the last of it).

Not thread-safe: every method runs on the event loop's thread (the constructor may run before
the loop does); fsyncs and file removals run in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from bisect import bisect_right
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from pathlib import Path

from millstream.broker.storage.config import TopicConfig
from millstream.broker.storage.files import fsync_dir
from millstream.broker.storage.flusher import Flusher, SyncJob
from millstream.broker.storage.recovery import RecoveryPoint, recover_log, write_recovery_point
from millstream.broker.storage.retention import SegmentStats, segments_to_delete
from millstream.broker.storage.segment import LogSegment
from millstream.errors import (
    BrokerUnavailable,
    InvalidOffset,
    InvalidRequest,
    MillstreamError,
    OffsetOutOfRange,
    RecordTooLarge,
    StorageError,
    UnknownTopic,
)
from millstream.records import (
    TIMESTAMP_TYPE_BIT,
    BatchInfo,
    batch_attributes,
    decode_batch,
    now_ms,
    set_base_offset,
)

log = logging.getLogger(__name__)


class PartitionLog:
    def __init__(
        self,
        topic: str,
        partition: int,
        directory: Path,
        config: TopicConfig,
        *,
        executor: Executor | None = None,
        on_sync: Callable[[float], None] | None = None,
        start_offset: int = 0,
    ) -> None:
        """Open (recovering) or create the log in ``directory``; blocking file work.

        ``on_sync`` is told the duration of each fsync job (for metrics). A log created in an
        empty directory starts at ``start_offset`` (a copy of a log whose start retention
        moved); an existing one starts where it does."""
        self.topic = topic
        self.partition = partition
        self.directory = directory
        self.name = f"{topic}-{partition}"
        self._config = config
        directory.mkdir(parents=True, exist_ok=True)
        self._segments = recover_log(directory, config, self.name, now_ms(), start_offset)
        self._bases = [segment.base_offset for segment in self._segments]
        active = self._segments[-1]
        self._next_offset = active.next_offset
        self._hw = active.next_offset  # recovery made everything there durable
        self._hw_segment = active
        self._hw_position = active.size
        self._unsynced: list[LogSegment] = []  # written since the last sync job started
        self._uncheckpointed: list[LogSegment] = []  # ... since the last checkpoint started
        self._in_job: tuple[LogSegment, ...] = ()
        self._dirs_unsynced = True  # a new directory or segment file is not durable yet
        self._closed = False
        self._failed: StorageError | None = None
        self._sealed: MillstreamError | None = None  # why producers' appends are refused
        self._data_waiters: dict[asyncio.Future[None], int] = {}
        self._deletions: set[asyncio.Future[None]] = set()
        self._floor = 0  # segments ending at or below it may go (delete_below)
        self.flusher = Flusher(
            f"partition {self.name}",
            self._prepare_sync,
            interval_ms=config.flush_ms,
            executor=executor,
            on_sync=on_sync,
        )

    # --- state --------------------------------------------------------------------------

    @property
    def config(self) -> TopicConfig:
        return self._config

    @property
    def log_start_offset(self) -> int:
        return self._bases[0]

    @property
    def log_end_offset(self) -> int:
        return self._next_offset

    @property
    def high_watermark(self) -> int:
        return self._hw

    @property
    def size_bytes(self) -> int:
        return sum(segment.size for segment in self._segments)

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def sealed(self) -> bool:
        return self._sealed is not None

    def seal(self, reason: MillstreamError) -> None:
        """Refuse producers' appends from now on, with ``reason``. Appends already written
        still complete (and :meth:`flush` waits for them), so once a sealed log is flushed
        its end is final. Replica appends are not affected."""
        self._sealed = reason

    def unseal(self) -> None:
        self._sealed = None

    def update_config(self, config: TopicConfig) -> None:
        """Apply changed settings; they take effect from the next append."""
        self._config = config
        for segment in self._segments:
            segment.config = config
        self.flusher.interval_ms = config.flush_ms
        if config.flush_ms > 0:
            active = self._segments[-1]
            self._advance_hw(self._next_offset, active, active.size)

    # --- appending ------------------------------------------------------------------------

    async def append(
        self, buf: bytes | bytearray, infos: list[BatchInfo], *, wait_durable: bool = True
    ) -> tuple[int, int]:
        """Append checked batches (``infos`` from records.check_batches(buf)).

        Returns (first offset, last offset). With ``flush.ms`` 0 and ``wait_durable``, returns
        once an fsync covers the write; otherwise once the write is in the kernel.
        """
        self._check_writable()
        if self._sealed is not None:
            raise self._sealed
        data, first, end = self._assign_offsets(buf, infos)
        await self._write(data, infos, first, end, wait_durable)
        return first, end - 1

    async def append_replica(
        self, buf: bytes | bytearray, infos: Sequence[BatchInfo]
    ) -> tuple[int, int]:
        """Append batches copied from this partition's log on another broker, offsets kept.

        ``infos`` from a CRC check of ``buf``. Raises InvalidOffset unless the batches follow
        on from ``log_end_offset`` without a gap or overlap; nothing is written then. Returns
        (first offset, last offset) once the batches are fsynced."""
        self._check_writable()
        first, end = self._check_follows_on(buf, infos)
        await self._write(buf, infos, first, end, wait_durable=True)
        await self.flush()  # flush.ms > 0 does not wait above; a copy is durable regardless
        return first, end - 1

    def _check_follows_on(
        self, buf: bytes | bytearray, infos: Sequence[BatchInfo]
    ) -> tuple[int, int]:
        expected = self._next_offset
        position = 0
        for info in infos:
            if info.position != position:
                raise InvalidRequest(f"batch infos do not match the buffer at {position}")
            if info.base_offset != expected:
                raise InvalidOffset(
                    f"partition {self.name}: a copied batch starts at offset {info.base_offset} "
                    f"but the log ends at {expected}; copied batches keep their offsets and "
                    "must follow on from the end"
                )
            position += info.size
            expected += info.record_count
        if not infos or position != len(buf):
            raise InvalidRequest("batch infos do not cover the buffer")
        return self._next_offset, expected

    async def _write(
        self,
        data: bytes | bytearray,
        infos: Sequence[BatchInfo],
        first: int,
        end: int,
        wait_durable: bool,
    ) -> None:
        """Write batches whose offsets ``first`` to ``end - 1`` are set; then the durability
        wait that ``flush.ms`` and ``wait_durable`` ask for."""
        now = now_ms()
        segment = self._segments[-1]
        if segment.should_roll(len(data), now):
            segment = self._roll(now)
        try:
            segment.append(data, infos, first)
        except StorageError as exc:
            if segment.failed:
                self._failed = exc
            raise
        self._next_offset = end
        if not self._unsynced or self._unsynced[-1] is not segment:
            self._unsynced.append(segment)
        if not self._uncheckpointed or self._uncheckpointed[-1] is not segment:
            self._uncheckpointed.append(segment)
        if self._config.flush_ms > 0:
            self._advance_hw(end, segment, segment.size)
            self.flusher.request()
        elif wait_durable:
            await self.flusher.sync()
        else:
            self.flusher.request()

    def _check_writable(self) -> None:
        if self._closed:
            raise BrokerUnavailable(f"partition {self.name} is closed")
        error = self._failed or self.flusher.error
        if error is not None:
            raise error

    def _assign_offsets(
        self, buf: bytes | bytearray, infos: Sequence[BatchInfo]
    ) -> tuple[bytearray, int, int]:
        """A copy of ``buf`` with each batch's base offset set; checks sizes and framing."""
        limit = self._config.max_message_bytes
        data = bytearray(buf)
        first = offset = self._next_offset
        position = 0
        for info in infos:
            if info.size > limit:
                raise RecordTooLarge(
                    f"a batch of {info.size} bytes is larger than max.message.bytes ({limit})"
                )
            if info.position != position:
                raise InvalidRequest(f"batch infos do not match the buffer at {position}")
            set_base_offset(data, position, offset)
            position += info.size
            offset += info.record_count
        if not infos or position != len(data):
            raise InvalidRequest("batch infos do not cover the buffer")
        return data, first, offset

    def _roll(self, now: int) -> LogSegment:
        try:
            segment = LogSegment.create(self.directory, self._next_offset, self._config, now)
        except OSError as exc:
            raise StorageError(f"partition {self.name}: cannot roll: {exc}") from exc
        self._segments.append(segment)
        self._bases.append(segment.base_offset)
        self._dirs_unsynced = True
        return segment

    def roll(self) -> int:
        """Start a new segment now, unless the active one is empty; returns its base offset
        (the log end). Whatever is appended next lies in segments after every earlier one."""
        self._check_writable()
        if self._segments[-1].size:
            self._roll(now_ms())
        return self._next_offset

    async def delete_below(self, offset: int) -> int:
        """Let go of every segment that ends at or below ``offset`` (whole segments, from the
        start, as retention does), once a recovery point covers them; returns how many went.
        The owner must no longer need the records: the floor is kept in memory only."""
        self._floor = max(self._floor, offset)
        await self.flusher.sync(urgent=True, checkpoint=True)
        return self.enforce_retention(now_ms())

    def maybe_roll(self, now_ms: int) -> bool:
        """Roll the active segment if segment.ms says it is old enough (and not empty)."""
        if self._closed or self._failed is not None:
            return False
        if not self._segments[-1].should_roll(0, now_ms):
            return False
        self._roll(now_ms)
        return True

    # --- durability ------------------------------------------------------------------------

    def _prepare_sync(self, checkpoint: bool) -> SyncJob:
        """Called by the flusher on the loop when a job starts: what that job covers."""
        synced, self._unsynced = tuple(self._unsynced), []
        active = self._segments[-1]
        end, position = self._next_offset, active.size
        directory, dirs = self.directory, self._dirs_unsynced
        self._dirs_unsynced = False
        point: RecoveryPoint | None = None
        indexed: tuple[LogSegment, ...] = ()
        if checkpoint:
            indexed, self._uncheckpointed = tuple(self._uncheckpointed), []
            point = RecoveryPoint(active.base_offset, position)
        self._in_job = synced + indexed

        def run() -> None:
            for segment in synced:
                segment.fsync(indexes=False)
            for segment in indexed:
                segment.fsync(indexes=True)
            if dirs:
                fsync_dir(directory)
                fsync_dir(directory.parent)
            if point is not None:
                write_recovery_point(directory, point)

        def done() -> None:
            self._in_job = ()
            self._advance_hw(end, active, position)

        return SyncJob(run, done)

    def _advance_hw(self, end: int, segment: LogSegment, position: int) -> None:
        if end <= self._hw:
            return
        self._hw, self._hw_segment, self._hw_position = end, segment, position
        for waiter, offset in self._data_waiters.items():
            if offset < end and not waiter.done():
                waiter.set_result(None)

    async def flush(self) -> None:
        """Return once everything appended so far is durable."""
        if self._hw < self._next_offset or self._unsynced:
            await self.flusher.sync(urgent=True)

    # --- reading --------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int) -> bytes:
        """Whole batches from the one holding ``offset``, below the high watermark.

        At most ``max_bytes``, but always at least one whole batch; continues into the next
        segments while ``max_bytes`` allows. b"" at the high watermark.
        """
        hw = self._hw
        if not self.log_start_offset <= offset <= hw:
            raise OffsetOutOfRange(
                f"offset {offset} is out of range for partition {self.name}: "
                f"valid offsets are {self.log_start_offset} to {hw}"
            )
        parts: list[bytes] = []
        remaining = max_bytes
        i = bisect_right(self._bases, offset) - 1
        while offset < hw and i < len(self._segments):
            segment = self._segments[i]
            limit = self._hw_position if segment is self._hw_segment else segment.size
            start, end = segment.byte_range(offset, remaining, limit, at_least_one=not parts)
            if end > start:
                parts.append(segment.read_range(start, end))
                remaining -= end - start
            if end < limit or segment is self._hw_segment or remaining <= 0:
                break
            i += 1
            offset = segment.next_offset
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def wait_for_data(self, offset: int, timeout: float) -> None:
        """Return once the high watermark passes ``offset``, on timeout, or on close."""
        if self._closed or self._hw > offset or timeout <= 0:
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._data_waiters[waiter] = offset
        timer = loop.call_later(timeout, _release, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            del self._data_waiters[waiter]

    def offset_for_timestamp(self, ts_ms: int) -> int:
        """Earliest offset whose record timestamp is >= ``ts_ms`` (as Kafka's ListOffsets);
        else the high watermark (the end of what can be read)."""
        hw = self._hw
        for segment in self._segments:
            if segment.base_offset >= hw:
                break
            limit = self._hw_position if segment is self._hw_segment else segment.size
            found = segment.find_offset_by_timestamp(ts_ms, limit)
            if found is not None:
                return self._first_record_at(found, ts_ms)
        return hw

    def _first_record_at(self, batch_offset: int, ts_ms: int) -> int:
        # The indexes find the batch; the record inside it takes a decode of that one batch.
        data = self.read(batch_offset, 1)
        if not data or batch_attributes(data) & TIMESTAMP_TYPE_BIT:  # LogAppendTime: one per batch
            return batch_offset
        for record in decode_batch(data):
            if record.timestamp >= ts_ms:
                return record.offset
        return batch_offset

    # --- retention and lifetime ------------------------------------------------------------

    def enforce_retention(self, now_ms: int) -> int:
        """Delete the segments retention allows; returns how many. Moves log_start_offset."""
        active = self._segments[-1]
        busy = {*self._unsynced, *self._uncheckpointed, *self._in_job}
        stats = [
            SegmentStats(
                segment.base_offset,
                segment.next_offset,
                segment.size,
                segment.largest_timestamp,
                deletable=segment is not active
                and segment.next_offset <= self._hw
                and segment not in busy,
            )
            for segment in self._segments
        ]
        count = segments_to_delete(stats, self._config, now_ms, self._floor)
        if any(segment is not active for segment in self._uncheckpointed):
            # Retention keeps segments written since the last checkpoint until one covers
            # them; an idle partition would never take one by itself, so ask for it now.
            self.flusher.request(checkpoint=True)
        if count:
            doomed = self._segments[:count]
            del self._segments[:count]
            del self._bases[:count]
            log.info("partition %s: retention deleted %d segment(s)", self.name, count)
            self._remove_later(doomed)
        return count

    def _remove_later(self, doomed: list[LogSegment]) -> None:
        # Segments already left the log, so a crash before removal only brings them back
        # until the next retention run. The recovery point may name one of them: renew it.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            _delete_segments(doomed)
            return
        future = loop.run_in_executor(None, _delete_segments, doomed)
        self._deletions.add(future)
        future.add_done_callback(self._deletions.discard)
        if not self._closed:
            self.flusher.request(checkpoint=True)

    async def close(self) -> None:
        """Final fsync and recovery point, then close the files. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._release_data_waiters()
        try:
            await self.flusher.close()
        except MillstreamError as exc:
            log.error("partition %s: closing without a final fsync: %s", self.name, exc)
        finally:
            if self._deletions:
                await asyncio.gather(*self._deletions, return_exceptions=True)
            self._close_segments()

    def delete(self, *, remove_files: bool = True) -> None:
        """Close at once without flushing (topic deletion): pending appends fail with
        UnknownTopic, long-polls return; the directory is removed if ``remove_files``."""
        self._closed = True
        self._release_data_waiters()
        self.flusher.abort(UnknownTopic(f"topic {self.topic} was deleted"), self._close_segments)
        if remove_files:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _release_data_waiters(self) -> None:
        for waiter in self._data_waiters:
            _release(waiter)

    def _close_segments(self) -> None:
        for segment in self._segments:
            try:
                segment.close()
            except OSError as exc:
                log.warning("partition %s: closing %s: %s", self.name, segment.path, exc)

    def __repr__(self) -> str:
        return (
            f"PartitionLog({self.name}, start={self.log_start_offset}, "
            f"hw={self._hw}, end={self._next_offset})"
        )


def _release(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _delete_segments(segments: list[LogSegment]) -> None:
    for segment in segments:
        try:
            segment.delete()
        except OSError as exc:
            log.warning("cannot delete %s: %s", segment.path, exc)
