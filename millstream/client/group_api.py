"""The member side of the broker's group API: join, sync, heartbeat and leave, typed.

Used by :mod:`~millstream.client.group` only; administration of groups (listing, describing,
offsets) is :class:`~millstream.client.admin.Admin`'s. Protocol metadata and assignments are
opaque bytes here (base64 on the wire); :mod:`millstream.consumer_protocol` gives them their
meaning. Join and sync are answered only once the rebalance has got that far, so they are given
the rebalance timeout on top of the transport's own.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from millstream import errors
from millstream.client.transport import Transport, group_path


@dataclass(frozen=True, slots=True)
class JoinedMember:
    member_id: str
    client_id: str
    metadata: bytes


@dataclass(frozen=True, slots=True)
class Joined:
    """The answer to a join: the generation, the protocol chosen, and (for the leader only)
    every member with its protocol metadata."""

    member_id: str
    generation: int
    protocol: str
    leader: str
    members: tuple[JoinedMember, ...]

    @property
    def is_leader(self) -> bool:
        return self.member_id == self.leader


class GroupApi:
    """One group's member calls over a :class:`Transport` it does not own."""

    def __init__(self, transport: Transport, group_id: str, protocol_type: str) -> None:
        self.transport = transport
        self.group_id = group_id
        self.protocol_type = protocol_type

    async def join(
        self,
        member_id: str,
        client_id: str,
        protocols: Sequence[tuple[str, bytes]],
        *,
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        group_instance_id: str | None = None,
    ) -> Joined:
        body: dict[str, Any] = {
            "member_id": member_id,
            "client_id": client_id,
            "session_timeout_ms": session_timeout_ms,
            "rebalance_timeout_ms": rebalance_timeout_ms,
            "protocol_type": self.protocol_type,
            "protocols": [{"name": n, "metadata_base64": _b64(m)} for n, m in protocols],
        }
        if group_instance_id is not None:
            body["group_instance_id"] = group_instance_id
        answer = await self._call("join", body, rebalance_timeout_ms)
        try:
            members = tuple(
                JoinedMember(
                    str(m["member_id"]),
                    str(m.get("client_id") or ""),
                    base64.b64decode(m["metadata_base64"]),
                )
                for m in answer.get("members") or ()
            )
            return Joined(
                str(answer["member_id"]),
                int(answer["generation"]),
                str(answer["protocol"]),
                str(answer["leader"]),
                members,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise errors.MillstreamError(f"unexpected join answer from the broker: {exc}") from None

    async def sync(
        self,
        member_id: str,
        generation: int,
        assignments: Mapping[str, bytes] | None,
        *,
        rebalance_timeout_ms: int,
    ) -> bytes:
        """This member's assignment bytes; the leader hands in everyone's."""
        body: dict[str, Any] = {"member_id": member_id, "generation": generation}
        if assignments is not None:
            body["assignments"] = [
                {"member_id": m, "assignment_base64": _b64(a)} for m, a in assignments.items()
            ]
        answer = await self._call("sync", body, rebalance_timeout_ms)
        try:
            return base64.b64decode(answer.get("assignment_base64") or "")
        except (AttributeError, TypeError, ValueError) as exc:
            raise errors.MillstreamError(f"unexpected sync answer from the broker: {exc}") from None

    async def heartbeat(self, member_id: str, generation: int) -> None:
        """Keep the session alive; raises ``RebalanceInProgress`` when it is time to rejoin."""
        await self._call("heartbeat", {"member_id": member_id, "generation": generation})

    async def leave(self, member_id: str) -> None:
        await self._call("leave", {"member_id": member_id})

    async def _call(self, action: str, body: dict[str, Any], wait_ms: int = 0) -> Any:
        path = group_path(self.group_id, action)
        timeout_s = self.transport.timeout_s + wait_ms / 1000
        return await self.transport.call_json("POST", path, body, timeout_s=timeout_s)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
