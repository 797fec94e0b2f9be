"""Recovery: torn and corrupt tails truncated, indexes rebuilt, the recovery point honoured."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from millstream.broker.storage.config import TopicConfig
from millstream.broker.storage.partition_log import PartitionLog
from millstream.broker.storage.recovery import RECOVERY_POINT, RecoveryPoint
from millstream.errors import StorageError

from .support import T0, append, batch, crash, flip_byte, read_all, segment_files

ONE_SEGMENT = TopicConfig(index_interval_bytes=512)
SMALL = TopicConfig(segment_bytes=4096, index_interval_bytes=512)  # three batches a segment
SIZE = len(batch(10))
RECOVERY_LOGGER = "millstream.broker.storage.recovery"


async def crashed_log(directory: Path, count: int, config: TopicConfig = ONE_SEGMENT) -> None:
    log = PartitionLog("t", 0, directory, config)
    for i in range(count):
        await append(log, batch(10, tag=i))
    crash(log)


async def reopen(directory: Path, config: TopicConfig = ONE_SEGMENT) -> PartitionLog:
    return PartitionLog("t", 0, directory, config)


async def assert_continues(log: PartitionLog, end: int) -> None:
    """Batches 0..end are intact, and the next append gets offset ``end``."""
    assert log.log_end_offset == log.high_watermark == end
    assert [info.base_offset for info in read_all(log)] == list(range(0, end, 10))
    assert await append(log, batch(10)) == (end, end + 9)
    await log.close()
    log = PartitionLog("t", 0, log.directory, log.config)
    assert [info.base_offset for info in read_all(log)] == list(range(0, end + 10, 10))
    await log.close()


# --- damaged tails ---------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [1, 30, SIZE - 61, SIZE - 5])
async def test_torn_last_batch_is_truncated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, cut: int
) -> None:
    await crashed_log(tmp_path, 5)
    (path,) = segment_files(tmp_path)
    os.truncate(path, 5 * SIZE - cut)
    with caplog.at_level(logging.WARNING, logger=RECOVERY_LOGGER):
        log = await reopen(tmp_path)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"partition t-0: truncated {path.name} at position {4 * SIZE}" in warning
    assert f"dropping {SIZE - cut} bytes" in warning
    assert "torn" in warning
    assert path.stat().st_size == 4 * SIZE
    await assert_continues(log, 40)


async def test_flipped_byte_in_the_last_batch_is_truncated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await crashed_log(tmp_path, 5)
    (path,) = segment_files(tmp_path)
    flip_byte(path, 4 * SIZE + SIZE // 2)
    with caplog.at_level(logging.WARNING, logger=RECOVERY_LOGGER):
        log = await reopen(tmp_path)
    assert "CRC-32C mismatch" in caplog.text
    await assert_continues(log, 40)


@pytest.mark.parametrize(
    "garbage",
    [
        os.urandom(100),
        b"\x00" * 4096,  # what a file extended but never written reads as
        batch(10),  # a whole valid batch, but its offset (0) does not follow
    ],
    ids=["random", "zeros", "valid-batch-wrong-offset"],
)
async def test_garbage_after_the_last_batch_is_truncated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, garbage: bytes
) -> None:
    await crashed_log(tmp_path, 5)
    (path,) = segment_files(tmp_path)
    with path.open("ab") as f:
        f.write(garbage)
    with caplog.at_level(logging.WARNING, logger=RECOVERY_LOGGER):
        log = await reopen(tmp_path)
    assert f"dropping {len(garbage)} bytes" in caplog.text
    await assert_continues(log, 50)


async def test_corruption_in_an_earlier_segment_drops_the_later_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await crashed_log(tmp_path, 10, SMALL)
    paths = segment_files(tmp_path)
    assert len(paths) == 4
    flip_byte(paths[1], SIZE + 100)  # the batch at offset 40
    with caplog.at_level(logging.WARNING, logger=RECOVERY_LOGGER):
        log = await reopen(tmp_path, SMALL)
    assert log.segment_count == 2
    assert caplog.text.count("deleting segment") == 2
    await assert_continues(log, 40)


async def test_a_segment_left_empty_by_truncation_is_removed(tmp_path: Path) -> None:
    await crashed_log(tmp_path, 4, SMALL)
    paths = segment_files(tmp_path)
    os.truncate(paths[1], 10)
    log = await reopen(tmp_path, SMALL)
    assert log.segment_count == 1
    assert not paths[1].exists()
    await assert_continues(log, 30)


# --- indexes ---------------------------------------------------------------------------------


def index_bytes(directory: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for suffix in (".index", ".timeindex")
        for p in segment_files(directory, suffix)
    }


@pytest.mark.parametrize("clean", [True, False], ids=["after-close", "after-crash"])
@pytest.mark.parametrize(
    ("damage", "suffixes"),
    [
        ("delete", (".index", ".timeindex")),
        ("delete", (".timeindex",)),
        ("garbage", (".index", ".timeindex")),
        ("garbage", (".timeindex",)),
        ("shorten", (".index",)),
    ],
)
async def test_indexes_are_rebuilt_identically(
    tmp_path: Path, clean: bool, damage: str, suffixes: tuple[str, ...]
) -> None:
    log = PartitionLog("t", 0, tmp_path, SMALL)
    for i in range(20):
        ts = T0 + 10 * i
        await append(log, batch(3, timestamp=ts + i % 3, tag=i), batch(2, timestamp=ts - 5, tag=i))
    if clean:
        await log.close()
    else:
        crash(log)
    before = index_bytes(tmp_path)
    assert sum(len(content) >= 16 for content in before.values()) >= 6
    for name, content in before.items():
        path = tmp_path / name
        if not name.endswith(suffixes):
            continue
        if damage == "delete":
            path.unlink()
        elif damage == "garbage":
            path.write_bytes(os.urandom(len(content) + 3))
        else:
            path.write_bytes(content[:-16])  # the last two entries lost
    log = PartitionLog("t", 0, tmp_path, SMALL)
    assert index_bytes(tmp_path) == before
    for ts in range(T0 - 10, T0 + 210):
        expected = next(
            (info.base_offset for info in read_all(log) if info.max_timestamp >= ts), 100
        )
        assert log.offset_for_timestamp(ts) == expected
    await log.close()


async def test_misaligned_time_index_is_rebuilt(tmp_path: Path) -> None:
    log = PartitionLog("t", 0, tmp_path, SMALL)
    for i in range(6):
        await append(log, batch(10, timestamp=T0 + i, tag=i))
    await log.close()
    before = index_bytes(tmp_path)
    first = segment_files(tmp_path, ".timeindex")[0]
    first.write_bytes(T0.to_bytes(8, "big") + (1).to_bytes(4, "big"))  # offset 1: no batch there
    log = PartitionLog("t", 0, tmp_path, SMALL)
    assert index_bytes(tmp_path) == before
    await log.close()


# --- the recovery point ------------------------------------------------------------------------


async def test_clean_close_leaves_a_recovery_point_at_the_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = PartitionLog("t", 0, tmp_path, SMALL)
    for i in range(7):
        await append(log, batch(10, tag=i))
    await log.close()
    last = segment_files(tmp_path)[-1]
    point = RecoveryPoint.decode((tmp_path / RECOVERY_POINT).read_bytes())
    assert point == RecoveryPoint(int(last.stem), last.stat().st_size)
    with caplog.at_level(logging.INFO, logger=RECOVERY_LOGGER):
        log = PartitionLog("t", 0, tmp_path, SMALL)
    assert caplog.records == []
    assert log.log_end_offset == 70
    await log.close()


async def test_only_what_follows_the_recovery_point_is_checked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = PartitionLog("t", 0, tmp_path, SMALL)
    for i in range(4):
        await append(log, batch(10, tag=i))
    await log.close()  # recovery point: segment 30, after its first batch
    log = PartitionLog("t", 0, tmp_path, SMALL)
    for i in range(4, 12):
        await append(log, batch(10, tag=i))
    crash(log)
    paths = segment_files(tmp_path)
    os.truncate(paths[-1], paths[-1].stat().st_size - 7)
    with caplog.at_level(logging.WARNING, logger=RECOVERY_LOGGER):
        log = PartitionLog("t", 0, tmp_path, SMALL)
    assert "torn" in caplog.text
    await assert_continues(log, 110)


async def test_an_unreadable_recovery_point_means_checking_everything(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = PartitionLog("t", 0, tmp_path, SMALL)
    for i in range(7):
        await append(log, batch(10, tag=i))
    await log.close()
    (tmp_path / RECOVERY_POINT).write_bytes(b"\xff garbage")
    flip_byte(segment_files(tmp_path)[0], 2 * SIZE + 70)  # offset 20
    with caplog.at_level(logging.WARNING, logger=RECOVERY_LOGGER):
        log = PartitionLog("t", 0, tmp_path, SMALL)
    assert "unreadable recovery point" in caplog.text
    await assert_continues(log, 20)


async def test_a_gap_before_the_recovery_point_refuses_to_open(tmp_path: Path) -> None:
    log = PartitionLog("t", 0, tmp_path, SMALL)
    for i in range(9):
        await append(log, batch(10, tag=i))
    await log.close()
    segment_files(tmp_path)[1].unlink()  # someone removed trusted data
    with pytest.raises(StorageError, match="refusing to open"):
        PartitionLog("t", 0, tmp_path, SMALL)


async def test_left_overs_are_removed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    await crashed_log(tmp_path, 2)
    strays = [
        "00000000000000000500.log.deleted",
        "recovery-point.tmp",
        "00000000000000009999.index",
    ]
    for name in strays:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("mine")
    with caplog.at_level(logging.WARNING, logger=RECOVERY_LOGGER):
        log = await reopen(tmp_path)
    assert not any((tmp_path / name).exists() for name in strays)
    assert (tmp_path / "notes.txt").exists()
    assert "ignoring unexpected file notes.txt" in caplog.text
    await assert_continues(log, 20)


# --- a real crash ----------------------------------------------------------------------------


def test_acknowledged_appends_survive_kill_9(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, os, signal
        from pathlib import Path
        from millstream.broker.storage.config import TopicConfig
        from millstream.broker.storage.partition_log import PartitionLog
        from millstream.records import check_batches, encode_batch

        async def main():
            log = PartitionLog("t", 0, Path({str(tmp_path)!r}), TopicConfig(segment_bytes=8192))
            async def producer(n):
                for i in range(40):
                    buf = encode_batch([(None, b"%d-%d" % (n, i))] * 5)
                    first, last = await log.append(buf, check_batches(buf))
                    print(last, flush=True)
            await asyncio.gather(*(producer(n) for n in range(4)))
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == -9, result.stderr
    acknowledged = max(int(line) for line in result.stdout.split())
    assert acknowledged == 799

    async def check() -> None:
        log = PartitionLog("t", 0, tmp_path, TopicConfig(segment_bytes=8192))
        infos = list(read_all(log))
        assert infos[-1].last_offset >= acknowledged
        assert sum(info.record_count for info in infos) == log.log_end_offset
        await log.close()

    asyncio.run(check())
