"""LogManager topics that host a subset of their partitions, as brokers of a cluster do."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from millstream.broker.storage.log_manager import LogManager
from millstream.errors import InvalidPartitions, UnknownPartition, UnknownTopic

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
