"""Where a reset of a group's committed offsets lands: the partitions it covers, and what
``earliest``, ``latest`` or a time means for a partition served here.

Used by the :class:`~millstream.broker.groups.coordinator.GroupCoordinator` (a standalone
broker serves every partition) and by the reset route of ``broker/http/groups.py``, which asks
the brokers serving a cluster's other partitions for theirs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from millstream import errors
from millstream.broker.storage.log_manager import LogManager
from millstream.broker.storage.partition_log import PartitionLog

ResetTarget = Literal["earliest", "latest", "timestamp", "offsets"]
RESET_TARGETS: tuple[ResetTarget, ...] = ("earliest", "latest", "timestamp", "offsets")


def reset_partitions(
    logs: LogManager, group_id: str, committed_topics: Iterable[str], topics: Iterable[str] | None
) -> list[tuple[str, int]]:
    """Every partition of ``topics``; by default, of the topics the group committed in."""
    if topics is None:
        topics = sorted(set(committed_topics))
        if not topics:
            raise errors.InvalidRequest(
                f"group {group_id!r} has no committed offsets: name the topics to reset"
            )
    return [(t, p) for t in topics for p in range(logs.topic(t).partitions)]


def check_timestamp(to: ResetTarget, timestamp_ms: int | None) -> None:
    if to == "timestamp" and timestamp_ms is None:
        raise errors.InvalidRequest('a reset to a time needs "timestamp" (epoch ms)')


def offset_at(log: PartitionLog, to: ResetTarget, timestamp_ms: int | None) -> int:
    """The offset a reset ``to`` earliest, latest or ``timestamp_ms`` means in ``log``."""
    check_timestamp(to, timestamp_ms)
    if to == "earliest":
        return log.log_start_offset
    if to == "latest":
        return log.high_watermark
    if to == "timestamp" and timestamp_ms is not None:
        return log.offset_for_timestamp(timestamp_ms)
    raise errors.InvalidRequest(f'"to" must be earliest, latest or timestamp here, got {to!r}')
