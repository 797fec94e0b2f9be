"""The ``roundrobin`` assignor: Kafka's RoundRobinAssignor, an eager protocol.

Called through :func:`millstream.client.assignors.assignor_for` by the group leader. Every
partition of every subscribed topic, sorted by topic then number, is dealt in turn to the
members sorted by id; a member that does not subscribe to the partition's topic is skipped and
the deal goes on from the member after the one served. With identical subscriptions the counts
differ by at most one; with different subscriptions the skipping can leave them uneven, as in
Kafka.

Our own rather than kafka-python's ``RoundRobinPartitionAssignor`` (3.0.12): when it skips a
member it takes the next entry of its member cycle, an (instance id, member id) pair, as a
member id, so it raises ``KeyError`` as soon as one member does not subscribe to a topic that
another member does: a group with different subscriptions would crash its leader.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

from millstream.client.models import TopicPartition
from millstream.consumer_protocol import Subscription

__all__ = ["RoundRobinAssignor"]


class RoundRobinAssignor:
    name: ClassVar[str] = "roundrobin"
    rebalance_protocol: ClassVar[Literal["eager"]] = "eager"

    def assign(
        self, partitions: Mapping[str, int], subscriptions: Mapping[str, Subscription]
    ) -> dict[str, list[TopicPartition]]:
        members = sorted(subscriptions)
        topics_of = {member: frozenset(subscriptions[member].topics) for member in members}
        subscribed = {topic for topics in topics_of.values() for topic in topics}
        assignment: dict[str, list[TopicPartition]] = {member: [] for member in members}
        turn = 0  # index into members of the next one to be dealt a partition
        for topic in sorted(subscribed & partitions.keys()):
            for partition in range(partitions[topic]):
                # Some member subscribes to the topic, so this stops within one lap.
                while topic not in topics_of[members[turn]]:
                    turn = (turn + 1) % len(members)
                assignment[members[turn]].append(TopicPartition(topic, partition))
                turn = (turn + 1) % len(members)
        return assignment
