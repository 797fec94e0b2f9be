"""Cluster metadata rules: what a push may change, epochs, placement, coordinators."""

from __future__ import annotations

import pytest

from millstream import errors
from millstream.broker.cluster.metadata import (
    BrokerInfo,
    ClusterMetadata,
    TopicPlacement,
    make_cluster,
    with_topic,
    without_topic,
)
from millstream.internal_topics import GROUP_OFFSETS_TOPIC, group_offsets_partition

BROKERS = [BrokerInfo(2, "http://c"), BrokerInfo(0, "http://a"), BrokerInfo(1, "http://b")]


def topic(
    name: str = "t", placement: tuple[int, ...] = (0, 1, 2), **extra: object
) -> TopicPlacement:
    return TopicPlacement(name, len(placement), {}, placement, **extra)  # type: ignore[arg-type]


def cluster(epoch: int = 1) -> ClusterMetadata:
    return make_cluster(None, epoch, BROKERS)


def test_brokers_are_kept_sorted_by_id_and_distinct() -> None:
    assert [b.id for b in cluster().brokers] == [0, 1, 2]
    with pytest.raises(errors.InvalidPlacement):
        make_cluster(None, 1, [BrokerInfo(0, "http://a"), BrokerInfo(0, "http://b")])
    with pytest.raises(errors.InvalidPlacement):
        make_cluster(None, 1, [])


def test_an_older_cluster_epoch_is_stale_and_the_same_one_is_taken() -> None:
    current = cluster(epoch=5)
    with pytest.raises(errors.StaleEpoch):
        make_cluster(current, 4, BROKERS)
    assert make_cluster(current, 5, BROKERS).epoch == 5
    moved = make_cluster(current, 6, [BrokerInfo(0, "http://new"), BROKERS[0], BROKERS[2]])
    assert moved.broker(0) == BrokerInfo(0, "http://new")


def test_a_cluster_push_keeps_topics_and_may_not_orphan_partitions() -> None:
    current = with_topic(cluster(), topic(placement=(0, 1)))
    kept = make_cluster(current, 2, [BrokerInfo(0, "http://a"), BrokerInfo(1, "http://b")])
    assert kept.topics == current.topics
    with pytest.raises(errors.InvalidPlacement, match="broker"):
        make_cluster(current, 2, [BrokerInfo(0, "http://a")])


def test_topic_pushes_need_the_cluster_and_known_brokers_for_every_partition() -> None:
    with pytest.raises(errors.InvalidPlacement):
        with_topic(None, topic())
    with pytest.raises(errors.InvalidPlacement):
        with_topic(cluster(), topic(placement=(0, 7)))
    short = TopicPlacement("t", 3, {}, (0, 1))
    with pytest.raises(errors.InvalidPlacement):
        with_topic(cluster(), short)
    placed = with_topic(cluster(), topic())
    assert placed.topics["t"].hosted_by(1) == frozenset({1})
    assert placed.owner("t", 2) == BrokerInfo(2, "http://c")
    assert placed.owner("t", 3) is None and placed.owner("nope", 0) is None
    assert "t" not in without_topic(placed, "t").topics


def test_topic_epochs_and_partition_counts_only_move_forward() -> None:
    placed = with_topic(cluster(), topic(epoch=3))
    with pytest.raises(errors.StaleEpoch):
        with_topic(placed, topic(epoch=2))
    assert with_topic(placed, topic(epoch=3)).topics["t"].epoch == 3
    # Once a topic has an epoch, a push that moves a partition needs a higher one: without
    # one, or at the same epoch, it cannot be told from a late push. A push that moves
    # nothing (growth, settings) keeps the topic's epoch.
    moved = (1, 1, 2)
    for late in (topic(placement=moved), topic(placement=moved, epoch=3)):
        with pytest.raises(errors.StaleEpoch):
            with_topic(placed, late)
    assert with_topic(placed, topic(placement=moved, epoch=4)).topics["t"].epoch == 4
    assert with_topic(placed, topic()).topics["t"].epoch == 3
    unversioned = with_topic(cluster(), topic())
    assert with_topic(unversioned, topic()).topics["t"].epoch is None  # never had one
    assert with_topic(unversioned, topic(epoch=1)).topics["t"].epoch == 1
    with pytest.raises(errors.InvalidPartitions):
        with_topic(placed, topic(placement=(0, 1), epoch=3))
    grown = with_topic(placed, topic(placement=(0, 1, 2, 0), epoch=4))
    assert grown.topics["t"].partitions == 4


def test_the_coordinator_serves_the_groups_partition_of_the_offsets_topic() -> None:
    metadata = cluster()
    assert metadata.coordinator("billing") is None  # the offsets topic is not placed yet
    assert metadata.group_partition("billing") is None
    placed = with_topic(metadata, topic(GROUP_OFFSETS_TOPIC, (2, 0, 1, 1)))
    by_id = {b.id: b for b in BROKERS}
    for group in ("billing", "a", "orders-consumers", "x" * 200):
        partition = group_offsets_partition(group, 4)
        assert placed.group_partition(group) == partition
        assert placed.coordinator(group) == by_id[(2, 0, 1, 1)[partition]]


@pytest.mark.parametrize("partitions", [1, 2, 3, 16])
def test_a_groups_partition_is_kafkas_partitioner_over_the_group_id(partitions: int) -> None:
    # Kafka's murmur2 test vector: "21" hashes to -973932308 as a signed 32-bit integer.
    assert group_offsets_partition("21", partitions) == (-973932308 & 0x7FFFFFFF) % partitions
