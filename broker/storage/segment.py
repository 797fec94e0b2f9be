"""One log segment: a file of record batches from a base offset, with its two sparse indexes.

Owned by :class:`~millstream.broker.storage.partition_log.PartitionLog`, which appends to the
last (active) segment, reads any of them, and rolls to a new one; opened and checked by
:mod:`~millstream.broker.storage.recovery`. Files, ``<base>`` being the base offset as 20
zero-padded digits::

    <base>.log        RecordBatch v2 batches back to back, exactly as stored by append: no
                      file header, no padding. Base offsets are contiguous: each batch starts
                      at the previous batch's last offset + 1, the first at <base>.
    <base>.index      offset index (see offset_index)
    <base>.timeindex  time index (see time_index)

An index entry is added for a batch once ``index.interval.bytes`` of log have been written
since the last one (Kafka's rule), so lookups scan at most that many bytes of headers.

Appends use ``os.write`` on an ``O_APPEND`` descriptor: when ``append`` returns, the bytes are
in the kernel (durable after :meth:`LogSegment.fsync`). Reads use ``os.pread`` of a computed
byte range, so they share the descriptor with appends.

Thread-safety: not thread-safe. Everything runs on the event loop's thread, except ``fsync``,
which may run in a worker thread at the same time as appends (the kernel orders them).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from millstream.broker.storage.config import TopicConfig
from millstream.broker.storage.files import fdatasync, write_all
from millstream.broker.storage.offset_index import U32_MAX, CorruptIndex, OffsetIndex
from millstream.broker.storage.scan import iter_checked, iter_headers
from millstream.broker.storage.time_index import TimeIndex
from millstream.errors import CorruptBatch, StorageError
from millstream.records import BatchInfo

LOG_SUFFIX: Final = ".log"
INDEX_SUFFIX: Final = ".index"
TIME_INDEX_SUFFIX: Final = ".timeindex"


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}"


@dataclass(frozen=True, slots=True)
class SegmentRecovery:
    """What :meth:`LogSegment.recover` found."""

    checked_bytes: int  # bytes whose CRC was checked
    dropped_bytes: int  # bytes truncated from the tail
    reason: str  # why they were dropped, or why the indexes were rebuilt; "" if neither


class LogSegment:
    __slots__ = (
        "_bytes_since_index",
        "_fd",
        "_offset_index",
        "_time_index",
        "base_offset",
        "config",
        "created_ms",
        "directory",
        "failed",
        "largest_timestamp",
        "next_offset",
        "size",
    )

    def __init__(self, directory: Path, base_offset: int, fd: int, config: TopicConfig) -> None:
        # Use create() or open(); their callers establish the state fields below.
        self.directory = directory
        self.base_offset = base_offset
        self.config = config
        self._fd = fd
        name = segment_name(base_offset)
        self._offset_index = OffsetIndex(directory / (name + INDEX_SUFFIX), base_offset)
        self._time_index = TimeIndex(directory / (name + TIME_INDEX_SUFFIX), base_offset)
        self.size = 0
        self.next_offset = base_offset  # offset after the last batch
        self.largest_timestamp = -1  # largest batch maxTimestamp; -1 when empty
        self.created_ms = 0  # when the segment's age (segment.ms) starts
        self.failed = False  # a failed append could not be undone: refuse further appends
        self._bytes_since_index = 0

    @property
    def path(self) -> Path:
        return self.directory / (segment_name(self.base_offset) + LOG_SUFFIX)

    @classmethod
    def create(
        cls, directory: Path, base_offset: int, config: TopicConfig, now_ms: int
    ) -> LogSegment:
        """A new empty segment. Index files left by an older segment of that base go first."""
        name = segment_name(base_offset)
        (directory / (name + INDEX_SUFFIX)).unlink(missing_ok=True)
        (directory / (name + TIME_INDEX_SUFFIX)).unlink(missing_ok=True)
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND
        fd = os.open(directory / (name + LOG_SUFFIX), flags, 0o644)
        segment = cls(directory, base_offset, fd, config)
        segment.created_ms = now_ms
        return segment

    @classmethod
    def open(cls, directory: Path, base_offset: int, config: TopicConfig) -> LogSegment:
        """An existing segment, not yet usable: :meth:`recover` establishes its state."""
        path = directory / (segment_name(base_offset) + LOG_SUFFIX)
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
        segment = cls(directory, base_offset, fd, config)
        segment.size = os.fstat(fd).st_size
        return segment

    # --- recovery ------------------------------------------------------------------------

    def recover(self, trusted_end: int, now_ms: int) -> SegmentRecovery:
        """Establish state: trust the batches before ``trusted_end``, check the rest.

        Trusted batches are walked by header from the last index entry, repairing the index
        tail. The rest are CRC-checked and indexed; the first bad batch (torn, corrupt, or
        with an offset that does not follow) and everything after it are truncated. If the
        indexes or the trusted walk do not add up, the whole segment is checked instead.
        """
        reason = ""
        try:
            self._offset_index = OffsetIndex.load(
                self._offset_index.path, self.base_offset, self.size
            )
            self._time_index = TimeIndex.load(self._time_index.path, self.base_offset)
            _check_aligned(self._offset_index, self._time_index)
            if trusted_end > self.size:
                raise CorruptIndex(f"recovery point {trusted_end} is past the end ({self.size})")
            self._resume(trusted_end)
        except (CorruptIndex, CorruptBatch) as exc:
            reason = f"indexes rebuilt: {exc}"
            self._offset_index.clear()
            self._time_index.clear()
            trusted_end = 0
            self._resume(0)
        good = trusted_end
        try:
            for info in iter_checked(self._fd, trusted_end, self.size):
                if info.base_offset != self.next_offset:
                    raise CorruptBatch(
                        f"batch at position {info.position} has offset {info.base_offset}, "
                        f"expected {self.next_offset}"
                    )
                self._note_batch(info.position, info.size, info.base_offset, info.max_timestamp)
                self.next_offset = info.last_offset + 1
                good = info.position + info.size
        except CorruptBatch as exc:
            reason = str(exc)
        dropped = self.size - good
        if dropped:
            os.ftruncate(self._fd, good)
            self.size = good
        self._offset_index.flush()
        self._time_index.flush()
        self.created_ms = min(now_ms, self._first_timestamp(now_ms))
        return SegmentRecovery(good - trusted_end, dropped, reason)

    def _resume(self, end: int) -> None:
        """Derive the state at ``end`` from the indexes and a header walk after them."""
        self._offset_index.truncate_to_position(end)
        entry = self._offset_index.last_entry
        offset, position = entry if entry else (self.base_offset, 0)
        # Time entries are only made where offset entries are: later ones are left-overs.
        self._time_index.truncate_to(offset + 1 if entry else offset)
        self.largest_timestamp = self._time_index.last_timestamp
        self.next_offset = offset
        self._bytes_since_index = 0
        for header in iter_headers(self._fd, position, end):
            if header.base_offset != self.next_offset:
                raise CorruptBatch(
                    f"batch at position {header.position} has offset {header.base_offset}, "
                    f"expected {self.next_offset}"
                )
            self._note_batch(header.position, header.size, offset, header.max_timestamp)
            offset = self.next_offset = header.last_offset + 1

    def _first_timestamp(self, default: int) -> int:
        for header in iter_headers(self._fd, 0, self.size):
            return header.max_timestamp
        return default

    # --- appending ------------------------------------------------------------------------

    def append(self, buf: bytes | bytearray, infos: Sequence[BatchInfo], first_offset: int) -> None:
        """Write whole batches (offsets already assigned from ``first_offset``) at the end.

        One write call; on failure the file and indexes are cut back to where they were and
        StorageError is raised (``failed`` is set if even that did not work).
        """
        if self.failed:
            raise StorageError(f"{self.path} failed earlier and takes no more writes")
        start, saved = (
            self.size,
            (self.next_offset, self.largest_timestamp, self._bytes_since_index),
        )
        try:
            write_all(self._fd, buf)
            self.size = start + len(buf)
            offset = first_offset
            for info in infos:
                self._note_batch(start + info.position, info.size, offset, info.max_timestamp)
                offset += info.record_count
            self.next_offset = offset
            self._offset_index.flush()
            self._time_index.flush()
        except OSError as exc:
            self._undo(start, saved)
            raise StorageError(f"cannot append to {self.path}: {exc.strerror or exc}") from exc

    def _note_batch(self, position: int, size: int, base_offset: int, max_timestamp: int) -> None:
        if max_timestamp > self.largest_timestamp:
            self.largest_timestamp = max_timestamp
        if self._bytes_since_index >= self.config.index_interval_bytes:
            self._offset_index.append(base_offset, position)
            self._time_index.maybe_append(self.largest_timestamp, base_offset)
            self._bytes_since_index = 0
        self._bytes_since_index += size

    def _undo(self, size: int, saved: tuple[int, int, int]) -> None:
        try:
            os.ftruncate(self._fd, size)
            self._offset_index.truncate_to_position(size)
            self._time_index.truncate_to(saved[0])
        except OSError:
            self.failed = True
        self.size = size
        self.next_offset, self.largest_timestamp, self._bytes_since_index = saved

    def should_roll(self, size_of_next: int, now_ms: int) -> bool:
        """Whether ``size_of_next`` more bytes belong in a new segment (never if this is empty).

        Age counts from ``created_ms``: creation time, or for a segment found on disk its first
        batch's timestamp (at most the time it was opened), so producer clocks cannot make
        every append roll.
        """
        if not self.size:
            return False
        if self.size + size_of_next > min(self.config.segment_bytes, U32_MAX):
            return True
        return now_ms - self.created_ms >= self.config.segment_ms

    def truncate_to(self, position: int) -> None:
        """Cut the log at ``position`` (a batch boundary) and the indexes with it."""
        if position >= self.size:
            return
        os.ftruncate(self._fd, position)
        self.size = position
        try:
            self._resume(position)
        except CorruptBatch as exc:
            raise StorageError(f"{self.path}: cannot truncate at {position}: {exc}") from exc
        self._offset_index.flush()
        self._time_index.flush()

    # --- reading --------------------------------------------------------------------------

    def byte_range(
        self, offset: int, max_bytes: int, limit: int, *, at_least_one: bool = True
    ) -> tuple[int, int]:
        """Positions (start, end) of the whole batches to read from the one holding ``offset``.

        Only batches ending at or before ``limit`` (a batch boundary) count; at most
        ``max_bytes``, except that with ``at_least_one`` the first batch is always whole.
        (limit, limit) when no batch there holds ``offset`` or a later one.
        """
        try:
            for header in iter_headers(self._fd, self._offset_index.lookup(offset), limit):
                if header.last_offset >= offset:
                    break
            else:
                return limit, limit
            start = header.position
            if start + max_bytes >= limit:
                return start, limit
            end = self._boundary_before(start, start + max_bytes)
        except CorruptBatch as exc:
            raise StorageError(f"{self.path} is corrupt: {exc}") from exc
        if end == start and at_least_one:
            end = start + header.size
        return start, end

    def _boundary_before(self, start: int, target: int) -> int:
        """The last batch boundary at or before ``target`` (> start), from ``start`` on."""
        entry = self._offset_index.floor_by_position(target)
        position = entry[1] if entry and entry[1] > start else start
        for header in iter_headers(self._fd, position, self.size):
            if header.position + header.size > target:
                return header.position
        return self.size

    def read_range(self, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        data = os.pread(self._fd, end - start, start)
        if len(data) != end - start:
            raise StorageError(f"{self.path}: read {len(data)} of {end - start} bytes at {start}")
        return data

    def read(self, offset: int, max_bytes: int, *, max_position: int | None = None) -> bytes:
        """Whole batches from the one holding ``offset``: at most ``max_bytes``, at least one."""
        limit = self.size if max_position is None else min(max_position, self.size)
        return self.read_range(*self.byte_range(offset, max_bytes, limit))

    def find_offset_by_timestamp(self, timestamp: int, limit: int) -> int | None:
        """Base offset of the first batch (ending by ``limit``) with maxTimestamp >= timestamp."""
        if self.largest_timestamp < timestamp:
            return None
        start = self._offset_index.lookup(self._time_index.lookup(timestamp))
        try:
            for header in iter_headers(self._fd, start, limit):
                if header.max_timestamp >= timestamp:
                    return header.base_offset
        except CorruptBatch as exc:
            raise StorageError(f"{self.path} is corrupt: {exc}") from exc
        return None

    # --- durability and lifetime ------------------------------------------------------------

    def fileno(self) -> int:
        return self._fd

    def fsync(self, *, indexes: bool = True) -> None:
        """Make written batches (and index entries) durable. May run in a worker thread."""
        fdatasync(self._fd)
        if indexes:
            self._offset_index.fsync()
            self._time_index.fsync()

    def close(self) -> None:
        try:
            self._offset_index.close()
            self._time_index.close()
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def delete(self) -> None:
        """Close and remove the three files."""
        self.close()
        for path in (self.path, self._offset_index.path, self._time_index.path):
            path.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"LogSegment({self.path}, size={self.size}, next_offset={self.next_offset})"


def _check_aligned(offsets: OffsetIndex, times: TimeIndex) -> None:
    """Time entries are made only where offset entries are, and the first offset entry always
    gets one (the running maximum starts at -1): a lost time index shows up here."""
    if len(offsets) and not len(times):
        raise CorruptIndex(f"{times.path.name} is missing or empty")
    if not times.offsets() <= offsets.offsets():
        raise CorruptIndex(f"{times.path.name} does not match {offsets.path.name}")
