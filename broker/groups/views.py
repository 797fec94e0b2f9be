"""What a group looks like from outside: its description (members, their assignments, and per
partition the committed offset, log end and lag) and its one-line summary.

Built by the :class:`~millstream.broker.groups.coordinator.GroupCoordinator` for
``GET /v1/groups`` and ``GET /v1/groups/{group}`` (whose route then fills in the log ends of
partitions other brokers serve) and for the metrics. Reads only: nothing here changes a group.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from millstream import errors
from millstream.broker.groups.group import Group
from millstream.broker.groups.offsets import CommittedOffset, TopicPartitionKey
from millstream.broker.storage.log_manager import LogManager
from millstream.consumer_protocol import PROTOCOL_TYPE, decode_assignment


def describe(
    group: Group, committed: Mapping[TopicPartitionKey, CommittedOffset], logs: LogManager
) -> dict[str, Any]:
    owners: dict[TopicPartitionKey, str] = {}
    members = []
    decoded = group.protocol_type == PROTOCOL_TYPE
    assignments = group.assignments()
    for member in group.members.values():
        request = member.request
        assignment = None
        if decoded and member.member_id in assignments:
            assignment = _decode(assignments[member.member_id])
            for tp in assignment:
                owners[tp] = member.member_id
        members.append(
            {
                "member_id": member.member_id,
                "client_id": request.client_id,
                "client_host": request.client_host,
                "session_timeout_ms": round(request.session_timeout_s * 1000),
                "group_instance_id": request.group_instance_id,
                "assignment": None if assignment is None else _by_topic(assignment),
            }
        )
    offsets = lag(committed, logs, owners)
    known = [o["lag"] for o in offsets if o["lag"] is not None]
    return {
        "group": group.group_id,
        "state": str(group.state),
        "protocol_type": group.protocol_type,
        "protocol": group.protocol,
        "generation": group.generation,
        "leader": group.leader,
        "members": members,
        "offsets": offsets,
        "lag": sum(known) if known else None,
    }


def summary(group_id: str, group: Group | None) -> dict[str, Any]:
    """A line of ``GET /v1/groups`` (``group`` None: it has no members here)."""
    if group is None:
        return {"group": group_id, "state": "Empty", "protocol_type": None, "members": 0}
    return {
        "group": group_id,
        "state": str(group.state),
        "protocol_type": group.protocol_type,
        "members": len(group.members),
    }


def lag(
    committed: Mapping[TopicPartitionKey, CommittedOffset],
    logs: LogManager,
    owners: Mapping[TopicPartitionKey, str] | None = None,
) -> list[dict[str, Any]]:
    """Per partition committed or owned: committed offset, log end (None where this broker
    does not have it), lag, owner."""
    owners = owners or {}
    rows = []
    for topic, partition in sorted(set(committed) | set(owners)):
        entry = committed.get((topic, partition))
        try:
            end: int | None = logs.log(topic, partition).high_watermark
        except errors.NotFound:
            end = None  # the topic was deleted since
        behind = None
        if entry is not None and end is not None:
            behind = max(0, end - entry.offset)
        rows.append(
            {
                "topic": topic,
                "partition": partition,
                "committed": None if entry is None else entry.offset,
                "log_end_offset": end,
                "lag": behind,
                "member_id": owners.get((topic, partition)),
            }
        )
    return rows


def _decode(assignment: bytes) -> list[tuple[str, int]]:
    try:
        return decode_assignment(assignment) if assignment else []
    except errors.MillstreamError:
        return []  # the leader's own format; nothing the broker can show


def _by_topic(partitions: Iterable[tuple[str, int]]) -> list[dict[str, Any]]:
    topics: dict[str, list[int]] = {}
    for topic, partition in partitions:
        topics.setdefault(topic, []).append(partition)
    return [{"topic": t, "partitions": sorted(ps)} for t, ps in sorted(topics.items())]
