"""The sparse time index of one log segment: from a timestamp to where to start looking.

Owned by :class:`~millstream.broker.storage.segment.LogSegment`, which offers an entry at the
same points as the offset index (every ``index.interval.bytes``); rebuilt by recovery.

File ``<base>.timeindex``: a flat array of 12-byte entries, all big-endian, in append order::

    offset  size  field
         0     8  timestamp         largest batch maxTimestamp so far in the segment (i64, ms)
         8     4  relative offset   base offset of the batch where it was reached - base (u32)

An entry is written only when the running maximum grew since the last entry, so both fields
strictly increase. Invariant: every batch at or before an entry's offset has a max timestamp
no greater than the entry's timestamp. Hence :meth:`TimeIndex.lookup` can return the offset of
the last entry *below* the target: no batch before it can match, and the batch that does lies
before the next entry. Kept in memory like the offset index; same durability (see there).

Not thread-safe: used on the event loop's thread; ``fsync`` may run in a worker thread.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_left
from pathlib import Path
from typing import Final

from millstream.broker.storage.files import AppendFile
from millstream.broker.storage.offset_index import U32_MAX, CorruptIndex, check_increasing
from millstream.errors import MillstreamError

ENTRY: Final = struct.Struct(">qI")
ENTRY_SIZE: Final = ENTRY.size


class TimeIndex:
    __slots__ = ("_file", "_relative", "_timestamps", "base_offset")

    def __init__(self, path: Path, base_offset: int) -> None:
        self.base_offset = base_offset
        self._file = AppendFile(path)
        self._timestamps = array("q")
        self._relative = array("I")

    @classmethod
    def load(cls, path: Path, base_offset: int) -> TimeIndex:
        """The index in ``path`` (missing means empty); CorruptIndex if it cannot be right."""
        index = cls(path, base_offset)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return index
        if len(data) % ENTRY_SIZE:
            raise CorruptIndex(f"{path.name}: size {len(data)} is not a multiple of {ENTRY_SIZE}")
        for timestamp, relative in ENTRY.iter_unpack(data):
            index._timestamps.append(timestamp)
            index._relative.append(relative)
        check_increasing(path, index._timestamps, "timestamps")
        check_increasing(path, index._relative, "offsets")
        return index

    @property
    def path(self) -> Path:
        return self._file.path

    def __len__(self) -> int:
        return len(self._timestamps)

    @property
    def last_timestamp(self) -> int:
        """Timestamp of the last entry; -1 when there is none."""
        return self._timestamps[-1] if self._timestamps else -1

    def offsets(self) -> set[int]:
        """Relative offsets of every entry."""
        return set(self._relative)

    def maybe_append(self, timestamp: int, offset: int) -> None:
        """Record that ``timestamp`` is the running maximum at ``offset``, if it grew."""
        if self._timestamps and timestamp <= self._timestamps[-1]:
            return
        relative = offset - self.base_offset
        if self._relative and relative <= self._relative[-1]:
            raise MillstreamError(
                f"{self.path.name}: time index entry for offset {offset} is not after the last "
                f"entry (offset {self.base_offset + self._relative[-1]})"
            )
        if not 0 <= relative <= U32_MAX:
            raise MillstreamError(f"{self.path.name}: offset {offset} overflows")
        self._timestamps.append(timestamp)
        self._relative.append(relative)
        self._file.buffer(ENTRY.pack(timestamp, relative))

    def lookup(self, timestamp: int) -> int:
        """Offset of the last entry with a timestamp below ``timestamp``; else the base offset."""
        i = bisect_left(self._timestamps, timestamp)
        return self.base_offset + self._relative[i - 1] if i else self.base_offset

    def truncate_to(self, offset: int) -> None:
        """Drop every entry for ``offset`` and later."""
        keep = bisect_left(self._relative, offset - self.base_offset)
        if keep < len(self._relative):
            del self._timestamps[keep:]
            del self._relative[keep:]
            self._file.truncate(keep * ENTRY_SIZE)

    def clear(self) -> None:
        """Drop every entry, and whatever the file held."""
        del self._timestamps[:]
        del self._relative[:]
        self._file.truncate(0)

    def flush(self) -> None:
        self._file.flush()

    def fsync(self) -> None:
        self._file.fsync()

    def close(self) -> None:
        self._file.close()
