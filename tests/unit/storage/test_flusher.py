"""Group commit: fsyncs shared by concurrent appends, flush.ms, checkpoints, failure, abort."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from millstream.broker.storage.config import TopicConfig
from millstream.broker.storage.flusher import Flusher, SyncJob
from millstream.broker.storage.partition_log import PartitionLog
from millstream.broker.storage.recovery import RECOVERY_POINT
from millstream.errors import BrokerUnavailable, StorageError, UnknownTopic

from .support import append, batch


class GatedJobs:
    """Sync jobs that block in their worker thread until the test opens the gate."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()
        self.prepared: list[bool] = []  # checkpoint flag of each job
        self.done = 0
        self.fail = False

    def prepare(self, checkpoint: bool) -> SyncJob:
        self.prepared.append(checkpoint)

        def run() -> None:
            self.started.set()
            self.gate.wait(5)
            if self.fail:
                raise OSError(5, "Input/output error")

        def done() -> None:
            self.done += 1

        return SyncJob(run, done)


async def wait_until_started(jobs: GatedJobs) -> None:
    await asyncio.to_thread(jobs.started.wait, 5)
    jobs.started.clear()


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[PartitionLog]:
    log = PartitionLog("t", 0, tmp_path / "t" / "0", TopicConfig())
    yield log
    await log.close()


async def test_concurrent_appends_share_fsyncs(log: PartitionLog) -> None:
    buf = batch(10)
    results = await asyncio.gather(*(append(log, buf) for _ in range(200)))
    assert sorted(first for first, _ in results) == list(range(0, 2000, 10))
    assert log.high_watermark == 2000
    assert log.flusher.fsync_count <= 20  # typically 2: one for the first, one for the rest


async def test_sequential_appends_each_wait_for_their_fsync(log: PartitionLog) -> None:
    for i in range(5):
        await append(log, batch(1))
        assert log.flusher.fsync_count == i + 1
        assert log.high_watermark == i + 1


async def test_waiters_arriving_during_an_fsync_share_the_next() -> None:
    jobs = GatedJobs()
    flusher = Flusher("test", jobs.prepare)
    first = asyncio.create_task(flusher.sync())
    await wait_until_started(jobs)
    later = [asyncio.create_task(flusher.sync()) for _ in range(5)]
    await asyncio.sleep(0.01)
    assert not any(task.done() for task in [first, *later])
    jobs.gate.set()
    await asyncio.gather(first, *later)
    assert flusher.fsync_count == 2
    assert jobs.done == 2


async def test_a_failed_fsync_fails_every_waiter_now_and_later() -> None:
    jobs = GatedJobs()
    jobs.fail = True
    jobs.gate.set()
    flusher = Flusher("test", jobs.prepare)
    waiters = [asyncio.create_task(flusher.sync()) for _ in range(3)]
    for waiter in waiters:
        with pytest.raises(StorageError, match="Input/output error"):
            await waiter
    assert isinstance(flusher.error, StorageError)
    with pytest.raises(StorageError):
        await flusher.sync()
    assert jobs.done == 0


async def test_abort_fails_waiters_and_calls_back_once_the_job_is_over() -> None:
    jobs = GatedJobs()
    flusher = Flusher("test", jobs.prepare)
    in_job = asyncio.create_task(flusher.sync())
    await wait_until_started(jobs)
    queued = asyncio.create_task(flusher.sync())
    await asyncio.sleep(0)
    idle = asyncio.Event()
    flusher.abort(UnknownTopic("gone"), idle.set)
    with pytest.raises(UnknownTopic):
        await queued
    assert not idle.is_set()  # the worker thread still uses the files
    jobs.gate.set()
    await asyncio.wait_for(idle.wait(), 5)
    with pytest.raises(UnknownTopic):
        await in_job
    assert not flusher.busy


async def test_close_runs_a_last_checkpoint_and_stops() -> None:
    jobs = GatedJobs()
    jobs.gate.set()
    flusher = Flusher("test", jobs.prepare)
    await flusher.sync()
    await flusher.close()
    assert jobs.prepared == [False, True]
    assert not flusher.busy
    with pytest.raises(BrokerUnavailable):
        await flusher.sync()


async def test_flush_ms_acknowledges_at_once_and_fsyncs_later(tmp_path: Path) -> None:
    log = PartitionLog("t", 0, tmp_path / "0", TopicConfig(flush_ms=200))
    for _ in range(20):
        await append(log, batch(5))
    assert log.high_watermark == log.log_end_offset == 100  # readable before any fsync
    assert log.flusher.fsync_count <= 1
    await asyncio.sleep(0.5)
    assert 1 <= log.flusher.fsync_count <= 2
    await log.flush()
    await log.close()


async def test_acks_one_returns_before_the_fsync_and_the_flusher_catches_up(
    log: PartitionLog,
) -> None:
    await append(log, batch(5), wait_durable=False)
    assert log.log_end_offset == 5
    assert log.high_watermark == 0  # not durable yet, so not readable yet
    assert log.read(0, 1000) == b""
    await log.wait_for_data(0, timeout=5)
    assert log.high_watermark == 5


async def test_checkpoints_write_the_recovery_point(log: PartitionLog) -> None:
    point = log.directory / RECOVERY_POINT
    await append(log, batch(5))
    assert not point.exists()  # not due yet
    log.flusher.checkpoint_interval_s = 0
    await append(log, batch(5))
    size = sum(p.stat().st_size for p in log.directory.glob("*.log"))
    assert point.read_text() == f"1 0 {size}\n"
