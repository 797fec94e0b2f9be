"""The ``range`` assignor: Kafka's RangeAssignor, an eager protocol.

Called through :func:`millstream.client.assignors.assignor_for` by the group leader. Per topic,
the subscribers sorted by member id each take a contiguous run of partitions; when the count
does not divide evenly, the first members take one more. With two members and two topics of
three partitions, the first member gets p0 and p1 of each topic and the second p2 of each, so
members that sort first carry more when many topics are uneven.

The algorithm is kafka-python's (it passes our determinism and coverage tests). Its
assignors read a cluster-metadata object and JoinGroup member records; this module builds the
smallest stand-ins for both and turns the answer back into sorted :class:`TopicPartition`
lists, one per member.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.protocol.consumer.metadata import ConsumerProtocolSubscription

from millstream.client.models import TopicPartition
from millstream.consumer_protocol import Subscription

__all__ = ["RangeAssignor"]


class RangeAssignor:
    name: ClassVar[str] = "range"
    rebalance_protocol: ClassVar[Literal["eager"]] = "eager"

    def assign(
        self, partitions: Mapping[str, int], subscriptions: Mapping[str, Subscription]
    ) -> dict[str, list[TopicPartition]]:
        members = [
            _JoinedMember(member_id, _metadata(subscriptions[member_id], partitions))
            for member_id in sorted(subscriptions)
        ]
        assignments = RangePartitionAssignor.assign(_PartitionCounts(partitions), members)
        return {
            member.member_id: sorted(
                TopicPartition(assigned.topic, assigned.partition)
                for assigned in assignments[member.member_id].partitions()
            )
            for member in members
        }


@dataclass(frozen=True, slots=True)
class _PartitionCounts:
    """Stands in for kafka-python's ``ClusterMetadata``: the two methods its assignors call."""

    counts: Mapping[str, int]

    def topics(self) -> set[str]:
        return set(self.counts)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        count = self.counts.get(topic)
        return None if count is None else set(range(count))


@dataclass(frozen=True, slots=True)
class _JoinedMember:
    """Stands in for a JoinGroup response member. Millstream has no static membership."""

    member_id: str
    metadata: Any
    group_instance_id: None = None


def _metadata(subscription: Subscription, partitions: Mapping[str, int]) -> Any:
    # Each topic once (a repeated topic would count its member twice) and only topics that
    # exist (kafka-python logs a warning for every unknown one).
    topics = sorted({topic for topic in subscription.topics if topic in partitions})
    return ConsumerProtocolSubscription(version=0, topics=topics, user_data=b"")
