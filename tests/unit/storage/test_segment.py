"""LogSegment: appends, whole-batch reads, index spacing, rolling, truncation, failures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from millstream.broker.storage.config import TopicConfig
from millstream.broker.storage.segment import LogSegment, segment_name
from millstream.errors import StorageError
from millstream.records import check_batches, set_base_offset

from .support import T0, batch, file_size_limit, offsets

CONFIG = TopicConfig(index_interval_bytes=1024, segment_bytes=64 * 1024, segment_ms=60_000)


def put(segment: LogSegment, *bufs: bytes) -> int:
    """Append ``bufs`` as one write with offsets assigned; returns the first offset."""
    joined = b"".join(bufs)
    infos = check_batches(joined)
    data = bytearray(joined)
    first = offset = segment.next_offset
    for info in infos:
        set_base_offset(data, info.position, offset)
        offset += info.record_count
    segment.append(data, infos, first)
    return first


@pytest.fixture
def segment(tmp_path: Path) -> Iterator[LogSegment]:
    segment = LogSegment.create(tmp_path, 100, CONFIG, now_ms=T0)
    yield segment
    segment.close()


def test_files_are_named_by_base_offset(segment: LogSegment, tmp_path: Path) -> None:
    assert segment_name(100) == "00000000000000000100"
    assert segment.path == tmp_path / "00000000000000000100.log"
    assert segment.path.exists()


def test_append_writes_at_the_end_and_tracks_offsets(segment: LogSegment) -> None:
    one, two = batch(10), batch(5, timestamp=T0 + 7)
    assert put(segment, one) == 100
    assert put(segment, two) == 110
    assert segment.next_offset == 115
    assert segment.size == len(one) + len(two) == segment.path.stat().st_size
    assert segment.largest_timestamp == T0 + 7


def test_read_starts_at_the_batch_holding_the_offset(segment: LogSegment) -> None:
    for _ in range(5):
        put(segment, batch(10))
    assert offsets(segment.read(100, 10**6)) == [100, 110, 120, 130, 140]
    assert offsets(segment.read(125, 10**6)) == [120, 130, 140]
    assert offsets(segment.read(149, 10**6)) == [140]
    assert segment.read(150, 10**6) == b""


def test_read_respects_max_bytes_in_whole_batches(segment: LogSegment) -> None:
    size = len(batch(10))
    for _ in range(5):
        put(segment, batch(10))
    assert offsets(segment.read(100, 2 * size)) == [100, 110]
    assert offsets(segment.read(100, 3 * size - 1)) == [100, 110]
    assert offsets(segment.read(100, 1)) == [100]  # always one whole batch
    assert offsets(segment.read(130, 0)) == [130]


def test_read_stops_at_max_position(segment: LogSegment) -> None:
    put(segment, batch(10))
    end_of_first = segment.size
    put(segment, batch(10))
    assert offsets(segment.read(100, 10**6, max_position=end_of_first)) == [100]
    assert segment.read(110, 10**6, max_position=end_of_first) == b""


def test_a_multi_batch_append_is_one_write_and_readable_by_any_offset(
    segment: LogSegment,
) -> None:
    put(segment, *(batch(3, tag=i) for i in range(40)))
    assert segment.next_offset == 220
    for offset in range(100, 220, 7):
        first = offsets(segment.read(offset, 1))
        assert first == [100 + (offset - 100) // 3 * 3]


def test_index_entry_every_interval_bytes(segment: LogSegment) -> None:
    size = len(batch(10))  # about 1.2 KiB: each batch after the first gets an entry
    assert size > CONFIG.index_interval_bytes
    for _ in range(10):
        put(segment, batch(10))
    index = segment.path.with_suffix(".index")
    assert index.stat().st_size == 9 * 8
    small = LogSegment.create(segment.directory, 0, CONFIG, now_ms=T0)
    for _ in range(40):
        put(small, batch(1, value_size=10))  # ~80 bytes: an entry every ~13 batches
    assert 0 < small.path.with_suffix(".index").stat().st_size // 8 <= 3
    small.close()


def test_time_index_entries_follow_the_growing_maximum(segment: LogSegment) -> None:
    for ts in (T0, T0 + 50, T0 + 10, T0 + 100, T0 + 100, T0 + 90):
        put(segment, batch(10, timestamp=ts))
    assert segment.largest_timestamp == T0 + 100
    assert segment.find_offset_by_timestamp(T0, segment.size) == 100
    assert segment.find_offset_by_timestamp(T0 + 1, segment.size) == 110
    assert segment.find_offset_by_timestamp(T0 + 11, segment.size) == 110
    assert segment.find_offset_by_timestamp(T0 + 51, segment.size) == 130
    assert segment.find_offset_by_timestamp(T0 + 101, segment.size) is None


def test_should_roll_by_size_and_age(segment: LogSegment) -> None:
    assert not segment.should_roll(10**9, T0 + 10**9)  # an empty segment never rolls
    put(segment, batch(10))
    assert not segment.should_roll(1000, T0)
    assert segment.should_roll(CONFIG.segment_bytes, T0)
    assert not segment.should_roll(0, T0 + CONFIG.segment_ms - 1)
    assert segment.should_roll(0, T0 + CONFIG.segment_ms)


def test_truncate_to_restores_offsets_timestamps_and_indexes(segment: LogSegment) -> None:
    for i in range(10):
        put(segment, batch(10, timestamp=T0 + i))
    cut = len(batch(10)) * 4
    segment.truncate_to(cut)
    assert segment.size == cut == segment.path.stat().st_size
    assert segment.next_offset == 140
    assert segment.largest_timestamp == T0 + 3
    assert segment.path.with_suffix(".index").stat().st_size == 3 * 8
    assert put(segment, batch(10, timestamp=T0 + 50)) == 140
    assert offsets(segment.read(100, 10**6)) == [100, 110, 120, 130, 140]


def test_a_failed_write_leaves_the_segment_as_it_was(segment: LogSegment) -> None:
    put(segment, batch(10), batch(10))
    size, index_size = segment.size, segment.path.with_suffix(".index").stat().st_size
    with file_size_limit(size + 500), pytest.raises(StorageError, match="cannot append"):
        put(segment, batch(10), batch(10))  # part of it fits: the kernel writes that part
    assert segment.size == size == segment.path.stat().st_size
    assert segment.next_offset == 120
    assert segment.path.with_suffix(".index").stat().st_size == index_size
    assert not segment.failed
    assert put(segment, batch(10)) == 120
    assert offsets(segment.read(100, 10**6)) == [100, 110, 120]


def test_create_refuses_an_existing_segment(segment: LogSegment, tmp_path: Path) -> None:
    with pytest.raises(FileExistsError):
        LogSegment.create(tmp_path, 100, CONFIG, now_ms=T0)


def test_delete_removes_the_files(segment: LogSegment, tmp_path: Path) -> None:
    for _ in range(3):
        put(segment, batch(10))
    segment.fsync()
    segment.delete()
    assert list(tmp_path.iterdir()) == []
