"""Walking the record batches of a log file: by header only, or checked by CRC.

Used by :mod:`~millstream.broker.storage.segment` to find a batch from the nearest index entry
and to derive a segment's state, and by its recovery to check batches written since the last
recovery point. Reads with ``os.pread``, so it never moves a file position and can share a
descriptor with appends. The file holds RecordBatch v2 batches back to back
(see :mod:`millstream.records`); only these header fields are read when walking::

    offset  size  field
         0     8  baseOffset
         8     4  batchLength       size of the batch - 12
        23     4  lastOffsetDelta   last offset - baseOffset
        35     8  maxTimestamp
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import Final, NamedTuple

from millstream.errors import CorruptBatch
from millstream.records import (
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAX_BATCH_SIZE,
    BatchInfo,
    batch_size_at,
    check_batch,
)

_PREFIX: Final = struct.Struct(">qi11xi8xq")
_PREFIX_SIZE: Final = _PREFIX.size  # 43
# Index entries are typically 4 KiB apart, so one block usually covers a whole walk.
_HEADER_BLOCK: Final = 16 * 1024
_CHECK_CHUNK: Final = 4 * 1024 * 1024


class BatchHeader(NamedTuple):
    position: int
    size: int
    base_offset: int
    last_offset: int
    max_timestamp: int


def iter_headers(fd: int, start: int, end: int) -> Iterator[BatchHeader]:
    """Headers of the batches between ``start`` and ``end``, both batch boundaries.

    Lengths are trusted but bounded: a batch that would cross ``end`` or is shorter than a
    header raises CorruptBatch, so a walk never loops or strays into the next batch's bytes.
    """
    position = start
    while position < end:
        block = os.pread(fd, min(_HEADER_BLOCK, end - position), position)
        i = 0
        while i + _PREFIX_SIZE <= len(block):
            base_offset, length, last_delta, max_timestamp = _PREFIX.unpack_from(block, i)
            size = length + LOG_OVERHEAD
            at = position + i
            if size < HEADER_SIZE or at + size > end:
                raise CorruptBatch(f"batch at position {at} has an impossible length {length}")
            yield BatchHeader(at, size, base_offset, base_offset + last_delta, max_timestamp)
            i += size
        if i == 0:
            raise CorruptBatch(f"{len(block)} bytes at position {position} are not a batch")
        position += i


def iter_checked(fd: int, start: int, end: int) -> Iterator[BatchInfo]:
    """Batches between ``start`` and ``end`` checked by records.check_batch(deep=False).

    Positions are file positions. Raises CorruptBatch, with the reason, at the first batch
    that is torn (cut short by ``end``), of impossible length, or fails its CRC or magic.
    """
    position = start
    want = _CHECK_CHUNK
    while position < end:
        chunk = memoryview(os.pread(fd, min(want, end - position), position))
        want = _CHECK_CHUNK
        i = 0
        while i < len(chunk):
            left_in_file = end - position - i
            if len(chunk) - i < LOG_OVERHEAD:
                if left_in_file < LOG_OVERHEAD:
                    raise CorruptBatch(f"{left_in_file} bytes at the end are a torn batch header")
                break
            size = batch_size_at(chunk, i)
            if size < HEADER_SIZE or size > MAX_BATCH_SIZE:
                raise CorruptBatch(f"batch length {size - LOG_OVERHEAD} is out of range")
            if size > left_in_file:
                raise CorruptBatch(f"torn batch: {size} bytes long, {left_in_file} written")
            if size > len(chunk) - i:
                want = max(want, size)
                break
            info = check_batch(chunk, i, deep=False)
            yield info._replace(position=position + i)
            i += size
        position += i
