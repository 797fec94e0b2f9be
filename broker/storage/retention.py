"""Which segments retention deletes: pure functions of the segments, the config and the time.

Called by :meth:`~millstream.broker.storage.partition_log.PartitionLog.enforce_retention`,
which deletes the files. Only whole closed segments go, and only from the start of the log,
so the log stays contiguous and its start offset simply moves to the first segment kept:

- ``retention.ms`` (-1: forever): a segment whose largest timestamp is older than
  ``now - retention.ms``. Timestamps come from producers and need not grow, so deletion
  stops at the first segment that is still young.
- ``retention.bytes`` (-1: no limit): the oldest segments while the partition is larger
  than the limit (the active segment counts, but is never deleted).
- A floor the log's owner set (:meth:`PartitionLog.delete_below`): segments that end at or
  below it. The group-offsets store sets it after writing a compacted snapshot of itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from millstream.broker.storage.config import TopicConfig


@dataclass(frozen=True, slots=True)
class SegmentStats:
    base_offset: int
    next_offset: int  # one past its last record
    size: int
    largest_timestamp: int  # -1 when empty
    deletable: bool  # False for the active segment (and any the log must keep for now)


def segments_to_delete(
    segments: Sequence[SegmentStats], config: TopicConfig, now_ms: int, floor: int = 0
) -> int:
    """How many segments, from the first, retention deletes."""
    return max(
        expired_by_time(segments, config, now_ms),
        excess_by_size(segments, config),
        below_floor(segments, floor),
    )


def below_floor(segments: Sequence[SegmentStats], floor: int) -> int:
    count = 0
    for segment in segments:
        if not segment.deletable or segment.next_offset > floor:
            break
        count += 1
    return count


def expired_by_time(segments: Sequence[SegmentStats], config: TopicConfig, now_ms: int) -> int:
    if config.retention_ms < 0:
        return 0
    cutoff = now_ms - config.retention_ms
    count = 0
    for segment in segments:
        if not segment.deletable or segment.largest_timestamp >= cutoff:
            break
        count += 1
    return count


def excess_by_size(segments: Sequence[SegmentStats], config: TopicConfig) -> int:
    if config.retention_bytes < 0:
        return 0
    excess = sum(segment.size for segment in segments) - config.retention_bytes
    count = 0
    for segment in segments:
        if excess <= 0 or not segment.deletable:
            break
        excess -= segment.size
        count += 1
    return count
