"""Turning fetched raw batches into :class:`ConsumerRecord`s, a fetch response at a time.

Used by :mod:`~millstream.client.consumer` on every fetch. Each batch's CRC is checked by
:func:`millstream.records.iter_batches`; the records inside are read by aiokafka's compiled
RecordBatch v2 reader, because the consumer aims at a million records a second and a
record decoded in Python costs about a microsecond on its own (``millstream.records`` stays
the reference decoder, and the tests hold the two to the same results). A fetch may start
inside a batch: records before the requested offset are dropped.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatch

from millstream.client.models import ConsumerRecord
from millstream.errors import CorruptBatch
from millstream.records import batch_size_at, iter_batches


@contextmanager
def _gc_paused() -> Iterator[None]:
    # A fetch response becomes tens of thousands of tuples at once, and the cyclic garbage
    # collector would scan them every 700 allocations; that costs a third of the decoding
    # time. None of them can be part of a cycle, so the collector sleeps for the duration of
    # one decode (no await inside, so no other coroutine runs) and the next collection, which
    # untracks them, happens once.
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def decode_fetched(
    data: bytes, topic: str, partition: int, offset: int
) -> tuple[list[ConsumerRecord], int]:
    """The records at or after ``offset`` in the whole batches of ``data``, and the offset after
    the last whole batch (``offset`` when there is none: an empty or cut-short response)."""
    with _gc_paused():
        return _decode_all(data, topic, partition, offset)


def _decode_all(
    data: bytes, topic: str, partition: int, offset: int
) -> tuple[list[ConsumerRecord], int]:
    records: list[ConsumerRecord] = []
    append, new, cls = records.append, tuple.__new__, ConsumerRecord
    next_offset = offset
    view = memoryview(data)
    for info in iter_batches(data):
        if info.last_offset < offset:
            continue
        next_offset = info.last_offset + 1
        batch = DefaultRecordBatch(view[info.position : info.position + info.size])
        try:
            # The reader applies LogAppendTime and decompresses; headers come as a list.
            for r in batch:
                if r.offset >= offset:
                    headers = tuple(r.headers) if r.headers else ()
                    append(
                        new(cls, (topic, partition, r.offset, r.timestamp, r.key, r.value, headers))
                    )
        except (CorruptRecordException, UnicodeDecodeError, ValueError) as exc:
            raise CorruptBatch(f"batch at offset {info.base_offset}: {exc}") from None
    return records, next_offset


def whole_batches_end(data: bytes) -> int:
    """Where the whole batches at the start of ``data`` end (0: not even one is complete)."""
    end = 0
    while (size := batch_size_at(data, end)) and end + size <= len(data):
        end += size
    return end
