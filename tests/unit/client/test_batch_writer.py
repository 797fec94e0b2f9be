"""The compiled batch writer produces what the reference decoder reads back, field for field."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from millstream.client.batch_writer import BatchWriter
from millstream.records import GZIP, NONE, check_batch, decode_batch

records = st.lists(
    st.tuples(
        st.one_of(st.none(), st.binary(max_size=200)),
        st.one_of(st.none(), st.binary(max_size=30)),
        st.integers(min_value=0, max_value=2**41),
        st.lists(
            st.tuples(st.text(max_size=8), st.one_of(st.none(), st.binary(max_size=8))),
            max_size=2,
        ),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200)
@given(records, st.sampled_from([NONE, GZIP]))
def test_reference_decoder_reads_what_the_writer_wrote(
    items: list[tuple[bytes | None, bytes | None, int, list[tuple[str, bytes | None]]]],
    compression: int,
) -> None:
    writer = BatchWriter(compression)
    for value, key, timestamp, headers in items:
        writer.append(value, key, timestamp, headers)
    raw = writer.build()
    info = check_batch(raw)  # CRC, framing, counts: what the broker checks
    assert info.record_count == len(writer) == len(items)
    got = decode_batch(raw)
    assert [(r.value, r.key, r.timestamp, list(r.headers)) for r in got] == items
    assert [r.offset for r in got] == list(range(len(items)))


def test_size_estimate_grows_with_records_and_bounds_the_batch() -> None:
    writer = BatchWriter()
    before = writer.size_estimate
    for _ in range(10):
        writer.append(b"x" * 100)
    assert writer.size_estimate > before + 1000
    assert len(writer.build()) <= writer.size_estimate


def test_an_empty_batch_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="empty"):
        BatchWriter().build()
