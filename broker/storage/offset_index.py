"""The sparse offset index of one log segment: which file position holds a given offset.

Owned by :class:`~millstream.broker.storage.segment.LogSegment`, which adds an entry every
``index.interval.bytes`` of log; rebuilt by recovery when it cannot be trusted.

File ``<base>.index``: a flat array of 8-byte entries, all big-endian, in append order::

    offset  size  field
         0     4  relative offset   batch base offset - segment base offset (u32)
         4     4  position          byte position of that batch in <base>.log (u32)

Invariants: relative offsets and positions strictly increase, and every entry points at the
start of a batch. Entry offsets are batch base offsets, so an offset inside a batch is found
by scanning forward from the entry at or before it. The whole index is kept in memory (two
arrays, 8 bytes an entry as on disk) for bisection; new entries are buffered and written by
``flush``, and made durable only by ``fsync`` (when the recovery point advances): recovery
rebuilds whatever a crash left behind.

Not thread-safe: used on the event loop's thread; ``fsync`` may run in a worker thread.
"""

from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_left, bisect_right
from itertools import islice
from operator import lt
from pathlib import Path
from typing import Final

from millstream.broker.storage.files import AppendFile
from millstream.errors import MillstreamError

ENTRY: Final = struct.Struct(">II")
ENTRY_SIZE: Final = ENTRY.size
U32_MAX: Final = 0xFFFFFFFF


class CorruptIndex(ValueError):
    """An index file that cannot be right; recovery rebuilds it from the log."""


class OffsetIndex:
    __slots__ = ("_file", "_positions", "_relative", "base_offset")

    def __init__(self, path: Path, base_offset: int) -> None:
        self.base_offset = base_offset
        self._file = AppendFile(path)
        self._relative = array("I")
        self._positions = array("I")

    @classmethod
    def load(cls, path: Path, base_offset: int, log_size: int) -> OffsetIndex:
        """The index in ``path`` (missing means empty); CorruptIndex if it cannot be right."""
        index = cls(path, base_offset)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return index
        if len(data) % ENTRY_SIZE:
            raise CorruptIndex(f"{path.name}: size {len(data)} is not a multiple of {ENTRY_SIZE}")
        flat = array("I", data)
        if sys.byteorder == "little":
            flat.byteswap()
        index._relative = flat[0::2]
        index._positions = flat[1::2]
        check_increasing(path, index._relative, "offsets")
        check_increasing(path, index._positions, "positions")
        if index._positions and index._positions[-1] >= log_size:
            raise CorruptIndex(f"{path.name}: points past the end of the log ({log_size} bytes)")
        return index

    @property
    def path(self) -> Path:
        return self._file.path

    def __len__(self) -> int:
        return len(self._relative)

    @property
    def last_entry(self) -> tuple[int, int] | None:
        """(offset, position) of the last entry, if any."""
        if not self._relative:
            return None
        return self.base_offset + self._relative[-1], self._positions[-1]

    def offsets(self) -> set[int]:
        """Relative offsets of every entry."""
        return set(self._relative)

    def append(self, offset: int, position: int) -> None:
        relative = offset - self.base_offset
        if self._relative and relative <= self._relative[-1]:
            raise MillstreamError(
                f"{self.path.name}: index entry for offset {offset} is not after the last "
                f"entry (offset {self.base_offset + self._relative[-1]})"
            )
        if not 0 <= relative <= U32_MAX or not 0 <= position <= U32_MAX:
            raise MillstreamError(f"{self.path.name}: entry ({offset}, {position}) overflows")
        self._relative.append(relative)
        self._positions.append(position)
        self._file.buffer(ENTRY.pack(relative, position))

    def lookup(self, offset: int) -> int:
        """Position of the last entry at or before ``offset``; 0 when there is none."""
        i = bisect_right(self._relative, offset - self.base_offset)
        return self._positions[i - 1] if i else 0

    def floor_by_position(self, position: int) -> tuple[int, int] | None:
        """(offset, position) of the last entry at or before ``position``, if any."""
        i = bisect_right(self._positions, position)
        if not i:
            return None
        return self.base_offset + self._relative[i - 1], self._positions[i - 1]

    def truncate_to(self, offset: int) -> None:
        """Drop every entry for ``offset`` and later."""
        keep = bisect_right(self._relative, offset - self.base_offset - 1)
        if keep < len(self._relative):
            del self._relative[keep:]
            del self._positions[keep:]
            self._file.truncate(keep * ENTRY_SIZE)

    def truncate_to_position(self, position: int) -> None:
        """Drop every entry for a batch at ``position`` or later."""
        keep = bisect_left(self._positions, position)
        if keep < len(self._positions):
            del self._relative[keep:]
            del self._positions[keep:]
            self._file.truncate(keep * ENTRY_SIZE)

    def clear(self) -> None:
        """Drop every entry, and whatever the file held."""
        del self._relative[:]
        del self._positions[:]
        self._file.truncate(0)

    def flush(self) -> None:
        """Write buffered entries to the file (not durable until ``fsync``)."""
        self._file.flush()

    def fsync(self) -> None:
        self._file.fsync()

    def close(self) -> None:
        self._file.close()


def check_increasing(path: Path, values: array[int], what: str) -> None:
    if not all(map(lt, values, islice(values, 1, None))):
        raise CorruptIndex(f"{path.name}: {what} do not strictly increase")
