"""LogManager topics that host a subset of their partitions, as brokers of a cluster do, and
hold others without serving them (copies on their way in or out)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from millstream import errors
from millstream.broker.storage.log_manager import LogManager
from millstream.errors import InvalidPartitions, UnknownPartition, UnknownTopic
from millstream.records import check_batches

from .support import append, batch


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[LogManager]:
    manager = LogManager(tmp_path / "data")
    manager.open()
    yield manager
    await manager.close()


def partition_dirs(manager: LogManager, topic: str) -> list[int]:
    root = manager.data_dir / "topics" / topic
    return sorted(int(d.name) for d in root.iterdir() if d.is_dir())


async def test_a_topic_hosts_only_its_partitions(manager: LogManager) -> None:
    info = manager.ensure_topic("t", 4, {"retention.ms": 60_000}, [1, 3])
    assert (info.partitions, info.hosted) == (4, frozenset({1, 3}))
    assert partition_dirs(manager, "t") == [1, 3]
    assert [log.partition for log in manager.topic_logs("t")] == [1, 3]
    assert await append(manager.log("t", 3), batch(2)) == (0, 1)
    with pytest.raises(UnknownPartition, match="not hosted"):
        manager.log("t", 0)
    manager.check_partition("t", 0)  # the topic has it, another broker serves it
    with pytest.raises(UnknownPartition):
        manager.check_partition("t", 4)
    with pytest.raises(UnknownTopic):
        manager.check_partition("nope", 0)
    stored = json.loads((manager.data_dir / "topics" / "t" / "topic.json").read_text())
    assert stored == {
        "version": 2,
        "name": "t",
        "partitions": 4,
        "config": {"retention.ms": 60000},
        "hosted": [1, 3],
    }


async def test_ensure_topic_is_idempotent_and_moves_partitions(manager: LogManager) -> None:
    manager.ensure_topic("t", 3, {}, [0, 1])
    await append(manager.log("t", 1), batch(1))
    assert manager.ensure_topic("t", 3, {}, [0, 1]) is manager.topic("t")
    moved = manager.ensure_topic("t", 5, {"flush.ms": 10}, [1, 4])
    assert (moved.partitions, moved.hosted) == (5, frozenset({1, 4}))
    assert manager.log("t", 1).high_watermark == 1  # kept, with its data
    assert manager.log("t", 1).config.flush_ms == 10
    assert partition_dirs(manager, "t") == [1, 4]
    with pytest.raises(UnknownPartition):
        manager.log("t", 0)
    with pytest.raises(InvalidPartitions):
        manager.ensure_topic("t", 4, {}, [1])
    with pytest.raises(InvalidPartitions):
        manager.ensure_topic("t", 5, {}, [5])
    # An empty set: the broker knows the topic and serves none of it.
    assert manager.ensure_topic("t", 5, {}, []).hosted == frozenset()
    assert partition_dirs(manager, "t") == []


async def test_a_standalone_topic_is_adopted(manager: LogManager) -> None:
    manager.create_topic("t", 2)
    await append(manager.log("t", 0), batch(3))
    adopted = manager.ensure_topic("t", 2, {}, [0])
    assert adopted.hosted == frozenset({0})
    assert manager.log("t", 0).high_watermark == 3
    assert partition_dirs(manager, "t") == [0]


async def test_the_subset_survives_a_reopen_and_strays_are_removed(tmp_path: Path) -> None:
    manager = LogManager(tmp_path)
    manager.open()
    manager.ensure_topic("t", 3, {}, [0, 2])
    await append(manager.log("t", 2), batch(4))
    await manager.close()
    (tmp_path / "topics" / "t" / "1").mkdir()  # as if a crash came before its removal

    again = LogManager(tmp_path)
    again.open()
    try:
        assert again.topic("t").hosted == frozenset({0, 2})
        assert again.log("t", 2).high_watermark == 4
        await asyncio.sleep(0.05)  # the stray is moved to trash at once, removed soon after
        assert partition_dirs(again, "t") == [0, 2]
    finally:
        await again.close()


# --- held partitions: copies on their way in or out --------------------------------------


async def test_held_partitions_are_kept_but_not_served(manager: LogManager) -> None:
    manager.ensure_topic("t", 3, {}, [0, 1], held=[2])
    incoming = manager.held_log("t", 2)
    assert incoming.sealed and partition_dirs(manager, "t") == [0, 1, 2]
    with pytest.raises(UnknownPartition, match="not hosted"):
        manager.log("t", 2)  # nothing serves it
    with pytest.raises(UnknownPartition, match="no copy held"):
        manager.held_log("t", 0)
    with pytest.raises(InvalidPartitions, match="hosted and held"):
        manager.ensure_topic("t", 3, {}, [0, 1], held=[1])
    stored = json.loads((manager.data_dir / "topics" / "t" / "topic.json").read_text())
    assert (stored["version"], stored["hosted"], stored["held"]) == (3, [0, 1], [2])
    assert [log.partition for log in manager.topic_logs("t")] == [0, 1]
    assert manager.held_logs() == [incoming]


async def test_a_partition_keeps_its_log_between_served_and_held(manager: LogManager) -> None:
    manager.ensure_topic("t", 2, {}, [0, 1])
    served = manager.log("t", 1)
    await append(served, batch(3))
    info = manager.ensure_topic("t", 2, {}, [0], held=[1])  # it moved away: retired here
    assert (info.hosted, info.held) == (frozenset({0}), frozenset({1}))
    assert manager.held_log("t", 1) is served and served.sealed
    with pytest.raises(errors.NotLeader):
        await append(served, batch(1))  # a producer that held on to it is refused
    manager.ensure_topic("t", 2, {}, [0, 1])  # it came back (or a copy completed): served
    assert manager.log("t", 1) is served and not served.sealed
    assert await append(served, batch(1)) == (3, 3)
    manager.ensure_topic("t", 2, {}, [0])  # neither: gone
    await asyncio.sleep(0.05)
    assert partition_dirs(manager, "t") == [0] and served.closed


async def test_held_partitions_survive_a_reopen(tmp_path: Path) -> None:
    manager = LogManager(tmp_path)
    manager.open()
    manager.ensure_topic("t", 2, {}, [0], held=[1])
    copy = manager.held_log("t", 1)
    data = batch(4)
    await copy.append_replica(data, check_batches(data))
    await manager.close()
    again = LogManager(tmp_path)
    again.open()
    try:
        assert again.topic("t").held == frozenset({1})
        reopened = again.held_log("t", 1)
        assert reopened.sealed and reopened.log_end_offset == 4
        assert partition_dirs(again, "t") == [0, 1]
    finally:
        await again.close()


async def test_a_held_copy_can_start_over_at_an_offset(manager: LogManager) -> None:
    manager.ensure_topic("t", 1, {}, [], held=[0])
    old = manager.held_log("t", 0)
    data = batch(4)
    await old.append_replica(data, check_batches(data))
    fresh = manager.reset_held("t", 0, 500)
    assert old.closed and fresh is manager.held_log("t", 0) and fresh.sealed
    assert (fresh.log_start_offset, fresh.log_end_offset) == (500, 500)
    assert fresh.directory == old.directory and partition_dirs(manager, "t") == [0]
    with pytest.raises(UnknownPartition):
        manager.reset_held("t", 1, 0)
