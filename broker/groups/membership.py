"""A Stable group's membership as the group-offsets log keeps it, so that the coordinator that
takes a group over (its offsets partition moved, or the broker restarted) carries the
generation on instead of starting a rebalance: a member that heartbeats or commits with its
member id and generation is still a member there. Kafka keeps the same in
``__consumer_offsets`` (the value of its group metadata record).

The :class:`~millstream.broker.groups.coordinator.GroupCoordinator` stores it with the group's
generation (:meth:`~millstream.broker.groups.offsets.OffsetStore.record_membership`) when a
generation's assignment is complete, and calls :func:`restore` for each group that has one
when the partition is loaded. When a rebalance begins, or the last member goes, a record
without members replaces it: a group is only ever restored into the generation its members
were told, with the assignments they were given, and a group taken over in the middle of a
rebalance has its members rejoin (their calls failed with ``not_coordinator``).

Every restored member starts a fresh session, so one that went while no broker coordinated
the group (its leave reached a coordinator whose partition was already leaving) is evicted
once its session times out, as it would have been.

JSON, bytes in base64::

    {"protocol_type", "protocol", "leader",
     "members": [{"id", "client_id", "client_host", "session_timeout_ms",
                  "rebalance_timeout_ms", "protocols": [[name, metadata]], "assignment",
                  "group_instance_id"?}],
     "replaced": {member id: group instance id}}   (static members' ids taken over, fenced)
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from millstream.broker.groups.group import Group, GroupState, JoinRequest, Member


def snapshot(group: Group) -> dict[str, Any]:
    """The membership of a Stable ``group``, as stored."""
    if group.state is not GroupState.STABLE:
        raise ValueError(f"group {group.group_id!r} is {group.state}, not Stable")
    return {
        "protocol_type": group.protocol_type,
        "protocol": group.protocol,
        "leader": group.leader,
        "members": [_member(m) for m in group.members.values()],
        "replaced": dict(group.replaced),
    }


def restore(
    group_id: str,
    generation: int,
    stored: Mapping[str, Any],
    now: float,
    *,
    initial_rebalance_delay_s: float = 0.0,
) -> Group:
    """The Stable group at ``generation`` that ``stored`` describes; its members' sessions
    start at ``now``. ValueError, KeyError or TypeError for a value that does not parse."""
    protocol_type = str(stored["protocol_type"])
    members = [_restored_member(m, protocol_type, now) for m in stored["members"]]
    if not members:
        raise ValueError("a stored membership without members")
    leader = str(stored["leader"])
    if leader not in {m.member_id for m in members}:
        raise ValueError(f"the leader {leader!r} is not a member")
    return Group(
        group_id,
        generation=generation,
        initial_rebalance_delay_s=initial_rebalance_delay_s,
        state=GroupState.STABLE,
        protocol_type=protocol_type,
        protocol=str(stored["protocol"]),
        leader=leader,
        members={m.member_id: m for m in members},
        replaced={str(k): str(v) for k, v in (stored.get("replaced") or {}).items()},
    )


def _member(member: Member) -> dict[str, Any]:
    request = member.request
    stored: dict[str, Any] = {
        "id": member.member_id,
        "client_id": request.client_id,
        "client_host": request.client_host,
        "session_timeout_ms": round(request.session_timeout_s * 1000),
        "rebalance_timeout_ms": round(request.rebalance_timeout_s * 1000),
        "protocols": [[name, _text(metadata)] for name, metadata in request.protocols],
        "assignment": _text(member.assignment),
    }
    if request.group_instance_id is not None:
        stored["group_instance_id"] = request.group_instance_id
    return stored


def _restored_member(stored: Mapping[str, Any], protocol_type: str, now: float) -> Member:
    member_id = str(stored["id"])
    request = JoinRequest(
        member_id,
        str(stored["client_id"]),
        str(stored["client_host"]),
        int(stored["session_timeout_ms"]) / 1000,
        int(stored["rebalance_timeout_ms"]) / 1000,
        protocol_type,
        tuple((str(name), _bytes(metadata)) for name, metadata in stored["protocols"]),
        None if stored.get("group_instance_id") is None else str(stored["group_instance_id"]),
    )
    return Member(member_id, request, now, assignment=_bytes(stored["assignment"]), joined=True)


def _text(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _bytes(text: object) -> bytes:
    if not isinstance(text, str):
        raise TypeError(f"base64 text expected, got {type(text).__name__}")
    return base64.b64decode(text, validate=True)
