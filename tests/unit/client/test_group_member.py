"""A group member's state machine against a scripted broker: joins, syncs, eager and
cooperative revocation, lost partitions, heartbeats, leaving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from millstream import errors
from millstream.client.group import GroupMember, MemberSettings, Partitions
from millstream.client.group_api import Joined, JoinedMember
from millstream.client.models import TopicPartition
from millstream.consumer_protocol import (
    Subscription,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)

T0, T1, T2, T3 = (TopicPartition("t", p) for p in range(4))
_MADE: list[GroupMember] = []


@pytest.fixture(autouse=True)
async def stop_members() -> AsyncIterator[None]:
    yield
    while _MADE:
        member = _MADE.pop()
        member._api.joins = []  # type: ignore[attr-defined]
        for task in (member._join_task, member._heartbeat_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


@dataclass
class Log:
    events: list[tuple[Any, ...]] = field(default_factory=list)


class FakeApi:
    """Answers joins and syncs from scripts; records what the member sent."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.joins: list[Joined | Exception] = []
        self.syncs: list[bytes | Exception] = []
        self.heartbeat_error: Exception | None = None
        self.subscriptions: list[Subscription] = []
        self.leader_assignments: list[dict[str, list[tuple[str, int]]]] = []
        self.heartbeats = 0
        self.left: list[str] = []

    async def join(
        self, member_id: str, client_id: str, protocols: Sequence[tuple[str, bytes]], **_: int
    ) -> Joined:
        self.log.events.append(("join", member_id))
        self.subscriptions.append(decode_subscription(protocols[0][1]))
        answer = self.joins.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def sync(
        self, member_id: str, generation: int, assignments: dict[str, bytes] | None, **_: int
    ) -> bytes:
        self.log.events.append(("sync", member_id, generation))
        if assignments is not None:
            decoded = {m: decode_assignment(a) for m, a in assignments.items()}
            self.leader_assignments.append(decoded)
        answer = self.syncs.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def heartbeat(self, member_id: str, generation: int) -> None:
        self.heartbeats += 1
        if self.heartbeat_error is not None:
            raise self.heartbeat_error

    async def leave(self, member_id: str) -> None:
        self.left.append(member_id)


class FakeAdmin:
    transport: Any = None

    def __init__(self, partitions: dict[str, int]) -> None:
        self.partitions = partitions

    async def topic_metadata(self, name: str) -> Any:
        if name not in self.partitions:
            raise errors.UnknownTopic(name)

        @dataclass
        class Described:
            partition_count: int

        return Described(self.partitions[name])


class Listener:
    def __init__(self, log: Log) -> None:
        self.log = log

    async def partitions_revoked(self, partitions: Partitions, *, lost: bool) -> None:
        self.log.events.append(("revoked", sorted(partitions), lost))

    async def partitions_assigned(self, partitions: Partitions) -> None:
        self.log.events.append(("assigned", sorted(partitions)))


def make(
    assignors: tuple[str, ...], partitions: dict[str, int] | None = None
) -> tuple[GroupMember, FakeApi, Listener, Log]:
    log = Log()
    settings = MemberSettings("me", assignors, 1_000, 1_000, 50, (0.01, 0.02))
    admin: Any = FakeAdmin(partitions or {"t": 4})
    member = GroupMember(admin, "g", settings, wake=lambda: None)
    api = FakeApi(log)
    member._api = api  # type: ignore[assignment]
    _MADE.append(member)
    return member, api, Listener(log), log


def joined(member: str, generation: int, protocol: str, leader: str = "other") -> Joined:
    return Joined(member, generation, protocol, leader, ())


async def rebalance(member: GroupMember, listener: Listener) -> None:
    """Run maintain() until the join it starts has been applied."""
    await member.maintain(listener)
    assert member._join_task is not None
    await asyncio.wait_for(asyncio.shield(member._join_task), 5)
    await member.maintain(listener)


async def test_the_leader_assigns_every_member_from_partition_counts() -> None:
    member, api, listener, log = make(("range",), {"t": 4, "u": 1})
    member.subscribe(["t", "u", "missing"])
    subscription = encode_subscription(Subscription(("t", "u")))
    api.joins.append(
        Joined(
            "me-1",
            1,
            "range",
            "me-1",
            (JoinedMember("me-1", "me", subscription), JoinedMember("you-2", "you", subscription)),
        )
    )
    api.syncs.append(encode_assignment([("t", 0), ("t", 1), ("u", 0)]))
    await rebalance(member, listener)
    assert api.leader_assignments == [
        {"me-1": [("t", 0), ("t", 1), ("u", 0)], "you-2": [("t", 2), ("t", 3)]}
    ]
    assert (member.member_id, member.generation) == ("me-1", 1)
    assert member.assignment == {T0, T1, TopicPartition("u", 0)}
    assert log.events[-1] == ("assigned", [T0, T1, TopicPartition("u", 0)])
    assert api.subscriptions[0].topics == ("t", "u", "missing")


async def test_an_empty_assignment_is_no_partitions() -> None:
    member, api, listener, log = make(("range",))
    member.subscribe(["t"])
    api.joins.append(joined("me-1", 1, "range"))
    api.syncs.append(b"")
    await rebalance(member, listener)
    assert member.assignment == frozenset()
    assert log.events[-1] == ("assigned", [])


async def test_eager_members_give_everything_up_before_they_rejoin() -> None:
    member, api, listener, log = make(("range",))
    member.subscribe(["t"])
    api.joins += [joined("me-1", 1, "range"), joined("me-1", 2, "range")]
    api.syncs += [encode_assignment([("t", 0), ("t", 1)]), encode_assignment([("t", 1)])]
    await rebalance(member, listener)
    log.events.clear()
    member.request_rejoin()
    await rebalance(member, listener)
    assert log.events == [
        ("revoked", [T0, T1], False),
        ("join", "me-1"),
        ("sync", "me-1", 2),
        ("assigned", [T1]),
    ]
    assert api.subscriptions[1].owned == ()  # nothing is owned while rejoining


async def test_cooperative_members_keep_theirs_and_revoke_only_what_moves() -> None:
    member, api, listener, log = make(("cooperative-sticky",))
    member.subscribe(["t"])
    api.joins += [joined("me-1", g, "cooperative-sticky") for g in (1, 2, 3)]
    api.syncs += [
        encode_assignment([("t", 0), ("t", 1)]),
        encode_assignment([("t", 0)]),
        encode_assignment([("t", 0), ("t", 2)]),
    ]
    await rebalance(member, listener)
    log.events.clear()
    member.request_rejoin()
    await rebalance(member, listener)
    assert api.subscriptions[1].owned == (("t", 0), ("t", 1))
    assert api.subscriptions[1].generation == 1
    assert log.events[:4] == [
        ("join", "me-1"),
        ("sync", "me-1", 2),
        ("revoked", [T1], False),
        ("assigned", []),
    ]
    # Having revoked something, it rejoins at once (in the same poll) so that the partition
    # reaches its new owner in the next generation.
    assert member._join_task is not None
    await member._join_task
    await member.maintain(listener)
    assert api.subscriptions[2].owned == (("t", 0),)
    assert api.subscriptions[2].generation == 2
    assert log.events[-1] == ("assigned", [T2])
    assert (member.generation, member.assignment) == (3, {T0, T2})
    assert not member._rejoin and member._join_task is None


async def test_a_member_the_broker_forgot_hands_its_partitions_back_as_lost() -> None:
    member, api, listener, log = make(("cooperative-sticky",))
    member.subscribe(["t"])
    api.joins += [joined("me-1", 1, "cooperative-sticky"), joined("me-2", 5, "cooperative-sticky")]
    api.syncs += [encode_assignment([("t", 0)]), encode_assignment([("t", 3)])]
    await rebalance(member, listener)
    log.events.clear()
    api.heartbeat_error = errors.UnknownMember("session timed out")
    for _ in range(100):
        await asyncio.sleep(0.02)
        if member._fenced is not None:
            break
    api.heartbeat_error = None
    await rebalance(member, listener)
    assert log.events == [
        ("revoked", [T0], True),
        ("join", ""),  # a new member id: the old one is gone
        ("sync", "me-2", 5),
        ("assigned", [T3]),
    ]
    assert api.subscriptions[1].owned == ()


async def test_a_join_refused_while_holding_partitions_loses_them_first() -> None:
    member, api, listener, log = make(("cooperative-sticky",))
    member.subscribe(["t"])
    api.joins += [
        joined("me-1", 1, "cooperative-sticky"),
        errors.UnknownMember("gone"),
        joined("me-2", 3, "cooperative-sticky"),
    ]
    api.syncs += [encode_assignment([("t", 0)]), encode_assignment([("t", 0)])]
    await rebalance(member, listener)
    log.events.clear()
    member.request_rejoin()
    await member.maintain(listener)
    assert member._join_task is not None
    await asyncio.gather(member._join_task, return_exceptions=True)
    await rebalance(member, listener)
    assert log.events == [
        ("join", "me-1"),
        ("revoked", [T0], True),
        ("join", ""),
        ("sync", "me-2", 3),
        ("assigned", [T0]),
    ]


async def test_rebalance_in_progress_during_a_sync_joins_again() -> None:
    member, api, listener, log = make(("range",))
    member.subscribe(["t"])
    api.joins += [joined("me-1", 1, "range"), joined("me-1", 2, "range")]
    api.syncs += [errors.RebalanceInProgress("again"), encode_assignment([("t", 2)])]
    await rebalance(member, listener)
    assert [e[0] for e in log.events] == ["join", "sync", "join", "sync", "assigned"]
    assert (member.generation, member.assignment) == (2, {T2})


async def test_a_join_that_cannot_succeed_is_raised_by_the_poll_and_tried_again() -> None:
    member, api, listener, _ = make(("range",))
    member.subscribe(["t"])
    api.joins += [errors.InconsistentGroupProtocol("no"), joined("me-1", 1, "range")]
    api.syncs.append(encode_assignment([("t", 0)]))
    await member.maintain(listener)
    assert member._join_task is not None
    await asyncio.gather(member._join_task, return_exceptions=True)
    with pytest.raises(errors.InconsistentGroupProtocol):
        await member.maintain(listener)
    await rebalance(member, listener)
    assert member.assignment == {T0}


async def test_rebalance_in_progress_from_a_heartbeat_asks_for_a_rejoin() -> None:
    member, api, listener, _ = make(("range",))
    member.subscribe(["t"])
    api.joins.append(joined("me-1", 1, "range"))
    api.syncs.append(encode_assignment([("t", 0)]))
    await rebalance(member, listener)
    assert not member._rejoin
    api.heartbeat_error = errors.RebalanceInProgress("rejoin")
    for _ in range(100):
        await asyncio.sleep(0.02)
        if member._rejoin:
            break
    assert member._rejoin and member._fenced is None
    assert member.assignment == {T0}  # given up at the next poll, not in the background
    await member.close(listener)


async def test_a_stale_refusal_is_ignored() -> None:
    member, api, listener, _ = make(("range",))
    member.subscribe(["t"])
    api.joins.append(joined("me-1", 4, "range"))
    api.syncs.append(encode_assignment([("t", 0)]))
    await rebalance(member, listener)
    member.fenced(errors.IllegalGeneration("old"), ("me-1", 3))
    assert member._fenced is None and not member._rejoin
    member.fenced(errors.IllegalGeneration("now"), ("me-1", 4))
    assert member._fenced is not None and member._rejoin


async def test_close_gives_everything_up_and_leaves() -> None:
    member, api, listener, log = make(("cooperative-sticky",))
    member.subscribe(["t"])
    api.joins.append(joined("me-1", 1, "cooperative-sticky"))
    api.syncs.append(encode_assignment([("t", 0), ("t", 3)]))
    await rebalance(member, listener)
    await member.close(listener)
    assert log.events[-1] == ("revoked", [T0, T3], False)
    assert api.left == ["me-1"]
    assert member.commit_identity() is None
    assert api.heartbeats >= 0
