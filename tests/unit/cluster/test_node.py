"""ClusterNode: pushes applied to a real LogManager, replayed at start, routing answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from millstream import errors
from millstream.broker.cluster.metadata import BrokerInfo, TopicPlacement
from millstream.broker.cluster.node import ClusterNode
from millstream.broker.cluster.store import MetadataStore
from millstream.broker.storage.log_manager import LogManager
from millstream.internal_topics import GROUP_OFFSETS_TOPIC, group_offsets_partition

BROKERS = [BrokerInfo(i, f"http://broker-{i}") for i in range(3)]


@pytest.fixture
async def logs(tmp_path: Path) -> AsyncIterator[LogManager]:
    manager = LogManager(tmp_path)
    manager.open()
    yield manager
    await manager.close()


def node(logs: LogManager, broker_id: int | None = 1) -> ClusterNode:
    return ClusterNode(logs, MetadataStore(logs.data_dir), broker_id)


async def test_a_standalone_broker_serves_everything(logs: LogManager) -> None:
    standalone = node(logs, broker_id=None)
    standalone.reconcile()
    assert not standalone.managed
    standalone.check_local("t", 5)
    standalone.check_coordinator("g")
    assert standalone.local_partitions("t") is None
    with pytest.raises(errors.InvalidPlacement, match="--broker-id"):
        standalone.put_cluster(1, BROKERS)


async def test_a_topic_push_hosts_the_partitions_placed_here(logs: LogManager) -> None:
    member = node(logs)
    member.put_cluster(1, BROKERS)
    member.put_topic(TopicPlacement("t", 4, {"retention.ms": "60000"}, (0, 1, 2, 1)))
    info = logs.topic("t")
    assert (info.partitions, info.hosted) == (4, frozenset({1, 3}))
    assert info.config.retention_ms == 60_000
    assert member.local_partitions("t") == [1, 3]
    logs.log("t", 3)
    member.check_local("t", 1)
    with pytest.raises(errors.NotLeader) as caught:
        member.check_local("t", 2)
    assert caught.value.broker == errors.BrokerAddress(2, "http://broker-2")
    with pytest.raises(errors.UnknownPartition):
        logs.log("t", 2)
    assert member.metadata is not None
    assert member.metadata.topics["t"].config == {"retention.ms": 60000}  # kept as integers


async def test_bad_config_is_refused_before_anything_is_stored(logs: LogManager) -> None:
    member = node(logs)
    member.put_cluster(1, BROKERS)
    with pytest.raises(errors.InvalidConfig):
        member.put_topic(TopicPlacement("t", 1, {"retention.ms": 0}, (1,)))
    with pytest.raises(errors.InvalidTopicName):
        member.put_topic(TopicPlacement("a/b", 1, {}, (1,)))
    stored = MetadataStore(logs.data_dir).load()
    assert stored is not None and stored.metadata.topics == {}
    assert logs.topic_names() == []


async def test_groups_are_coordinated_where_their_offsets_partition_is(logs: LogManager) -> None:
    member = node(logs)
    member.put_cluster(1, BROKERS)
    with pytest.raises(errors.CoordinatorNotAvailable):
        member.check_coordinator("a")  # until the operator places the offsets topic
    placement = (0, 1, 2, 1)
    member.put_topic(TopicPlacement(GROUP_OFFSETS_TOPIC, 4, {}, placement))
    for group in ("a", "b", "c", "d", "e", "f", "g"):
        owner = placement[group_offsets_partition(group, 4)]
        if owner == 1:
            member.check_coordinator(group)
        else:
            with pytest.raises(errors.NotCoordinator) as caught:
                member.check_coordinator(group)
            assert caught.value.broker is not None
            assert caught.value.broker.id == owner


async def test_a_restart_replays_the_metadata(tmp_path: Path) -> None:
    logs = LogManager(tmp_path)
    logs.open()
    member = node(logs)
    member.put_cluster(3, BROKERS)
    member.put_topic(TopicPlacement("t", 3, {}, (1, 1, 0)))
    await logs.close()

    again = LogManager(tmp_path)
    again.open()
    try:
        restarted = node(again, broker_id=None)  # takes the stored id
        restarted.reconcile()
        assert restarted.broker_id == 1 and restarted.managed
        assert again.topic("t").hosted == frozenset({0, 1})
        with pytest.raises(errors.InvalidPlacement, match="wrong broker"):
            node(again, broker_id=2).reconcile()
    finally:
        await again.close()


async def test_a_deleted_topic_is_gone_from_metadata_and_disk(logs: LogManager) -> None:
    member = node(logs)
    member.put_cluster(1, BROKERS)
    member.put_topic(TopicPlacement("t", 2, {}, (1, 0)))
    member.delete_topic("t")
    assert logs.topic_names() == []
    assert member.metadata is not None and "t" not in member.metadata.topics
    with pytest.raises(errors.UnknownTopic):
        member.delete_topic("t")


async def test_a_drained_broker_leaves_with_nothing_stale_behind(logs: LogManager) -> None:
    member = node(logs)
    member.put_cluster(1, BROKERS)
    member.put_topic(TopicPlacement("t", 2, {}, (1, 0), epoch=1))
    member.put_topic(TopicPlacement(GROUP_OFFSETS_TOPIC, 2, {}, (0, 2)))
    with pytest.raises(errors.MoveConflict):
        member.leave()  # it still serves t/0
    assert member.metadata is not None and logs.topic_names() == [GROUP_OFFSETS_TOPIC, "t"]
    member.fence("t", 0, 2, 2)  # t/0 moved to broker 2: retired here
    with pytest.raises(errors.MoveConflict):
        member.leave()  # its receiver may still be copying the tail from the retired copy
    member.release("t", 0)
    member.leave()
    assert member.metadata is None and not member.managed
    assert logs.topic_names() == [] and not (logs.data_dir / "topics" / "t").exists()
    assert MetadataStore(logs.data_dir).load() is None
    member.leave()  # again: nothing to do
    # Its volume reused by a broker of that id: it starts with nothing from before.
    again = node(logs)
    again.reconcile()
    assert again.metadata is None and logs.topic_names() == []


async def test_a_fenced_partition_stays_retired_across_a_restart(tmp_path: Path) -> None:
    logs = LogManager(tmp_path)
    logs.open()
    member = node(logs)
    member.put_cluster(1, BROKERS)
    member.put_topic(TopicPlacement("t", 2, {}, (1, 1), epoch=3))
    retired = member.fence("t", 0, 4, owner=2)
    assert retired.sealed and member.copy_source("t", 0) is retired
    changes: list[int] = []
    member.on_change(lambda: changes.append(1))
    assert member.fence("t", 0, 4, owner=2) is retired and not changes  # idempotent
    await logs.close()

    again = LogManager(tmp_path)
    again.open()
    try:
        restarted = node(again)
        restarted.reconcile()
        # Still fenced: a restart before the operator's push must not serve it again.
        with pytest.raises(errors.NotLeader) as caught:
            restarted.check_local("t", 0)
        assert caught.value.broker is not None and caught.value.broker.id == 2
        assert again.topic("t").held == frozenset({0}) and again.held_log("t", 0).sealed
        assert restarted.local_partitions("t") == [1]
        with pytest.raises(errors.MoveConflict, match="served by this broker"):
            restarted.release("t", 1)
        restarted.release("t", 0)
        assert again.topic("t").held == frozenset()
        with pytest.raises(errors.UnknownPartition):
            restarted.copy_source("t", 0)
    finally:
        await again.close()


async def test_a_switching_partition_answers_partition_moving(logs: LogManager) -> None:
    member = node(logs)
    member.put_cluster(1, BROKERS)
    member.put_topic(TopicPlacement("t", 2, {}, (0, 1), epoch=1))
    move, created = member.start_move("t", 0, None, 1_000, now_ms=5)
    assert created and move.source == 0 and member.list_moves() == [move]
    assert member.start_move("t", 0, 0, 1_000, now_ms=6) == (move, False)
    member.put_topic(TopicPlacement("t", 2, {}, (1, 1), epoch=2))
    with pytest.raises(errors.PartitionMoving):
        member.check_local("t", 0)
    assert member.local_partitions("t") == [1]  # keyless records do not go there yet
    with pytest.raises(errors.UnknownPartition):
        member.copy_source("t", 0)  # nothing to copy from here either
    done = member.complete_move(("t", 0), now_ms=9)
    assert done.completed_ms == 9
    member.check_local("t", 0)
    assert logs.log("t", 0).log_end_offset == 0 and member.local_partitions("t") == [0, 1]
