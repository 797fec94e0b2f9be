"""PartitionLog.append_replica: a copy keeps the source's offsets and bytes, follows on from its
end or is refused, is durable when it returns, recovers from a crash; sealed logs refuse
producers but not copies."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from millstream.broker.storage.config import TopicConfig
from millstream.broker.storage.partition_log import PartitionLog
from millstream.errors import InvalidOffset, InvalidRequest, NotLeader
from millstream.records import check_batches, set_base_offset

from .support import append, batch, crash, offsets, read_all, segment_files

SMALL = TopicConfig(segment_bytes=4096, index_interval_bytes=512)


@pytest.fixture
async def source(tmp_path: Path) -> AsyncIterator[PartitionLog]:
    log = PartitionLog("t", 0, tmp_path / "source", SMALL)
    for i in range(12):
        await append(log, batch(3 + i % 4, tag=i))
    yield log
    await log.close()


@pytest.fixture
async def copy(tmp_path: Path) -> AsyncIterator[PartitionLog]:
    log = PartitionLog("t", 0, tmp_path / "copy", SMALL)
    yield log
    await log.close()


async def copy_all(source: PartitionLog, copy: PartitionLog, chunk: int = 700) -> None:
    while copy.log_end_offset < source.high_watermark:
        data = source.read(copy.log_end_offset, chunk)
        await copy.append_replica(data, check_batches(data))


async def test_a_copy_keeps_offsets_and_bytes(source: PartitionLog, copy: PartitionLog) -> None:
    await copy_all(source, copy)
    assert (copy.log_start_offset, copy.log_end_offset) == (0, source.log_end_offset)
    assert copy.high_watermark == source.high_watermark  # readable at once: it is fsynced
    assert source.read(0, 1 << 20) == copy.read(0, 1 << 20)  # not one byte rewritten
    assert len(segment_files(copy.directory)) > 1  # rolled by its own segment.bytes
    for offset in (0, 7, 20, copy.log_end_offset - 1):
        assert copy.read(offset, 100) == source.read(offset, 100)


async def test_a_copied_batch_must_follow_on(source: PartitionLog, copy: PartitionLog) -> None:
    first = source.read(0, 1)
    await copy.append_replica(first, check_batches(first))
    end = copy.log_end_offset
    again = first  # overlap: the same batch twice
    later = source.read(end + 10, 1)  # a gap
    assert check_batches(later)[0].base_offset > end
    for data in (again, later):
        with pytest.raises(InvalidOffset, match=f"log ends at {end}"):
            await copy.append_replica(data, check_batches(data))
    # A run whose second batch skips ahead is refused whole: nothing of it is written.
    two = bytearray(source.read(end, 1) + source.read(end, 1))
    set_base_offset(two, len(two) // 2, end + 100)
    with pytest.raises(InvalidOffset):
        await copy.append_replica(bytes(two), check_batches(bytes(two)))
    assert copy.log_end_offset == end and copy.size_bytes == len(first)
    with pytest.raises(InvalidRequest):
        await copy.append_replica(b"", [])


async def test_a_copy_starts_where_the_source_starts(tmp_path: Path) -> None:
    source = PartitionLog("t", 0, tmp_path / "source", SMALL)
    for i in range(20):
        await append(source, batch(5, tag=i))
    start = 35  # as if retention had removed what came before
    copy = PartitionLog("t", 0, tmp_path / "copy", SMALL, start_offset=start)
    try:
        assert (copy.log_start_offset, copy.log_end_offset, copy.high_watermark) == (35,) * 3
        data = source.read(start, 1 << 20)
        await copy.append_replica(data, check_batches(data))
        assert offsets(copy.read(start, 1 << 20)) == offsets(source.read(start, 1 << 20))
    finally:
        await copy.close()
        await source.close()
    reopened = PartitionLog("t", 0, tmp_path / "copy", SMALL, start_offset=0)  # has segments
    try:
        assert (reopened.log_start_offset, reopened.log_end_offset) == (35, 100)
    finally:
        await reopened.close()


async def test_a_crashed_copy_recovers_to_a_batch_boundary(
    source: PartitionLog, tmp_path: Path
) -> None:
    copy = PartitionLog("t", 0, tmp_path / "copy", SMALL)
    await copy_all(source, copy)
    end = copy.log_end_offset
    crash(copy)
    active = segment_files(tmp_path / "copy")[-1]
    size = os.path.getsize(active)
    with open(active, "ab") as torn:  # the start of a batch the crash cut short
        torn.write(source.read(0, 1)[:30])
    recovered = PartitionLog("t", 0, tmp_path / "copy", SMALL)
    try:
        assert recovered.log_end_offset == end  # the torn tail is gone, the rest is there
        assert [i.base_offset for i in read_all(recovered)] == [
            i.base_offset for i in read_all(source)
        ]
    finally:
        await recovered.close()
    assert os.path.getsize(active) == size


async def test_a_sealed_log_refuses_producers_not_copies(
    source: PartitionLog, copy: PartitionLog
) -> None:
    copy.seal(NotLeader("moved"))
    assert copy.sealed
    with pytest.raises(NotLeader, match="moved"):
        await append(copy, batch(1))
    await copy_all(source, copy)  # a copy being received is sealed, and still written
    copy.unseal()
    first, _ = await append(copy, batch(2))
    assert first == source.log_end_offset
