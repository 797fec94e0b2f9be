"""RecordBatch v2: our encoder and decoder against each other and against kafka-python's."""

from __future__ import annotations

import pytest
from crc32c import crc32c
from hypothesis import given
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from millstream import records
from millstream.errors import CorruptBatch

TS = 1_700_000_000_000


def sample_batch(base_offset: int = 0) -> bytes:
    builder = records.BatchBuilder()
    builder.append(b"v1", b"k1", TS, [("trace", b"abc"), ("empty", None)])
    builder.append(None, None, TS + 5)
    builder.append(b"x" * 300, None, TS - 2)
    return builder.build(base_offset)


def test_round_trip_and_header_fields() -> None:
    raw = sample_batch(base_offset=42)
    info = records.check_batch(raw)
    assert info == records.BatchInfo(0, len(raw), 42, 3, TS + 5)
    assert info.last_offset == 44
    got = records.decode_batch(raw)
    assert got[0] == records.Record(42, TS, b"k1", b"v1", (("trace", b"abc"), ("empty", None)))
    assert got[1] == records.Record(43, TS + 5, None, None, ())
    assert got[2].timestamp == TS - 2 and got[2].value == b"x" * 300


def test_kafka_python_reads_what_we_build() -> None:
    batch = DefaultRecordBatch(sample_batch(base_offset=7))
    assert batch.validate_crc()
    got = [(m.offset, m.timestamp, m.key, m.value) for m in batch]
    assert got[:2] == [(7, TS, b"k1", b"v1"), (8, TS + 5, None, None)]


@pytest.mark.parametrize("compression", [0, 1])
def test_we_read_what_kafka_python_builds(compression: int) -> None:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=compression,
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for i in range(50):
        builder.append(i, TS + i, f"key{i}".encode(), f"value{i}".encode() * 20, [("h", b"v")])
    raw = bytes(builder.build())
    info = records.check_batch(raw)
    assert info.record_count == 50
    got = records.decode_batch(raw)
    assert got[49] == records.Record(49, TS + 49, b"key49", b"value49" * 20, (("h", b"v"),))


def test_gzip_batches_round_trip() -> None:
    builder = records.BatchBuilder(compression=records.GZIP)
    for _ in range(100):
        builder.append(b"same value " * 10)
    raw = builder.build()
    assert len(raw) < 100 * 110 / 5
    assert [r.value for r in records.decode_batch(raw)] == [b"same value " * 10] * 100


def test_set_base_offset_keeps_the_crc_valid() -> None:
    raw = bytearray(sample_batch())
    records.set_base_offset(raw, 0, 1_000_000)
    assert records.check_batch(raw).base_offset == 1_000_000
    assert records.decode_batch(raw)[2].offset == 1_000_002


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-1], "cut short"),
        (lambda b: b[:30], "less than a batch header"),
        (lambda b: b[:16] + b"\x01" + b[17:], "magic"),
        (lambda b: b[:70] + bytes([b[70] ^ 1]) + b[71:], "CRC"),
        (lambda b: b[:8] + (10).to_bytes(4, "big") + b[12:], "out of range"),
    ],
)
def test_corrupt_batches_are_refused(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CorruptBatch, match=message):
        records.check_batch(mutate(sample_batch()))


def _with_valid_crc(raw: bytearray) -> bytes:
    from crc32c import crc32c

    raw[17:21] = crc32c(bytes(raw[21:])).to_bytes(4, "big")
    return bytes(raw)


def test_a_batch_with_a_right_crc_but_wrong_framing_is_refused() -> None:
    raw = bytearray(sample_batch())
    raw[57:61] = (4).to_bytes(4, "big")  # claims 4 records, holds 3
    raw[23:27] = (3).to_bytes(4, "big")
    with pytest.raises(CorruptBatch, match="malformed record"):
        records.check_batch(_with_valid_crc(raw))
    # Shallow checks (used when reading back our own logs) trust the framing.
    assert records.check_batch(_with_valid_crc(raw), deep=False).record_count == 4


def test_count_must_match_last_offset_delta() -> None:
    raw = bytearray(sample_batch())
    raw[23:27] = (7).to_bytes(4, "big")
    with pytest.raises(CorruptBatch, match="lastOffsetDelta"):
        records.check_batch(_with_valid_crc(raw))


def test_check_batches_splits_and_refuses_any_bad_one() -> None:
    one, two = sample_batch(), sample_batch()
    infos = records.check_batches(one + two)
    assert [(i.position, i.size) for i in infos] == [(0, len(one)), (len(one), len(two))]
    with pytest.raises(CorruptBatch):
        records.check_batches(one + two[:-3])
    with pytest.raises(CorruptBatch, match="no record batch"):
        records.check_batches(b"")


def test_iter_batches_stops_at_a_partial_tail() -> None:
    one = sample_batch()
    assert [i.position for i in records.iter_batches(one + one + one[:40])] == [0, len(one)]


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_varints_round_trip(value: int) -> None:
    encoded = records.encode_varint(value)
    assert records.decode_varint(encoded, 0) == (value, len(encoded))


def test_truncated_varint_is_corrupt() -> None:
    with pytest.raises(CorruptBatch):
        records.decode_varint(b"\x80\x80", 0)


@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.binary(max_size=40)),
            st.one_of(st.none(), st.binary(max_size=300)),
            st.integers(min_value=0, max_value=2**41),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_any_records_round_trip(items: list[tuple[bytes | None, bytes | None, int]]) -> None:
    builder = records.BatchBuilder()
    for key, value, ts in items:
        builder.append(value, key, ts)
    raw = builder.build(base_offset=5)
    records.check_batch(raw)
    got = records.decode_batch(raw)
    assert [(r.key, r.value, r.timestamp) for r in got] == items
    assert [r.offset for r in got] == list(range(5, 5 + len(items)))


def test_offset_deltas_must_run_from_zero() -> None:
    builder = records.BatchBuilder()
    builder.append(b"a", timestamp=TS)
    builder.append(b"b", timestamp=TS)
    raw = bytearray(builder.build())
    # The second record's offsetDelta varint sits after its length, attributes and
    # timestampDelta (one byte each here): zig-zag 1 is 0x02; make it 5 (0x0A).
    first_len = raw[61] >> 1
    at = 61 + 1 + first_len + 1 + 1 + 1
    assert raw[at] == 0x02
    raw[at] = 0x0A
    with pytest.raises(CorruptBatch, match="offset delta"):
        records.check_batch(_with_valid_crc(raw))


def test_trailing_bytes_inside_a_batch_are_refused() -> None:
    raw = bytearray(sample_batch()) + b"\x00\x00\x00"
    raw[8:12] = (int.from_bytes(raw[8:12], "big") + 3).to_bytes(4, "big")
    with pytest.raises(CorruptBatch, match="unconsumed"):
        records.check_batch(_with_valid_crc(raw))


@pytest.mark.parametrize("length_byte", [0x03, 0x05, 0x7F])  # zig-zag -2, -3, -64
def test_any_negative_key_length_reads_as_null_as_in_kafka(length_byte: int) -> None:
    # The produce-time check (aiokafka's reader) and our decoder must agree on every batch.
    builder = records.BatchBuilder()
    builder.append(b"v", None, TS)
    raw = bytearray(builder.build())
    key_length_at = records.HEADER_SIZE + 4  # record length, attributes, ts and offset deltas
    assert raw[key_length_at] == 0x01  # -1: null
    raw[key_length_at] = length_byte
    raw[17:21] = crc32c(bytes(raw[records.CRC_START :])).to_bytes(4, "big")
    records.check_batch(bytes(raw))
    assert records.decode_batch(bytes(raw))[0].key is None
