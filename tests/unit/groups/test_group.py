"""The group state machine, driven by hand: joins, the rebalance barrier, sessions, fencing."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from millstream import errors
from millstream.broker.groups import membership
from millstream.broker.groups.group import Group, GroupState, JoinRequest, JoinResult
from millstream.consumer_protocol import Subscription, encode_subscription

SESSION = 10.0
REBALANCE = 5.0  # shorter than a session: a straggler is dropped before it expires


def request(
    member_id: str = "",
    protocols: tuple[tuple[str, bytes], ...] = (("range", b"m"),),
    protocol_type: str = "consumer",
    session: float = SESSION,
) -> JoinRequest:
    return JoinRequest(
        member_id, "client", "127.0.0.1", session, REBALANCE, protocol_type, protocols
    )


async def settle() -> None:
    await asyncio.sleep(0)


async def stable_group(size: int) -> tuple[Group, list[str]]:
    """A group of ``size`` members in generation 1, Stable, each assigned its own id."""
    group = Group("g", initial_rebalance_delay_s=0.5)  # so that all join in one round
    joins = [group.join(request(), now=0.0) for _ in range(size)]
    group.tick(now=0.5)
    results = [await j for j in joins]
    assert {r.generation for r in results} == {1}
    members = [r.member_id for r in results]
    leader = results[0].leader
    syncs = [
        group.sync(
            m,
            results[0].generation,
            {x: x.encode() for x in members} if m == leader else None,
            now=1.0,
        )
        for m in members
    ]
    for m, sync in zip(members, syncs, strict=True):
        assert (await sync).assignment == m.encode()
    assert group.state is GroupState.STABLE
    return group, members


async def test_a_lone_member_joins_leads_and_gets_its_assignment() -> None:
    group = Group("g")
    joined = await group.join(request(), now=0.0)
    assert joined.generation == 1
    assert joined.leader == joined.member_id
    assert [m.metadata for m in joined.members] == [b"m"]
    assert group.state is GroupState.COMPLETING_REBALANCE
    synced = await group.sync(joined.member_id, 1, {joined.member_id: b"a"}, now=0.0)
    assert synced.assignment == b"a"
    assert group.state is GroupState.STABLE


async def test_a_new_member_ends_the_generation_and_everyone_rejoins() -> None:
    group, (first,) = await stable_group(1)
    second = group.join(request(), now=2.0)
    assert group.state is GroupState.PREPARING_REBALANCE
    with pytest.raises(errors.RebalanceInProgress):
        group.heartbeat(first, 1, now=2.0)
    await settle()
    assert not second.done()  # waits for the known member to rejoin
    again = group.join(request(first), now=2.5)
    a, b = await again, await second
    assert a.generation == b.generation == 2
    assert a.leader == first and len(a.members) == 2 and b.members == ()
    # The ended generation cannot sync or commit any more.
    with pytest.raises(errors.IllegalGeneration):
        group.check_commit(first, 1, now=2.6)


async def test_followers_wait_for_the_leaders_assignment() -> None:
    group = Group("g")
    a = await group.join(request(), now=0.0)
    b_join = group.join(request(), now=0.0)
    a2 = await group.join(request(a.member_id), now=0.1)
    b = await b_join
    follower_sync = group.sync(b.member_id, 2, None, now=0.2)
    await settle()
    assert not follower_sync.done()
    await group.sync(a2.member_id, 2, {a.member_id: b"x", b.member_id: b"y"}, now=0.3)
    assert (await follower_sync).assignment == b"y"


async def test_a_member_that_does_not_rejoin_in_time_is_dropped() -> None:
    group, (a, b) = await stable_group(2)
    rejoin = group.join(request(a), now=5.0)
    group.tick(now=5.0 + REBALANCE - 0.1)
    assert not rejoin.done()
    group.tick(now=5.0 + REBALANCE + 0.1)
    result = await rejoin
    assert [m.member_id for m in result.members] == [a]
    assert b not in group.members
    with pytest.raises(errors.UnknownMember):
        group.heartbeat(b, group.generation, now=40.0)


async def test_a_silent_member_is_evicted_after_its_session_timeout() -> None:
    group, (a, b) = await stable_group(2)
    group.heartbeat(a, group.generation, now=1.0 + SESSION)
    group.tick(now=1.0 + SESSION + 0.5)  # b last heard at 1.0
    assert b not in group.members
    assert group.state is GroupState.PREPARING_REBALANCE
    assert group.next_deadline(now=12.0) is not None


async def test_the_last_member_leaving_empties_the_group() -> None:
    group, (a,) = await stable_group(1)
    group.leave(a, now=2.0)
    assert group.state is GroupState.EMPTY
    assert group.members == {}
    group.check_commit("", -1, now=3.0)  # an empty group takes commits without a member


async def test_leaving_completes_a_rebalance_waiting_only_for_the_leaver() -> None:
    group, (a, b) = await stable_group(2)
    rejoin = group.join(request(a), now=2.0)
    group.leave(b, now=2.1)
    result = await rejoin
    assert result.generation == 2 and [m.member_id for m in result.members] == [a]


async def test_commit_fencing() -> None:
    group, (a, _) = await stable_group(2)
    generation = group.generation
    group.check_commit(a, generation, now=2.0)
    with pytest.raises(errors.IllegalGeneration):
        group.check_commit(a, generation - 1, now=2.0)
    with pytest.raises(errors.UnknownMember):
        group.check_commit("stranger", generation, now=2.0)
    with pytest.raises(errors.UnknownMember):
        group.check_commit("", -1, now=2.0)  # anonymous commits only while the group is empty
    # While a rebalance is prepared, the current generation may still commit what it did.
    group.join(request(), now=3.0)
    group.check_commit(a, generation, now=3.0)


async def test_protocols_must_be_shared_and_of_one_type() -> None:
    group, _ = await stable_group(1)
    with pytest.raises(errors.InconsistentGroupProtocol):
        group.join(request(protocols=(("roundrobin", b""),)), now=2.0)
    with pytest.raises(errors.InconsistentGroupProtocol):
        group.join(request(protocol_type="connect"), now=2.0)


async def test_the_protocol_most_members_prefer_wins() -> None:
    group = Group("g")
    both = (("range", b""), ("cooperative-sticky", b""))
    sticky_first = (("cooperative-sticky", b""), ("range", b""))
    joins = [group.join(request(protocols=p), now=0.0) for p in (both, sticky_first, sticky_first)]
    first: JoinResult = await joins[0]
    rejoin = [group.join(request(first.member_id, protocols=both), now=0.1)]
    results = [await j for j in (*rejoin, *joins[1:])]
    assert {r.protocol for r in results} == {"cooperative-sticky"}


async def test_a_stable_followers_identical_rejoin_changes_nothing() -> None:
    group, (a, b) = await stable_group(2)
    follower = b if group.leader == a else a
    result = await group.join(request(follower), now=2.0)
    assert result.generation == group.generation and group.state is GroupState.STABLE


async def test_unknown_member_ids_are_refused() -> None:
    group = Group("g")
    with pytest.raises(errors.UnknownMember):
        group.join(request("made-up"), now=0.0)


async def test_a_deleted_group_refuses_everything() -> None:
    group, (a,) = await stable_group(1)
    with pytest.raises(errors.GroupNotEmpty):
        group.mark_dead()
    group.leave(a, now=2.0)
    group.mark_dead()
    with pytest.raises(errors.UnknownMember):
        group.join(request(), now=3.0)


async def test_the_initial_delay_lets_a_fleet_join_in_one_round() -> None:
    group = Group("g", initial_rebalance_delay_s=3.0)
    first = group.join(request(), now=0.0)
    second = group.join(request(), now=1.0)
    group.tick(now=2.9)
    assert not first.done()
    group.tick(now=3.0)
    assert (await first).generation == (await second).generation == 1


async def test_an_abandoned_first_join_leaves_no_ghost_member() -> None:
    group, (a,) = await stable_group(1)
    rejoin = group.join(request(a), now=2.0)
    newcomer = group.join(request(), now=2.0)  # its caller gives up before the answer
    group.abandon_join(newcomer, now=3.0)
    assert len(group.members) == 1
    group.abandon_join(rejoin, now=3.0)  # a known member knows its id: it stays
    assert list(group.members) == [a]
    assert (await rejoin).generation == 2


async def test_a_leader_that_never_syncs_is_dropped_and_the_rest_start_over() -> None:
    group = Group("g", initial_rebalance_delay_s=0.5)
    joins = [group.join(request(), now=0.0) for _ in range(2)]
    group.tick(now=0.5)
    leader, follower = sorted([await j for j in joins], key=lambda r: r.member_id != r.leader)
    waiting = group.sync(follower.member_id, 1, None, now=1.0)
    for t in (2.0, 3.0, 4.0):  # the leader heartbeats but never syncs
        group.heartbeat(leader.member_id, 1, now=t)
    group.tick(now=0.5 + REBALANCE + 0.1)
    assert leader.member_id not in group.members
    assert group.state is GroupState.PREPARING_REBALANCE
    with pytest.raises(errors.RebalanceInProgress):
        await waiting


def static(
    instance: str, protocols: tuple[tuple[str, bytes], ...] = (("range", b"m"),)
) -> JoinRequest:
    return dataclasses.replace(request(protocols=protocols), group_instance_id=instance)


def static_rejoin(member_id: str, instance: str) -> JoinRequest:
    return dataclasses.replace(static(instance), member_id=member_id)


def subscription(
    *topics: str, owned: tuple[tuple[str, int], ...] = (), generation: int = -1
) -> tuple[tuple[str, bytes], ...]:
    data = encode_subscription(Subscription(topics, owned=owned, generation=generation))
    return (("cooperative-sticky", data),)


async def stable_static_group() -> tuple[Group, JoinResult, JoinResult]:
    """pod-0 and pod-1 Stable in generation 1: (group, the leader's join, the follower's)."""
    group = Group("g", initial_rebalance_delay_s=0.5)
    joins = [group.join(static(f"pod-{i}", subscription("t")), now=0.0) for i in range(2)]
    group.tick(now=0.5)
    results = [await j for j in joins]
    leader = next(r for r in results if r.member_id == r.leader)
    follower = next(r for r in results if r.member_id != r.leader)
    plan = {leader.member_id: b"leader's", follower.member_id: b"follower's"}
    await group.sync(leader.member_id, leader.generation, plan, now=0.5)
    await group.sync(follower.member_id, follower.generation, None, now=0.5)
    return group, leader, follower


def instance_of(group: Group, member_id: str) -> str:
    instance = group.members[member_id].request.group_instance_id
    assert instance is not None
    return instance


async def test_a_static_member_restarted_takes_its_place_without_a_rebalance() -> None:
    group, _, follower = await stable_static_group()
    pod = instance_of(group, follower.member_id)
    # The follower's process restarts: no member id, the same instance id, the same topics
    # (it owns nothing now, where the old one owned its partitions).
    again = await group.join(static(pod, subscription("t")), now=1.0)
    assert again.generation == follower.generation and again.member_id != follower.member_id
    assert group.state is GroupState.STABLE and group.rebalances == 1
    synced = await group.sync(again.member_id, again.generation, None, now=1.0)
    assert synced.assignment == b"follower's"  # what the old process had
    # The old process is fenced for good: it must stop, not rejoin.
    for call in (
        lambda: group.heartbeat(follower.member_id, follower.generation, now=1.0),
        lambda: group.check_commit(follower.member_id, follower.generation, now=1.0),
        lambda: group.leave(follower.member_id, now=1.0),
    ):
        with pytest.raises(errors.FencedInstanceId):
            call()
    with pytest.raises(errors.FencedInstanceId):
        group.join(static_rejoin(follower.member_id, pod), now=1.0)
    # So it stays after a takeover: the replaced ids are stored with the membership.
    restored = membership.restore("g", group.generation, membership.snapshot(group), now=2.0)
    with pytest.raises(errors.FencedInstanceId):
        restored.heartbeat(follower.member_id, follower.generation, now=2.0)


async def test_a_static_leader_restarted_rebalances_once() -> None:
    group, leader, _ = await stable_static_group()
    pod = instance_of(group, leader.member_id)
    again = group.join(static(pod, subscription("t")), now=1.0)
    assert group.state is GroupState.PREPARING_REBALANCE  # it must see and watch its plan
    assert not again.done()


async def test_a_static_member_back_for_other_topics_rebalances() -> None:
    group, _, follower = await stable_static_group()
    pod = instance_of(group, follower.member_id)
    group.join(static(pod, subscription("t", "u")), now=1.0)
    assert group.state is GroupState.PREPARING_REBALANCE


async def test_a_static_member_back_with_other_protocols_rebalances() -> None:
    group = Group("g")
    first = await group.join(static("pod-0"), now=0.0)
    await group.sync(first.member_id, first.generation, {first.member_id: b""}, now=0.0)
    again = await group.join(static("pod-0", (("roundrobin", b"m"),)), now=1.0)
    assert again.generation == first.generation + 1 and again.protocol == "roundrobin"


async def test_a_static_member_replaced_mid_rebalance_fails_its_pending_join() -> None:
    group = Group("g", initial_rebalance_delay_s=0.5)
    joins = [group.join(static(f"pod-{i}"), now=0.0) for i in range(2)]
    group.tick(now=0.5)
    first, second = [await j for j in joins]
    assignments = {first.member_id: b"", second.member_id: b""}
    leader = first if first.leader == first.member_id else second
    await group.sync(leader.member_id, leader.generation, assignments, now=0.5)
    newcomer = group.join(request(), now=1.0)  # a rebalance begins: members must rejoin
    stale = group.join(static_rejoin(first.member_id, "pod-0"), now=1.0)
    assert not stale.done()  # pod-1 has not rejoined yet
    replacement = group.join(static("pod-0"), now=2.0)  # pod-0's process restarted meanwhile
    with pytest.raises(errors.FencedInstanceId):
        await stale
    rejoined = group.join(static_rejoin(second.member_id, "pod-1"), now=2.0)
    results = await asyncio.gather(newcomer, replacement, rejoined)
    assert {r.generation for r in results} == {first.generation + 1}
    assert first.member_id not in group.members and len(group.members) == 3
