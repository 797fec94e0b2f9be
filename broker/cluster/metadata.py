"""Cluster metadata as values: the brokers, every topic's placement, and the rules of a push.

Used by :mod:`~millstream.broker.cluster.node` (which applies pushes and persists the result)
and by the HTTP layer (which renders it). Pure: no I/O, no clock, so the rules are tested by
hand.

- The cluster push carries an ``epoch`` and the whole broker list. A push with an older epoch
  than the one kept is refused (``stale_epoch``): it is late or replayed. The same epoch again
  is taken (the operator re-pushes after a restart of its own).
- A topic push carries the whole topic: partition count, config overrides, the broker of every
  partition, the operator's ``topic_id`` and optionally an ``epoch`` of its own, compared
  with the topic's kept one the same way; once the topic has an epoch (pushed, or set by a
  move's fence, :mod:`.moves`), a push without one is refused as stale too. Partitions only
  grow.
- Every placed partition names a listed broker: a topic cannot be pushed before the cluster,
  nor a broker dropped from the cluster while partitions are still placed on it.
- A group's coordinator is the broker serving the group's partition of the group-offsets
  topic (:func:`millstream.internal_topics.group_offsets_partition`), which the operator
  places and moves like any topic; clients compute the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from millstream import errors
from millstream.internal_topics import GROUP_OFFSETS_TOPIC, group_offsets_partition


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    id: int
    url: str

    def address(self) -> errors.BrokerAddress:
        return errors.BrokerAddress(self.id, self.url)


@dataclass(frozen=True, slots=True)
class TopicPlacement:
    name: str
    partitions: int
    config: Mapping[str, Any]  # overrides of the broker defaults, as pushed
    placement: tuple[int, ...]  # the broker id serving each partition, by partition
    topic_id: str | None = None
    epoch: int | None = None

    def hosted_by(self, broker_id: int | None) -> frozenset[int]:
        return frozenset(p for p, b in enumerate(self.placement) if b == broker_id)


@dataclass(frozen=True, slots=True)
class ClusterMetadata:
    epoch: int
    brokers: tuple[BrokerInfo, ...]  # sorted by id
    topics: Mapping[str, TopicPlacement] = field(default_factory=dict)

    def broker(self, broker_id: int) -> BrokerInfo | None:
        return next((b for b in self.brokers if b.id == broker_id), None)

    def owner(self, topic: str, partition: int) -> BrokerInfo | None:
        """The broker serving the partition; None if the metadata has no such partition."""
        placement = self.topics.get(topic)
        if placement is None or not 0 <= partition < placement.partitions:
            return None
        return self.broker(placement.placement[partition])

    def group_partition(self, group_id: str) -> int | None:
        """The group's partition of the group-offsets topic; None while it is not placed."""
        offsets = self.topics.get(GROUP_OFFSETS_TOPIC)
        return None if offsets is None else group_offsets_partition(group_id, offsets.partitions)

    def coordinator(self, group_id: str) -> BrokerInfo | None:
        """The broker serving the group's partition; None while the topic is not placed."""
        partition = self.group_partition(group_id)
        return None if partition is None else self.owner(GROUP_OFFSETS_TOPIC, partition)


def make_cluster(
    current: ClusterMetadata | None, epoch: int, brokers: Iterable[BrokerInfo]
) -> ClusterMetadata:
    """The metadata after a cluster push (the topics kept); raises StaleEpoch or
    InvalidPlacement."""
    listed = tuple(sorted(brokers, key=lambda b: b.id))
    if not listed:
        raise errors.InvalidPlacement("a cluster has at least one broker")
    ids = [b.id for b in listed]
    if len(set(ids)) != len(ids):
        raise errors.InvalidPlacement(f"broker ids must be distinct, got {ids}")
    if current is None:
        return ClusterMetadata(epoch, listed)
    if epoch < current.epoch:
        raise errors.StaleEpoch(
            f"cluster epoch {epoch} is older than the broker's epoch {current.epoch}"
        )
    for topic in current.topics.values():
        missing = sorted(set(topic.placement) - set(ids))
        if missing:
            raise errors.InvalidPlacement(
                f"topic {topic.name!r} still has partitions on broker(s) {missing}: "
                "move them before dropping the broker"
            )
    return replace(current, epoch=epoch, brokers=listed)


def with_topic(current: ClusterMetadata | None, topic: TopicPlacement) -> ClusterMetadata:
    """The metadata after a topic push; raises InvalidPlacement, StaleEpoch or
    InvalidPartitions."""
    if current is None:
        raise errors.InvalidPlacement("push the cluster's brokers before its topics")
    if len(topic.placement) != topic.partitions:
        raise errors.InvalidPlacement(
            f"placement must name the broker of each of the {topic.partitions} partitions"
        )
    unknown = sorted({b for b in topic.placement if current.broker(b) is None})
    if unknown:
        raise errors.InvalidPlacement(f"placement names broker(s) {unknown}, not in the cluster")
    kept = current.topics.get(topic.name)
    if kept is not None:
        moved = any(a != b for a, b in zip(kept.placement, topic.placement, strict=False))
        if kept.epoch is not None and moved and (topic.epoch is None or topic.epoch <= kept.epoch):
            # A push that moves a partition must be told from a late one: once a topic has an
            # epoch (a move fenced it, say), moving needs a higher one. A push that moves
            # nothing (more partitions, other settings) keeps the topic's epoch.
            raise errors.StaleEpoch(
                f"topic {topic.name!r}: a push that moves partitions needs an epoch above the "
                f"broker's {kept.epoch}, got {topic.epoch}"
            )
        if kept.epoch is not None and topic.epoch is not None and topic.epoch < kept.epoch:
            raise errors.StaleEpoch(
                f"topic {topic.name!r}: epoch {topic.epoch} is older than the broker's {kept.epoch}"
            )
        if kept.epoch is not None and not moved and (topic.epoch or -1) < kept.epoch:
            topic = replace(topic, epoch=kept.epoch)
        if topic.partitions < kept.partitions:
            raise errors.InvalidPartitions(
                f"topic {topic.name!r} has {kept.partitions} partitions; they can only grow"
            )
    return replace(current, topics={**current.topics, topic.name: topic})


def without_topic(current: ClusterMetadata, name: str) -> ClusterMetadata:
    return replace(current, topics={n: t for n, t in current.topics.items() if n != name})
