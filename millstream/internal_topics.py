"""The topics the system keeps for itself, and which of their partitions holds a group.

Shared by the broker (which stores committed offsets in the group-offsets topic and
coordinates a group where that topic's partition for the group is served), the client
(which finds a group's coordinator the same way) and the operator (which places and moves
the topic like any other, so a group's offsets follow its partition when brokers come and
go: Kafka's ``__consumer_offsets``).

Names that begin with ``__`` are reserved: users cannot create, delete or produce to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from millstream.partitioner import partition_for_key

GROUP_OFFSETS_TOPIC: Final = "__group_offsets"
# Fixed when the topic is created: a group's partition depends on it, so it never changes.
GROUP_OFFSETS_PARTITIONS: Final = 16
# Kept until compacted by the broker (the latest record of a key may be arbitrarily old);
# each commit fsynced before it is acknowledged, whatever the brokers' topic defaults say;
# small segments so that a compaction frees space soon.
GROUP_OFFSETS_CONFIG: Final[Mapping[str, int]] = {
    "retention.ms": -1,
    "retention.bytes": -1,
    "flush.ms": 0,
    "segment.bytes": 16 * 1024 * 1024,
}
RESERVED_PREFIX: Final = "__"


def is_internal(topic: str) -> bool:
    return topic.startswith(RESERVED_PREFIX)


def group_offsets_partition(group_id: str, partitions: int) -> int:
    """The partition of the group-offsets topic that holds ``group_id``'s offsets; the broker
    serving it coordinates the group. Brokers and clients compute it alike."""
    return partition_for_key(group_id.encode(), partitions)
