"""Decoding fetched batches: same records as the reference decoder, offsets filtered, edges."""

from __future__ import annotations

import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from millstream import errors
from millstream.client.decoding import decode_fetched
from millstream.client.models import ConsumerRecord
from millstream.records import (
    CRC_START,
    GZIP,
    TIMESTAMP_TYPE_BIT,
    BatchBuilder,
    decode_batch,
    iter_batches,
)

Rec = tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]], int]


def build(records: list[Rec], base_offset: int = 0, compression: int = 0) -> bytes:
    builder = BatchBuilder(compression)
    for value, key, headers, timestamp in records:
        builder.append(value, key, timestamp, headers)
    return builder.build(base_offset)


def reference(data: bytes, topic: str, partition: int, offset: int) -> list[ConsumerRecord]:
    return [
        ConsumerRecord(topic, partition, r.offset, r.timestamp, r.key, r.value, r.headers)
        for info in iter_batches(data)
        for r in decode_batch(data, info.position)
        if r.offset >= offset
    ]


records_strategy = st.lists(
    st.tuples(
        st.one_of(st.none(), st.binary(max_size=300)),
        st.one_of(st.none(), st.binary(max_size=80)),
        st.lists(
            st.tuples(st.text(max_size=5), st.one_of(st.none(), st.binary(max_size=10))),
            max_size=2,
        ),
        st.integers(min_value=0, max_value=2**41),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(records_strategy, st.integers(0, 10**12), st.integers(0, 45))
def test_matches_the_reference_decoder(records: list[Rec], base: int, skip: int) -> None:
    data = build(records, base)
    got, next_offset = decode_fetched(data, "t", 3, base + skip)
    assert got == reference(data, "t", 3, base + skip)
    assert next_offset == max(base + skip, base + len(records))


def test_long_varints_take_the_general_path() -> None:
    # Values over 8 KiB need three-byte lengths; thousands of records, two-byte offset deltas.
    big: list[Rec] = [(b"v" * 9000, b"k" * 9000, [], 1_000), (None, None, [], 0)]
    many: list[Rec] = [(b"%d" % i, None, [], 5_000_000 + i) for i in range(10_000)]
    for records in (big, many):
        data = build(records, 42)
        got, next_offset = decode_fetched(data, "t", 0, 0)
        assert got == reference(data, "t", 0, 0)
        assert next_offset == 42 + len(records)


def test_records_before_the_requested_offset_are_dropped() -> None:
    data = build([(b"a", None, [], 1), (b"b", None, [], 2), (b"c", None, [], 3)], 10)
    data += build([(b"d", None, [], 4)], 13)
    got, next_offset = decode_fetched(data, "t", 0, 12)
    assert [(r.offset, r.value) for r in got] == [(12, b"c"), (13, b"d")]
    assert next_offset == 14


def test_a_batch_cut_short_at_the_end_is_left_for_the_next_fetch() -> None:
    first = build([(b"a", None, [], 1)], 0)
    second = build([(b"b", None, [], 1)], 1)
    got, next_offset = decode_fetched(first + second[:-3], "t", 0, 0)
    assert [r.value for r in got] == [b"a"]
    assert next_offset == 1
    assert decode_fetched(second[:20], "t", 0, 1) == ([], 1)
    assert decode_fetched(b"", "t", 0, 7) == ([], 7)


def test_compressed_batches_are_decoded() -> None:
    records: list[Rec] = [(b"value %d" % i, b"k", [("h", b"1")], 100 + i) for i in range(50)]
    data = build(records, 5, compression=GZIP)
    got, next_offset = decode_fetched(data, "t", 1, 7)
    assert got == reference(data, "t", 1, 7)
    assert len(got) == 48
    assert next_offset == 55


def test_log_append_time_gives_every_record_the_batch_time() -> None:
    data = bytearray(build([(b"a", None, [], 1_000), (b"b", None, [], 2_000)]))
    data[22] |= TIMESTAMP_TYPE_BIT  # attributes is a big-endian int16 at offset 21
    data[17:21] = crc32c(bytes(data[CRC_START:])).to_bytes(4, "big")
    got, _ = decode_fetched(bytes(data), "t", 0, 0)
    assert [r.timestamp for r in got] == [2_000, 2_000]


def test_a_corrupt_batch_is_refused() -> None:
    data = bytearray(build([(b"hello", None, [], 1)]))
    data[-1] ^= 0xFF
    with pytest.raises(errors.CorruptBatch):
        decode_fetched(bytes(data), "t", 0, 0)
