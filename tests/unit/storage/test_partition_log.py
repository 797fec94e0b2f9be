"""PartitionLog: offsets, reads, the high watermark, long-polls, limits, retention, lifetime."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from itertools import pairwise
from pathlib import Path

import pytest

from millstream.broker.storage.config import TopicConfig
from millstream.broker.storage.partition_log import PartitionLog
from millstream.errors import (
    BrokerUnavailable,
    InvalidRequest,
    OffsetOutOfRange,
    RecordTooLarge,
    StorageError,
    UnknownTopic,
)
from millstream.records import check_batches, decode_batch, now_ms

from .support import T0, append, batch, batches, file_size_limit, offsets, read_all

SMALL = TopicConfig(segment_bytes=4096, index_interval_bytes=512)


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[PartitionLog]:
    log = PartitionLog("t", 0, tmp_path / "t" / "0", SMALL)
    yield log
    await log.close()


async def fill(log: PartitionLog, count: int, records: int = 10) -> None:
    for i in range(count):
        await append(log, batch(records, tag=i))


# --- appending ---------------------------------------------------------------------------


async def test_offsets_are_contiguous_across_batches_and_segments(log: PartitionLog) -> None:
    rng = random.Random(7)
    expected = 0
    for i in range(150):
        bufs = [batch(rng.randint(1, 12), tag=i) for _ in range(rng.randint(1, 3))]
        first, last = await append(log, *bufs)
        count = sum(info.record_count for info in check_batches(b"".join(bufs)))
        assert (first, last) == (expected, expected + count - 1)
        expected += count
    assert log.log_end_offset == log.high_watermark == expected
    assert log.segment_count > 5
    infos = list(read_all(log))
    assert infos[0].base_offset == 0
    for before, after in pairwise(infos):
        assert after.base_offset == before.last_offset + 1
    assert infos[-1].last_offset == expected - 1


async def test_records_read_back_with_their_offsets(log: PartitionLog) -> None:
    await append(log, batch(3, value_size=8, tag=1), batch(2, value_size=8, tag=2))
    records = [
        r
        for info in batches(log.read(0, 10_000))
        for r in decode_batch(log.read(info.base_offset, 1))
    ]
    assert [r.offset for r in records] == [0, 1, 2, 3, 4]
    assert records[3].value == (2).to_bytes(4, "big") * 2


async def test_a_batch_over_max_message_bytes_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    log = PartitionLog("t", 0, tmp_path, TopicConfig(max_message_bytes=1024))
    await append(log, batch(1))
    big = batch(20)
    assert len(big) > 1024
    with pytest.raises(RecordTooLarge, match=r"max\.message\.bytes"):
        await append(log, batch(1), big)
    assert (log.log_end_offset, log.size_bytes) == (1, len(batch(1)))
    await log.close()


async def test_infos_must_describe_the_buffer(log: PartitionLog) -> None:
    one, two = batch(1), batch(2)
    with pytest.raises(InvalidRequest):
        await log.append(one + two, check_batches(one))
    with pytest.raises(InvalidRequest):
        await log.append(b"", [])
    assert log.log_end_offset == 0


async def test_a_failed_write_is_undone_and_raises_storage_error(log: PartitionLog) -> None:
    await fill(log, 2)
    size = log.size_bytes
    with file_size_limit(size + 100), pytest.raises(StorageError):
        await append(log, batch(10))
    assert (log.log_end_offset, log.high_watermark, log.size_bytes) == (20, 20, size)
    assert await append(log, batch(10)) == (20, 29)
    assert [i.base_offset for i in read_all(log)] == [0, 10, 20]


async def test_closed_log_refuses_appends(log: PartitionLog) -> None:
    await log.close()
    with pytest.raises(BrokerUnavailable, match="closed"):
        await append(log, batch(1))


# --- reading -----------------------------------------------------------------------------


async def test_read_starts_at_the_batch_holding_the_offset(log: PartitionLog) -> None:
    await fill(log, 3)
    assert offsets(log.read(0, 10_000))[:3] == [0, 10, 20]
    assert offsets(log.read(15, 10_000))[0] == 10
    assert offsets(log.read(29, 10_000)) == [20]


async def test_read_max_bytes_in_whole_batches_and_at_least_one(log: PartitionLog) -> None:
    await fill(log, 3)
    size = len(batch(10))
    assert offsets(log.read(0, size)) == [0]
    assert offsets(log.read(0, 2 * size + 5)) == [0, 10]
    assert offsets(log.read(0, 1)) == [0]
    big = batch(100)
    await append(log, big)
    assert offsets(log.read(30, 10)) == [30]


async def test_read_spans_segments(log: PartitionLog) -> None:
    await fill(log, 12)  # ~1.2 KiB batches, 4 KiB segments: three batches a segment
    assert log.segment_count >= 4
    data = log.read(5, 1 << 20)
    assert offsets(data) == list(range(0, 120, 10))
    size = len(batch(10))
    assert offsets(log.read(25, 4 * size)) == [20, 30, 40, 50]


async def test_read_at_the_high_watermark_is_empty_and_beyond_is_out_of_range(
    log: PartitionLog,
) -> None:
    assert log.read(0, 100) == b""
    await fill(log, 2)
    assert log.read(20, 100) == b""
    with pytest.raises(OffsetOutOfRange, match="valid offsets are 0 to 20"):
        log.read(21, 100)
    with pytest.raises(OffsetOutOfRange):
        log.read(-1, 100)


async def test_reads_never_see_past_the_high_watermark(log: PartitionLog) -> None:
    await fill(log, 1)
    await append(log, batch(10), wait_durable=False)
    assert log.high_watermark == 10
    assert offsets(log.read(0, 1 << 20)) == [0]
    with pytest.raises(OffsetOutOfRange):
        log.read(15, 100)
    await log.flush()
    assert offsets(log.read(0, 1 << 20)) == [0, 10]


async def test_offset_for_timestamp(log: PartitionLog) -> None:
    for i, ts in enumerate((T0, T0 + 100, T0 + 50, T0 + 200, T0 + 300, T0 + 250)):
        await append(log, batch(10, timestamp=ts, tag=i))
    assert log.offset_for_timestamp(0) == 0
    assert log.offset_for_timestamp(T0 + 1) == 10
    assert log.offset_for_timestamp(T0 + 150) == 30
    assert log.offset_for_timestamp(T0 + 260) == 40
    assert log.offset_for_timestamp(T0 + 301) == log.high_watermark == 60


# --- waiting for data ----------------------------------------------------------------------


async def test_wait_for_data_wakes_on_append(log: PartitionLog) -> None:
    waiters = [asyncio.create_task(log.wait_for_data(0, timeout=10)) for _ in range(50)]
    await asyncio.sleep(0.01)
    assert not any(w.done() for w in waiters)
    started = time.monotonic()
    await append(log, batch(1))
    await asyncio.wait_for(asyncio.gather(*waiters), 2)
    assert time.monotonic() - started < 1


async def test_wait_for_data_times_out(log: PartitionLog) -> None:
    await fill(log, 1)
    started = time.monotonic()
    await log.wait_for_data(10, timeout=0.2)
    assert 0.15 <= time.monotonic() - started < 2
    started = time.monotonic()
    await log.wait_for_data(9, timeout=5)  # already there
    assert time.monotonic() - started < 0.1


async def test_wait_for_data_only_wakes_for_its_offset(log: PartitionLog) -> None:
    far = asyncio.create_task(log.wait_for_data(100, timeout=0.3))
    await fill(log, 1)
    await asyncio.sleep(0.05)
    assert not far.done()
    await far


async def test_close_and_delete_release_waiters(tmp_path: Path) -> None:
    for release in ("close", "delete"):
        log = PartitionLog("t", 0, tmp_path / release, SMALL)
        waiter = asyncio.create_task(log.wait_for_data(0, timeout=10))
        await asyncio.sleep(0.01)
        if release == "close":
            await log.close()
        else:
            log.delete()
        await asyncio.wait_for(waiter, 1)
    assert not (tmp_path / "delete").exists()


async def test_delete_fails_appends_still_waiting_for_durability(tmp_path: Path) -> None:
    log = PartitionLog("t", 0, tmp_path / "0", SMALL)
    pending = asyncio.create_task(append(log, batch(1)))
    await asyncio.sleep(0)  # written, now waiting for the fsync
    log.delete()
    with pytest.raises(UnknownTopic):
        await pending


# --- retention, rolling, config -------------------------------------------------------------


async def test_retention_by_bytes_deletes_whole_closed_segments(tmp_path: Path) -> None:
    size = len(batch(10))
    assert 4096 // size == 3  # three batches a segment
    config = SMALL.with_updates({"retention.bytes": 5000, "retention.ms": -1})
    log = PartitionLog("t", 0, tmp_path, config)
    log.flusher.checkpoint_interval_s = 0  # recently written segments are kept until then
    await fill(log, 13)
    assert log.segment_count == 5
    assert log.enforce_retention(now_ms()) == 3  # 13, 10, 7 batches left: 4 fit in 5000
    assert (log.segment_count, log.size_bytes, log.log_start_offset) == (2, 4 * size, 90)
    with pytest.raises(OffsetOutOfRange, match="valid offsets are 90 to 130"):
        log.read(0, 100)
    assert offsets(log.read(90, 1 << 20)) == [90, 100, 110, 120]
    assert log.enforce_retention(now_ms()) == 0
    await log.close()
    assert len(list(tmp_path.glob("*.log"))) == 2


async def test_retention_by_time_never_takes_the_active_segment(tmp_path: Path) -> None:
    log = PartitionLog("t", 0, tmp_path, SMALL.with_updates({"retention.ms": 1000}))
    log.flusher.checkpoint_interval_s = 0
    for i in range(9):
        await append(log, batch(10, timestamp=T0 + i, tag=i))
    assert log.segment_count == 3
    assert log.enforce_retention(T0 + 500) == 0
    assert log.enforce_retention(T0 + 10**9) == 2
    assert (log.segment_count, log.log_start_offset) == (1, 60)
    await append(log, batch(1))
    await log.close()
    reopened = PartitionLog("t", 0, tmp_path, SMALL)
    assert (reopened.log_start_offset, reopened.log_end_offset) == (60, 91)
    await reopened.close()


async def test_retention_keeps_segments_not_yet_checkpointed(tmp_path: Path) -> None:
    log = PartitionLog(
        "t", 0, tmp_path, SMALL.with_updates({"retention.bytes": 0, "retention.ms": -1})
    )
    await fill(log, 9)
    assert log.enforce_retention(now_ms()) == 0  # their indexes are not durable yet
    await log.close()
    log = PartitionLog(
        "t", 0, tmp_path, SMALL.with_updates({"retention.bytes": 0, "retention.ms": -1})
    )
    assert log.enforce_retention(now_ms()) == 2
    await log.close()


async def test_maybe_roll_after_segment_ms(tmp_path: Path) -> None:
    log = PartitionLog("t", 0, tmp_path, TopicConfig(segment_ms=1000))
    assert not log.maybe_roll(now_ms() + 10_000)  # empty: nothing to roll
    await fill(log, 1)
    assert not log.maybe_roll(now_ms())
    assert log.maybe_roll(now_ms() + 2000)
    assert log.segment_count == 2
    await fill(log, 1)
    assert offsets(log.read(0, 1 << 20)) == [0, 10]
    await log.close()


async def test_switching_to_flush_ms_makes_written_data_readable(log: PartitionLog) -> None:
    await append(log, batch(5), wait_durable=False)
    log.update_config(SMALL.with_updates({"flush.ms": 1000}))
    assert log.high_watermark == 5
    await append(log, batch(5))
    assert log.high_watermark == 10


async def test_reopen_continues_offsets(tmp_path: Path) -> None:
    log = PartitionLog("t", 0, tmp_path, SMALL)
    await fill(log, 7)
    await log.close()
    await log.close()  # idempotent
    log = PartitionLog("t", 0, tmp_path, SMALL)
    assert (log.log_start_offset, log.high_watermark) == (0, 70)
    assert await append(log, batch(3)) == (70, 72)
    await log.close()
