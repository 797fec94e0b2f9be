"""Turning fetched raw batches into :class:`ConsumerRecord`s, a fetch response at a time.

Used by :mod:`~millstream.client.consumer` on every fetch. The format is the one described in
:mod:`millstream.records`, which checks each batch's CRC here (:func:`iter_batches`); this module
only decodes faster than :func:`millstream.records.decode_batch` for the consumer's sake: the
consumer aims at a million records a second, and at that rate each record may cost about a
microsecond of Python. So uncompressed batches are walked in one loop that reads the common
one- and two-byte varints inline and builds each record with ``tuple.__new__`` (no dataclass,
no ``__init__``); anything unusual (long varints, headers, compressed batches) takes the
general path. A fetch may start inside a batch: records before the requested offset are dropped.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from millstream.client.models import ConsumerRecord
from millstream.errors import CorruptBatch
from millstream.records import (
    COMPRESSION_MASK,
    HEADER,
    HEADER_SIZE,
    TIMESTAMP_TYPE_BIT,
    decode_batch,
    decode_varint,
    iter_batches,
)

_NO_HEADERS: Final[tuple[tuple[str, bytes | None], ...]] = ()


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
    next_offset = offset
    for info in iter_batches(data):
        if info.last_offset < offset:
            continue
        next_offset = info.last_offset + 1
        (base_offset, _len, _epoch, _magic, _crc, attributes, _delta, base_ts, max_ts) = (
            HEADER.unpack_from(data, info.position)[:9]
        )
        if attributes & COMPRESSION_MASK:
            for r in decode_batch(data, info.position):
                if r.offset >= offset:
                    ts = max_ts if attributes & TIMESTAMP_TYPE_BIT else r.timestamp
                    records.append(
                        ConsumerRecord(topic, partition, r.offset, ts, r.key, r.value, r.headers)
                    )
            continue
        start = len(records)
        try:
            _decode_plain(
                data,
                info.position + HEADER_SIZE,
                info.position + info.size,
                base_offset,
                base_ts,
                info.record_count,
                (topic, partition),
                records,
            )
        except IndexError:
            raise CorruptBatch("record data ends early") from None
        if base_offset < offset:  # a fetch starts inside its first batch: drop what precedes
            skip = start
            while skip < len(records) and records[skip].offset < offset:
                skip += 1
            del records[start:skip]
        if attributes & TIMESTAMP_TYPE_BIT:  # LogAppendTime: the batch's time is every record's
            records[start:] = [r._replace(timestamp=max_ts) for r in records[start:]]
    return records, next_offset


def _decode_plain(
    data: bytes,
    pos: int,
    end: int,
    base_offset: int,
    base_ts: int,
    count: int,
    where: tuple[str, int],
    out: list[ConsumerRecord],
) -> None:
    topic, partition = where
    # The hot loop: each varint is read inline when it fits in one byte (and for lengths and
    # offset deltas, two); zig-zag decoding is (n >> 1) ^ -(n & 1), so even bytes are >= 0.
    new, cls, append, varint = tuple.__new__, ConsumerRecord, out.append, decode_varint
    for _ in range(count):
        b = data[pos]
        c = data[pos + 1]
        if b < 0x80:
            pos += 1
            rec_end = pos + (b >> 1)
        elif c < 0x80:
            pos += 2
            rec_end = pos + (((b & 0x7F) | (c << 7)) >> 1)
        else:
            length, pos = varint(data, pos)
            rec_end = pos + length
        pos += 1  # record attributes: unused in v2
        b = data[pos]
        if b < 0x80:
            timestamp = base_ts + ((b >> 1) ^ -(b & 1))
            pos += 1
        else:
            delta, pos = varint(data, pos)
            timestamp = base_ts + delta
        b = data[pos]
        c = data[pos + 1]
        if b < 0x80:
            offset = base_offset + (b >> 1)
            pos += 1
        elif c < 0x80:
            offset = base_offset + (((b & 0x7F) | (c << 7)) >> 1)
            pos += 2
        else:
            delta, pos = varint(data, pos)
            offset = base_offset + delta
        b = data[pos]
        if b == 1:
            key = None
            pos += 1
        elif b < 0x80 and not b & 1:
            pos += 1
            key = data[pos : pos + (b >> 1)]
            pos += b >> 1
        else:
            key, pos = _read_bytes(data, pos)
        b = data[pos]
        c = data[pos + 1]
        if b == 1:
            value = None
            pos += 1
        elif b & 1:
            value, pos = _read_bytes(data, pos)
        elif b < 0x80:
            pos += 1
            value = data[pos : pos + (b >> 1)]
            pos += b >> 1
        elif c < 0x80:
            n = ((b & 0x7F) | (c << 7)) >> 1
            pos += 2
            value = data[pos : pos + n]
            pos += n
        else:
            value, pos = _read_bytes(data, pos)
        if data[pos] == 0:
            headers = _NO_HEADERS
            pos += 1
        else:
            headers, pos = _read_headers(data, pos)
        if pos != rec_end:
            raise CorruptBatch("record length does not match its fields")
        append(new(cls, (topic, partition, offset, timestamp, key, value, headers)))
    if pos != end:
        raise CorruptBatch(f"{end - pos} bytes follow the last record of the batch")


def _read_bytes(data: bytes, pos: int) -> tuple[bytes | None, int]:
    n, pos = decode_varint(data, pos)
    if n == -1:
        return None, pos
    if n < 0:
        raise CorruptBatch(f"negative field length {n}")
    return data[pos : pos + n], pos + n


def _read_headers(data: bytes, pos: int) -> tuple[tuple[tuple[str, bytes | None], ...], int]:
    count, pos = decode_varint(data, pos)
    headers = []
    for _ in range(count):
        raw_key, pos = _read_bytes(data, pos)
        value, pos = _read_bytes(data, pos)
        headers.append(((raw_key or b"").decode("utf-8", "replace"), value))
    return tuple(headers), pos
