"""The Mover between two brokers in one process: real logs and nodes, the source reached
through an in-process Source that does what the admin routes do. Copy under writes, switch by
push, fence, complete, release; a source down while switching; starting over; failing; the
throttle; cancelling; resuming after a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from millstream import errors
from millstream.broker.cluster.metadata import BrokerInfo, TopicPlacement
from millstream.broker.cluster.mover import Mover, SourceChunk
from millstream.broker.cluster.moves import MoveState
from millstream.broker.cluster.node import ClusterNode
from millstream.broker.cluster.store import MetadataStore
from millstream.broker.storage.log_manager import LogManager
from millstream.records import check_batches, encode_batch, now_ms

BROKERS = [BrokerInfo(0, "http://b0"), BrokerInfo(1, "http://b1")]


@dataclass
class Broker:
    logs: LogManager
    node: ClusterNode


@dataclass
class LocalSource:
    """The source's admin routes, called in process."""

    brokers: dict[str, Broker]
    down: set[str] = field(default_factory=set)

    def _at(self, url: str) -> Broker:
        if url in self.down:
            raise errors.BrokerUnavailable(f"{url} is down")
        return self.brokers[url]

    async def fetch(
        self, url: str, topic: str, partition: int, offset: int | None, max_bytes: int, wait: int
    ) -> SourceChunk:
        log = self._at(url).node.copy_source(topic, partition)
        offset = log.log_start_offset if offset is None else offset
        if wait and log.high_watermark <= offset:
            await log.wait_for_data(offset, wait / 1000)
        data = log.read(offset, max_bytes)
        return SourceChunk(data, log.log_start_offset, log.high_watermark)

    async def fence(self, url: str, topic: str, partition: int, epoch: int, owner: int) -> int:
        log = self._at(url).node.fence(topic, partition, epoch, owner)
        await log.flush()
        return log.log_end_offset

    async def release(self, url: str, topic: str, partition: int) -> None:
        self._at(url).node.release(topic, partition)


def open_broker(directory: Path, broker_id: int) -> Broker:
    logs = LogManager(directory)
    logs.open()
    node = ClusterNode(logs, MetadataStore(directory), broker_id)
    node.reconcile()
    return Broker(logs, node)


def push(brokers: list[Broker], placement: tuple[int, ...], epoch: int) -> None:
    for broker in brokers:
        broker.node.put_topic(TopicPlacement("t", len(placement), {}, placement, "id", epoch))


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Broker, Broker, LocalSource]]:
    source, receiver = open_broker(tmp_path / "b0", 0), open_broker(tmp_path / "b1", 1)
    for broker in (source, receiver):
        broker.node.put_cluster(1, BROKERS)
    push([source, receiver], (0, 0), epoch=1)
    yield source, receiver, LocalSource({"http://b0": source, "http://b1": receiver})
    for broker in (source, receiver):
        await broker.logs.close()


async def produce(broker: Broker, count: int, partition: int = 0, size: int = 100) -> None:
    log = broker.logs.log("t", partition)
    for i in range(count):
        data = encode_batch([(None, bytes([i % 256]) * size)] * 5)
        await log.append(data, check_batches(data))


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def state(broker: Broker) -> MoveState:
    return broker.node.move("t", 0).state


async def test_a_move_under_writes_keeps_every_offset(
    pair: tuple[Broker, Broker, LocalSource],
) -> None:
    source, receiver, remote = pair
    await produce(source, 40)
    mover = Mover(receiver.node, receiver.logs, remote, poll_wait_ms=50)
    mover.start()
    try:
        receiver.node.start_move("t", 0, 0, None, now_ms())
        writes = asyncio.ensure_future(produce(source, 60))
        await until(lambda: (p := mover.progress(("t", 0))) is not None and p.in_sync)
        await writes
        # The switch: pushed to the receiver first, which fences the source itself.
        push([receiver], (1, 0), epoch=2)
        with pytest.raises(errors.PartitionMoving):
            receiver.node.check_local("t", 0)
        await until(lambda: state(receiver) is MoveState.COMPLETED)
        move = receiver.node.move("t", 0)
        assert move.final_offset == 500 and move.epoch == 2
        await until(lambda: receiver.node.move("t", 0).source_released)
    finally:
        await mover.close()
    served = receiver.logs.log("t", 0)
    assert served.log_end_offset == 500 and not served.sealed
    receiver.node.check_local("t", 0)
    # The source: fenced (writes refused, naming the new broker), its copy gone once released.
    with pytest.raises(errors.NotLeader) as caught:
        source.node.check_local("t", 0)
    assert caught.value.broker == errors.BrokerAddress(1, "http://b1")
    assert source.logs.topic("t").held == frozenset()
    assert [log.partition for log in source.logs.topic_logs("t")] == [1]
    # The push reaching the source late changes nothing; an older one is refused.
    push([source], (1, 0), epoch=2)
    with pytest.raises(errors.StaleEpoch):
        push([source], (0, 0), epoch=1)
    # Served from the receiver: offsets continue where the source stopped.
    data = encode_batch([(None, b"after")])
    assert await served.append(data, check_batches(data)) == (500, 500)


async def test_the_source_keeps_its_copy_until_released(
    pair: tuple[Broker, Broker, LocalSource],
) -> None:
    source, receiver, remote = pair
    await produce(source, 10)
    receiver.node.start_move("t", 0, 0, None, now_ms())
    # The operator pushes to the source first: it stops writes and retires its copy.
    push([source], (1, 0), epoch=2)
    retired = source.logs.held_log("t", 0)
    assert retired.sealed and retired.log_end_offset == 50
    frozen = retired.read(0, 1 << 20)
    with pytest.raises(errors.NotLeader):
        source.node.check_local("t", 0)
    # The receiver was down meanwhile; pushed later, it copies everything, then releases.
    push([receiver], (1, 0), epoch=2)
    mover = Mover(receiver.node, receiver.logs, remote, poll_wait_ms=50)
    mover.start()
    try:
        await until(lambda: receiver.node.move("t", 0).source_released)
    finally:
        await mover.close()
    assert receiver.logs.log("t", 0).read(0, 1 << 20) == frozen
    assert retired.closed and source.node.transfers.retired == frozenset()


async def test_a_switch_waits_for_a_source_that_is_down(
    pair: tuple[Broker, Broker, LocalSource],
) -> None:
    source, receiver, remote = pair
    await produce(source, 10)
    mover = Mover(receiver.node, receiver.logs, remote, poll_wait_ms=50)
    mover.start()
    try:
        receiver.node.start_move("t", 0, 0, None, now_ms())
        await until(lambda: receiver.logs.held_log("t", 0).log_end_offset == 50)
        remote.down.add("http://b0")
        push([receiver], (1, 0), epoch=2)
        await until(lambda: (mover.progress(("t", 0)) or pytest.fail()).retries > 0)
        progress = mover.progress(("t", 0))
        assert progress is not None and "is down" in (progress.error or "")
        assert state(receiver) is MoveState.SWITCHING  # never failed: only it can serve now
        with pytest.raises(errors.PartitionMoving):
            receiver.node.check_local("t", 0)
        with pytest.raises(errors.MoveConflict):
            await mover.cancel("t", 0)
        await produce(source, 2)  # acknowledged before the source is fenced: must be copied
        remote.down.clear()
        await until(lambda: state(receiver) is MoveState.COMPLETED)
    finally:
        await mover.close()
    assert receiver.logs.log("t", 0).log_end_offset == 60


async def test_a_copy_that_does_not_fit_the_source_starts_over(
    pair: tuple[Broker, Broker, LocalSource],
) -> None:
    source, receiver, remote = pair
    await produce(source, 3)
    receiver.node.start_move("t", 0, 0, None, now_ms())
    stale = receiver.logs.held_log("t", 0)
    junk = encode_batch([(None, b"junk")] * 40)  # ends past the source's end
    await stale.append_replica(junk, check_batches(junk))
    mover = Mover(receiver.node, receiver.logs, remote, poll_wait_ms=50)
    mover.start()
    try:
        await until(lambda: (p := mover.progress(("t", 0))) is not None and p.in_sync)
        progress = mover.progress(("t", 0))
        assert progress is not None and progress.restarts == 1
    finally:
        await mover.close()
    copy = receiver.logs.held_log("t", 0)
    assert copy is not stale and copy.read(0, 1 << 20) == source.logs.log("t", 0).read(0, 1 << 20)


async def test_a_move_from_a_source_without_the_partition_fails_and_starts_again(
    pair: tuple[Broker, Broker, LocalSource],
) -> None:
    source, receiver, remote = pair
    receiver.node.put_topic(TopicPlacement("u", 1, {}, (0,), "id", 1))  # the source lacks it
    mover = Mover(receiver.node, receiver.logs, remote, poll_wait_ms=50)
    mover.start()
    try:
        receiver.node.start_move("u", 0, None, None, now_ms())
        await until(lambda: receiver.node.move("u", 0).state is MoveState.FAILED, timeout=30)
        assert "'u'" in (receiver.node.move("u", 0).error or "")
        # Not at the first refusal: a source just started may not know the topic yet.
        progress = mover.progress(("u", 0))
        assert progress is not None and progress.retries > 5
        source.node.put_topic(TopicPlacement("u", 1, {}, (0,), "id", 1))
        _, created = receiver.node.start_move("u", 0, None, None, now_ms())
        assert created
        await until(lambda: (p := mover.progress(("u", 0))) is not None and p.in_sync)
    finally:
        await mover.close()


async def test_the_throttle_paces_the_copy(pair: tuple[Broker, Broker, LocalSource]) -> None:
    source, receiver, remote = pair
    await produce(source, 40, size=200)  # about 40 KB
    size = source.logs.log("t", 0).size_bytes
    rate = size * 2  # half a second's worth
    mover = Mover(receiver.node, receiver.logs, remote, poll_wait_ms=50)
    mover.start()
    try:
        started = time.monotonic()
        receiver.node.start_move("t", 0, 0, rate, now_ms())
        await until(lambda: (p := mover.progress(("t", 0))) is not None and p.in_sync)
        elapsed = time.monotonic() - started
    finally:
        await mover.close()
    assert size / rate / 2 <= elapsed <= size / rate * 2 + 0.5


async def test_a_cancelled_move_leaves_nothing(pair: tuple[Broker, Broker, LocalSource]) -> None:
    source, receiver, remote = pair
    await produce(source, 40, size=200)
    mover = Mover(receiver.node, receiver.logs, remote, poll_wait_ms=50)
    mover.start()
    try:
        receiver.node.start_move("t", 0, 0, 2_000, now_ms())  # slow
        await until(lambda: receiver.logs.held_log("t", 0).log_end_offset > 0)
        await mover.cancel("t", 0)
        assert mover.progress(("t", 0)) is None
        # Cancelled behind the mover's back (the node only): its progress goes all the same.
        receiver.node.start_move("t", 0, 0, 2_000, now_ms())
        await until(lambda: mover.progress(("t", 0)) is not None)
        receiver.node.cancel_move("t", 0)
        await until(lambda: mover.progress(("t", 0)) is None)
    finally:
        await mover.close()
    assert receiver.node.transfers.moves == {}
    assert receiver.logs.topic("t").held == frozenset()
    await asyncio.sleep(0.05)
    assert not (receiver.logs.data_dir / "topics" / "t" / "0").exists()
    with pytest.raises(errors.UnknownMove):
        await mover.cancel("t", 0)
    source.node.check_local("t", 0)  # the source serves on, never fenced


async def test_a_copy_resumes_after_a_restart(
    pair: tuple[Broker, Broker, LocalSource], tmp_path: Path
) -> None:
    source, receiver, remote = pair
    await produce(source, 40, size=200)
    mover = Mover(receiver.node, receiver.logs, remote, poll_wait_ms=50)
    mover.start()
    receiver.node.start_move("t", 0, 0, 20_000, now_ms())
    await until(lambda: receiver.logs.held_log("t", 0).log_end_offset > 0)
    await mover.close()
    copied = receiver.logs.held_log("t", 0).log_end_offset
    await receiver.logs.close()

    again = open_broker(tmp_path / "b1", 1)
    remote.brokers["http://b1"] = again
    assert again.node.move("t", 0).state is MoveState.COPYING
    assert again.logs.held_log("t", 0).log_end_offset == copied
    resumed = Mover(again.node, again.logs, remote, poll_wait_ms=50)
    resumed.start()
    try:
        again.node.update_move(("t", 0), throttle_bytes_per_s=None)
        await until(lambda: (p := resumed.progress(("t", 0))) is not None and p.in_sync)
        progress = resumed.progress(("t", 0))
        assert progress is not None and progress.restarts == 0
        assert progress.bytes_copied < source.logs.log("t", 0).size_bytes
    finally:
        await resumed.close()
        await again.logs.close()
