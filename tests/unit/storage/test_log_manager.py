"""LogManager: topics created, altered, deleted and reopened; bad input leaves no trace."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from millstream.broker.storage.config import TopicConfig
from millstream.broker.storage.log_manager import LogManager, TopicInfo
from millstream.errors import (
    InvalidConfig,
    InvalidPartitions,
    InvalidTopicName,
    MillstreamError,
    TopicExists,
    UnknownPartition,
    UnknownTopic,
)
from millstream.records import now_ms

from .support import append, batch, read_all


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[LogManager]:
    manager = LogManager(tmp_path / "data")
    manager.open()
    yield manager
    await manager.close()


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


async def test_create_and_use_a_topic(manager: LogManager) -> None:
    info = manager.create_topic("orders", 3, {"retention.ms": "60000"})
    assert info == TopicInfo("orders", 3, TopicConfig(retention_ms=60_000))
    assert manager.topic("orders") == info
    assert manager.topic_names() == ["orders"]
    assert await append(manager.log("orders", 2), batch(5)) == (0, 4)
    stored = json.loads((manager.data_dir / "topics" / "orders" / "topic.json").read_text())
    assert stored == {
        "version": 1,
        "name": "orders",
        "partitions": 3,
        "config": {"retention.ms": 60000},
    }


async def test_topics_survive_a_reopen(tmp_path: Path) -> None:
    manager = LogManager(tmp_path, TopicConfig(flush_ms=0))
    manager.open()
    manager.create_topic("b", 2, {"segment.bytes": 4096})
    manager.create_topic("a", 1)
    for i in range(5):
        await append(manager.log("b", 1), batch(10, tag=i))
    await manager.close()
    manager = LogManager(tmp_path)
    manager.open()
    assert manager.topic_names() == ["a", "b"]
    assert manager.topic("b").config.segment_bytes == 4096
    log = manager.log("b", 1)
    assert [info.base_offset for info in read_all(log)] == [0, 10, 20, 30, 40]
    assert log.segment_count == 2
    await manager.close()


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "a/b", "a b", "ü", "x" * 250, "tab\t", None, 5],
)
async def test_invalid_names_are_refused_and_leave_nothing(manager: LogManager, name: Any) -> None:
    before = tree(manager.data_dir)
    with pytest.raises(InvalidTopicName):
        manager.create_topic(name, 1)
    assert tree(manager.data_dir) == before


async def test_valid_unusual_names(manager: LogManager) -> None:
    for name in ("a", "x" * 249, "...", ".hidden", "a-b_c.d", "-"):
        manager.create_topic(name, 1)
    assert len(manager.topic_names()) == 6


@pytest.mark.parametrize("partitions", [0, -1, 10_001, True, 1.0, "3", None])
async def test_invalid_partition_counts(manager: LogManager, partitions: Any) -> None:
    before = tree(manager.data_dir)
    with pytest.raises(InvalidPartitions):
        manager.create_topic("t", partitions)
    assert tree(manager.data_dir) == before


@pytest.mark.parametrize(
    "config",
    [{"retention.ms": 0}, {"segment.bytes": 1}, {"nope": 1}, {"flush.ms": True}, ["x"]],
)
async def test_invalid_configs(manager: LogManager, config: Any) -> None:
    before = tree(manager.data_dir)
    with pytest.raises(InvalidConfig):
        manager.create_topic("t", 1, config)
    assert tree(manager.data_dir) == before
    assert manager.topic_names() == []


async def test_existing_topic(manager: LogManager) -> None:
    manager.create_topic("t", 2)
    with pytest.raises(TopicExists):
        manager.create_topic("t", 5)
    assert manager.topic("t").partitions == 2


async def test_unknown_topic_and_partition(manager: LogManager) -> None:
    manager.create_topic("t", 2)
    with pytest.raises(UnknownTopic):
        manager.log("nope", 0)
    with pytest.raises(UnknownTopic):
        manager.topic("nope")
    for partition in (2, -1, True, "0"):
        with pytest.raises(UnknownPartition):
            manager.log("t", partition)  # type: ignore[arg-type]


async def test_alter_grows_partitions_and_changes_config(manager: LogManager) -> None:
    manager.create_topic("t", 1, {"retention.bytes": 1000})
    log = manager.log("t", 0)
    info = manager.alter_topic("t", partitions=3, config={"flush.ms": 100, "retention.bytes": None})
    assert info.partitions == 3
    assert info.config == TopicConfig(flush_ms=100)
    assert manager.log("t", 0) is log
    assert log.config.flush_ms == 100 and log.flusher.interval_ms == 100
    assert await append(manager.log("t", 2), batch(1)) == (0, 0)
    await manager.close()
    manager.open()
    assert manager.topic("t") == info


async def test_alter_checks_everything_before_changing_anything(manager: LogManager) -> None:
    manager.create_topic("t", 3, {"retention.ms": 5000})
    before = tree(manager.data_dir)
    with pytest.raises(InvalidPartitions):
        manager.alter_topic("t", partitions=2, config={"retention.ms": 9000})
    with pytest.raises(InvalidConfig):
        manager.alter_topic("t", partitions=5, config={"retention.ms": "soon"})
    with pytest.raises(InvalidConfig):
        manager.alter_topic("t", config={"unknown.setting": None})
    with pytest.raises(UnknownTopic):
        manager.alter_topic("u", partitions=5)
    assert manager.topic("t") == TopicInfo("t", 3, TopicConfig(retention_ms=5000))
    assert tree(manager.data_dir) == before
    assert manager.alter_topic("t", partitions=3) == manager.topic("t")  # same count: no-op


async def test_delete_topic(manager: LogManager) -> None:
    manager.create_topic("t", 2)
    log = manager.log("t", 0)
    await append(log, batch(1))
    poll = asyncio.create_task(log.wait_for_data(1, timeout=10))
    await asyncio.sleep(0.01)
    manager.delete_topic("t")
    await asyncio.wait_for(poll, 1)
    assert manager.topic_names() == []
    with pytest.raises(UnknownTopic):
        manager.log("t", 0)
    with pytest.raises(UnknownTopic):
        manager.delete_topic("t")
    assert not (manager.data_dir / "topics" / "t").exists()
    manager.create_topic("t", 1)  # the name is free again at once
    assert manager.log("t", 0).log_end_offset == 0
    await manager.close()
    assert list((manager.data_dir / "trash").iterdir()) == []


async def test_open_removes_left_overs_of_interrupted_operations(tmp_path: Path) -> None:
    manager = LogManager(tmp_path)
    manager.open()
    manager.create_topic("kept", 1)
    await manager.close()
    half_created = tmp_path / "staging" / "abc"
    half_created.mkdir()
    (half_created / "topic.json").write_text('{"name": "new"}')
    half_deleted = tmp_path / "trash" / "def" / "0"
    half_deleted.mkdir(parents=True)
    (half_deleted / "00000000000000000000.log").write_bytes(b"x")
    manager = LogManager(tmp_path)
    manager.open()
    assert manager.topic_names() == ["kept"]
    assert list((tmp_path / "staging").iterdir()) == []
    assert list((tmp_path / "trash").iterdir()) == []
    await manager.close()


async def test_a_topic_directory_without_topic_json_is_ignored_not_removed(tmp_path: Path) -> None:
    (tmp_path / "topics" / "mystery" / "0").mkdir(parents=True)
    manager = LogManager(tmp_path)
    manager.open()
    assert manager.topic_names() == []
    assert (tmp_path / "topics" / "mystery" / "0").exists()
    await manager.close()


async def test_retention_and_rolling_over_all_topics(manager: LogManager) -> None:
    manager.create_topic("t", 2, {"segment.bytes": 4096, "retention.ms": 1000, "segment.ms": 1000})
    for partition in (0, 1):
        log = manager.log("t", partition)
        log.flusher.checkpoint_interval_s = 0
        for i in range(7):
            await append(log, batch(10, timestamp=1000 + i, tag=i))
    assert manager.enforce_retention(now_ms()) == 4  # two closed segments each
    assert manager.maybe_roll(now_ms()) == 0
    assert manager.maybe_roll(now_ms() + 2000) == 2  # the active segments are old enough
    assert manager.enforce_retention(now_ms()) == 2
    assert manager.log("t", 0).log_start_offset == manager.log("t", 0).log_end_offset == 70


async def test_closed_manager_refuses_changes(tmp_path: Path) -> None:
    manager = LogManager(tmp_path)
    with pytest.raises(MillstreamError):
        manager.create_topic("t", 1)
    manager.open()
    await manager.close()
    with pytest.raises(MillstreamError):
        manager.create_topic("t", 1)
