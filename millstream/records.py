"""Kafka RecordBatch v2: the unit Millstream stores on disk and moves over the wire.

Used by the client (to build batches), by the broker's HTTP layer (to check what producers send
and to turn batches into JSON) and by storage (to recover logs). It does no I/O.

A batch, all integers big-endian (Kafka's ``DefaultRecordBatch``)::

    offset  size  field
         0     8  baseOffset            first offset; the broker rewrites it on append
         8     4  batchLength           bytes that follow this field (total size - 12)
        12     4  partitionLeaderEpoch
        16     1  magic                 always 2
        17     4  crc                   CRC-32C (Castagnoli) of bytes 21..end, unsigned
        21     2  attributes            bits 0-2 compression, 3 timestamp type,
                                        4 transactional, 5 control
        23     4  lastOffsetDelta       recordCount - 1 for batches a producer sends
        27     8  baseTimestamp         ms since the epoch; records store deltas from it
        35     8  maxTimestamp
        43     8  producerId            -1: no idempotent producer
        51     2  producerEpoch
        53     4  baseSequence
        57     4  recordCount
        61     -  records               compressed as a whole when bits 0-2 are set

Because the CRC starts at ``attributes``, the broker can assign offsets by rewriting the first
eight bytes without recomputing it. Each record (zig-zag varints as in protobuf)::

    length varint | attributes int8 | timestampDelta varlong | offsetDelta varint |
    keyLength varint (-1 = null) | key | valueLength varint (-1 = null) | value |
    headerCount varint | (headerKeyLength varint | key utf-8 | headerValueLength varint | value)*
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Final, NamedTuple

from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatch as CompiledBatch
from crc32c import crc32c
from kafka import codec

from millstream.errors import CorruptBatch

HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE: Final = HEADER.size  # 61
LOG_OVERHEAD: Final = 12  # baseOffset + batchLength: the bytes batchLength does not count
CRC_START: Final = 21
MAGIC: Final = 2
COMPRESSION_MASK: Final = 0x07
TIMESTAMP_TYPE_BIT: Final = 0x08
TRANSACTIONAL_BIT: Final = 0x10
CONTROL_BIT: Final = 0x20
# Kafka rejects batches above its own limit long before this; it bounds a hostile length field.
MAX_BATCH_SIZE: Final = 64 * 1024 * 1024

NONE, GZIP, SNAPPY, LZ4, ZSTD = range(5)
COMPRESSION_NAMES: Final = {"none": NONE, "gzip": GZIP, "snappy": SNAPPY, "lz4": LZ4, "zstd": ZSTD}

_BASE_OFFSET = struct.Struct(">q")

Headers = Sequence[tuple[str, bytes | None]]
Buffer = bytes | bytearray | memoryview


class Record(NamedTuple):
    # A NamedTuple rather than a frozen dataclass: consumers build millions of these a
    # second, and a tuple is created about twice as fast.
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


class BatchInfo(NamedTuple):
    """Where one checked batch sits in a buffer, and what the log and its indexes need of it."""

    position: int
    size: int
    base_offset: int
    record_count: int
    max_timestamp: int

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.record_count - 1


# --- varints -------------------------------------------------------------------------------


def _encode_varint_slow(value: int) -> bytes:
    n = (value << 1) ^ (value >> 63)
    n &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Sizes, deltas and lengths of ordinary records are small: look their encodings up.
_TABLE_MIN, _TABLE_MAX = -1, 1 << 14
_VARINTS: Final = [_encode_varint_slow(v) for v in range(_TABLE_MIN, _TABLE_MAX)]


def encode_varint(value: int) -> bytes:
    if _TABLE_MIN <= value < _TABLE_MAX:
        return _VARINTS[value + 1]
    return _encode_varint_slow(value)


def decode_varint(buf: Buffer, pos: int) -> tuple[int, int]:
    """Return (value, position after it). Raises CorruptBatch on a truncated or overlong varint."""
    try:
        b = buf[pos]
        if b < 0x80:
            return (b >> 1) ^ -(b & 1), pos + 1
        result = b & 0x7F
        shift = 7
        pos += 1
        while True:
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return (result >> 1) ^ -(result & 1), pos
            shift += 7
            if shift > 63:
                raise CorruptBatch("varint longer than 10 bytes")
    except IndexError:
        raise CorruptBatch("record data ends inside a varint") from None


# --- building --------------------------------------------------------------------------------


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class BatchBuilder:
    """Accumulates records and encodes them as one batch. Not thread-safe."""

    __slots__ = ("_base_ts", "_chunks", "_count", "_max_ts", "_size", "compression")

    def __init__(self, compression: int = NONE) -> None:
        self._chunks: list[bytes] = []
        self._count = 0
        self._base_ts = -1
        self._max_ts = -1
        self._size = HEADER_SIZE
        self.compression = compression

    def __len__(self) -> int:
        return self._count

    @property
    def size_estimate(self) -> int:
        """Bytes of the batch if built uncompressed now."""
        return self._size

    def append(
        self,
        value: bytes | None,
        key: bytes | None = None,
        timestamp: int | None = None,
        headers: Headers = (),
    ) -> None:
        if timestamp is None:
            timestamp = now_ms() if self._base_ts < 0 else max(now_ms(), self._base_ts)
        if self._base_ts < 0:
            self._base_ts = timestamp
        if timestamp > self._max_ts:
            self._max_ts = timestamp
        v = _VARINTS
        parts = [
            b"\x00",
            encode_varint(timestamp - self._base_ts),
            encode_varint(self._count),
        ]
        if key is None:
            parts.append(v[0])
        else:
            parts += (encode_varint(len(key)), key)
        if value is None:
            parts.append(v[0])
        else:
            parts += (encode_varint(len(value)), value)
        parts.append(encode_varint(len(headers)))
        for hkey, hvalue in headers:
            raw_key = hkey.encode()
            parts += (encode_varint(len(raw_key)), raw_key)
            if hvalue is None:
                parts.append(v[0])
            else:
                parts += (encode_varint(len(hvalue)), hvalue)
        body = b"".join(parts)
        length = encode_varint(len(body))
        self._chunks += (length, body)
        self._count += 1
        self._size += len(length) + len(body)

    def build(self, base_offset: int = 0) -> bytes:
        if not self._count:
            raise ValueError("an empty batch cannot be built")
        records = b"".join(self._chunks)
        if self.compression != NONE:
            records = _compress(self.compression, records)
        header = HEADER.pack(
            base_offset,
            HEADER_SIZE - LOG_OVERHEAD + len(records),
            -1,  # partitionLeaderEpoch
            MAGIC,
            0,  # crc, filled below
            self.compression,  # attributes: CreateTime, not transactional
            self._count - 1,
            self._base_ts,
            self._max_ts,
            -1,  # producerId
            -1,  # producerEpoch
            -1,  # baseSequence
            self._count,
        )
        crc = crc32c(records, crc32c(header[CRC_START:]))
        return b"".join((header[:17], crc.to_bytes(4, "big"), header[CRC_START:], records))


def encode_batch(
    records: Iterable[tuple[bytes | None, bytes | None]],
    *,
    timestamp: int | None = None,
    compression: int = NONE,
) -> bytes:
    """One batch of (key, value) pairs, all stamped ``timestamp`` (default: now)."""
    builder = BatchBuilder(compression)
    ts = now_ms() if timestamp is None else timestamp
    for key, value in records:
        builder.append(value, key, ts)
    return builder.build()


# --- checking and reading ------------------------------------------------------------------


def set_base_offset(buf: bytearray | memoryview, position: int, base_offset: int) -> None:
    _BASE_OFFSET.pack_into(buf, position, base_offset)


def batch_attributes(buf: Buffer, position: int = 0) -> int:
    """The attributes field of the batch at ``position`` (compression, timestamp type...)."""
    return int.from_bytes(buf[position + CRC_START : position + CRC_START + 2], "big")


def batch_size_at(buf: Buffer, position: int) -> int:
    """Total size of the batch starting at ``position``; 0 if its length field is not there."""
    if len(buf) - position < LOG_OVERHEAD:
        return 0
    return int.from_bytes(buf[position + 8 : position + 12], "big", signed=True) + LOG_OVERHEAD


def check_batch(buf: Buffer, position: int = 0, *, deep: bool = True) -> BatchInfo:
    """Check the batch at ``position`` and describe it, or raise CorruptBatch.

    Always checked: the length, magic, CRC, attributes and record count. With ``deep`` (what
    producers send), every record is decoded too, so a batch whose CRC is right but whose
    records do not add up (a buggy client) is refused before it reaches a log.
    """
    available = len(buf) - position
    if available < HEADER_SIZE:
        raise CorruptBatch(f"{available} bytes is less than a batch header ({HEADER_SIZE})")
    (
        base_offset,
        length,
        _epoch,
        magic,
        crc,
        attributes,
        last_delta,
        _base_ts,
        max_ts,
        _pid,
        _pepoch,
        _seq,
        count,
    ) = HEADER.unpack_from(buf, position)
    size = length + LOG_OVERHEAD
    if magic != MAGIC:
        raise CorruptBatch(f"magic byte is {magic}; only record batch v2 (magic 2) is accepted")
    if size < HEADER_SIZE or size > MAX_BATCH_SIZE:
        raise CorruptBatch(f"batch length {length} is out of range")
    if size > available:
        raise CorruptBatch(f"batch of {size} bytes is cut short at {available} bytes")
    end = position + size
    if crc32c(buf[position + CRC_START : end]) != crc:
        raise CorruptBatch("CRC-32C mismatch")
    if attributes & (TRANSACTIONAL_BIT | CONTROL_BIT):
        raise CorruptBatch("transactional and control batches are not supported")
    if attributes & COMPRESSION_MASK > ZSTD:
        raise CorruptBatch(f"unknown compression codec {attributes & COMPRESSION_MASK}")
    if count < 1 or last_delta != count - 1:
        raise CorruptBatch(f"record count {count} does not match lastOffsetDelta {last_delta}")
    if deep:
        _check_records(buf, position, end, base_offset, count)
    return BatchInfo(position, size, base_offset, count, max_ts)


def check_batches(buf: Buffer) -> list[BatchInfo]:
    """Check a produce body of one or more whole batches; any defect refuses all of them."""
    infos = []
    position = 0
    while position < len(buf):
        info = check_batch(buf, position)
        infos.append(info)
        position += info.size
    if not infos:
        raise CorruptBatch("no record batch in the request body")
    return infos


def iter_batches(buf: Buffer) -> Iterator[BatchInfo]:
    """Batches of a buffer read back from a log (CRC checked, framing trusted).

    Stops quietly at a partial batch at the end; raises CorruptBatch on a damaged one."""
    position = 0
    while True:
        size = batch_size_at(buf, position)
        if not size or position + size > len(buf):
            return
        info = check_batch(buf, position, deep=False)
        yield info
        position += info.size


def decode_batch(buf: Buffer, position: int = 0) -> list[Record]:
    """The records of the (already checked) batch at ``position``.

    This is the consumer's hot loop, so the common one-byte varints are decoded inline and
    everything else falls back to :func:`decode_varint`.
    """
    (base_offset, length, _e, _m, _c, attributes, _d, base_ts, _mt, _p, _pe, _s, count) = (
        HEADER.unpack_from(buf, position)
    )
    end = position + length + LOG_OVERHEAD
    data = _records_bytes(buf, position, end, attributes)
    records: list[Record] = []
    append = records.append
    varint = decode_varint
    pos = 0
    try:
        for _ in range(count):
            rec_len, pos = varint(data, pos)
            rec_end = pos + rec_len
            b = data[pos + 1]  # skip the record's attributes byte: unused in v2
            if b < 0x80:
                ts_delta = (b >> 1) ^ -(b & 1)
                pos += 2
            else:
                ts_delta, pos = varint(data, pos + 1)
            b = data[pos]
            if b < 0x80:
                offset_delta = b >> 1
                pos += 1
            else:
                offset_delta, pos = varint(data, pos)
            key, pos = _read_bytes(data, pos)
            value, pos = _read_bytes(data, pos)
            if data[pos] == 0:
                headers: tuple[tuple[str, bytes | None], ...] = ()
                pos += 1
            else:
                headers, pos = _read_headers(data, pos)
            if pos != rec_end:
                raise CorruptBatch("record length does not match its fields")
            append(Record(base_offset + offset_delta, base_ts + ts_delta, key, value, headers))
    except IndexError:
        raise CorruptBatch("record runs past the end of its batch") from None
    return records


def _read_headers(data: bytes, pos: int) -> tuple[tuple[tuple[str, bytes | None], ...], int]:
    count, pos = decode_varint(data, pos)
    headers = []
    for _ in range(count):
        raw_key, pos = _read_bytes(data, pos)
        value, pos = _read_bytes(data, pos)
        headers.append(((raw_key or b"").decode("utf-8", "replace"), value))
    return tuple(headers), pos


def _read_bytes(data: bytes, pos: int) -> tuple[bytes | None, int]:
    # Any negative length means null, as in Kafka's DefaultRecord (and aiokafka's reader,
    # which checks produced batches): a batch the broker took must read back the same way.
    b = data[pos]
    if b < 0x80:  # lengths below 64 take one byte; odd means negative
        if b & 1:
            return None, pos + 1
        n = b >> 1
        pos += 1
    else:
        n, pos = decode_varint(data, pos)
        if n < 0:
            return None, pos
    end = pos + n
    if end > len(data):
        raise CorruptBatch("record field runs past the end of its batch")
    return data[pos:end], end


def _records_bytes(buf: Buffer, position: int, end: int, attributes: int) -> bytes:
    data = bytes(buf[position + HEADER_SIZE : end])
    codec_id = attributes & COMPRESSION_MASK
    if codec_id == NONE:
        return data
    try:
        return _decompress(codec_id, data)
    except CorruptBatch:
        raise
    except Exception as exc:  # each codec library raises its own types
        raise CorruptBatch(f"cannot decompress batch: {exc}") from None


def _check_records(buf: Buffer, position: int, end: int, base_offset: int, count: int) -> None:
    # Every record is decoded, as a fetch will decode it, so that nothing acknowledged is
    # unreadable later. aiokafka's compiled reader does it about ten times faster than Python
    # (it also refuses bytes left over after the last record); we add the offset deltas.
    expected = base_offset
    try:
        for record in CompiledBatch(memoryview(buf)[position:end]):
            if record.offset != expected:
                raise CorruptBatch(
                    f"record {expected - base_offset} has offset delta "
                    f"{record.offset - base_offset}; deltas must run 0, 1, 2..."
                )
            expected += 1
    except (CorruptRecordException, UnicodeDecodeError, ValueError) as exc:
        raise CorruptBatch(f"malformed record: {exc}") from None
    if expected - base_offset != count:
        raise CorruptBatch(f"batch holds {expected - base_offset} records, not {count}")


def _compress(codec_id: int, data: bytes) -> bytes:
    if codec_id == GZIP:
        return codec.gzip_encode(data)  # type: ignore[no-any-return]
    if codec_id == SNAPPY and codec.has_snappy():
        return codec.snappy_encode(data)  # type: ignore[no-any-return]
    if codec_id == LZ4 and codec.has_lz4():
        return codec.lz4_encode(data)  # type: ignore[no-any-return]
    if codec_id == ZSTD and codec.has_zstd():
        return codec.zstd_encode(data)  # type: ignore[no-any-return]
    raise ValueError(f"compression codec {codec_id} is not available on this machine")


def _decompress(codec_id: int, data: bytes) -> bytes:
    if codec_id == GZIP:
        return codec.gzip_decode(data)  # type: ignore[no-any-return]
    if codec_id == SNAPPY and codec.has_snappy():
        return codec.snappy_decode(data)  # type: ignore[no-any-return]
    if codec_id == LZ4 and codec.has_lz4():
        return codec.lz4_decode(data)  # type: ignore[no-any-return]
    if codec_id == ZSTD and codec.has_zstd():
        return codec.zstd_decode(data)  # type: ignore[no-any-return]
    raise CorruptBatch(f"compression codec {codec_id} is not available on this broker")
