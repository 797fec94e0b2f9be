"""The coordinator follows the group-offsets partitions: it coordinates a group exactly while
the group's partition is served here, gives the groups up when it leaves (pending answers
fail with not_coordinator), and picks them up with their offsets and generation when it
comes back."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from millstream import errors
from millstream.broker.groups.coordinator import (
    GroupCoordinator,
    OffsetEntry,
    ensure_offsets_topic,
)
from millstream.broker.groups.group import JoinRequest
from millstream.broker.groups.offsets import OffsetStore
from millstream.broker.groups.settings import GroupSettings
from millstream.broker.storage.config import TopicConfig
from millstream.broker.storage.log_manager import LogManager
from millstream.broker.storage.partition_log import PartitionLog
from millstream.internal_topics import (
    GROUP_OFFSETS_CONFIG,
    GROUP_OFFSETS_PARTITIONS,
    GROUP_OFFSETS_TOPIC,
    group_offsets_partition,
)

ALL = range(GROUP_OFFSETS_PARTITIONS)
T = TypeVar("T")


def request(member_id: str = "") -> JoinRequest:
    return JoinRequest(member_id, "client", "127.0.0.1", 10.0, 10.0, "consumer", (("range", b""),))


@pytest.fixture
async def logs(tmp_path: Path) -> AsyncIterator[LogManager]:
    manager = LogManager(tmp_path)
    manager.open()
    manager.create_topic("t", 2)
    yield manager
    await manager.close()


@pytest.fixture
async def coordinator(logs: LogManager) -> AsyncIterator[GroupCoordinator]:
    ensure_offsets_topic(logs)
    made = GroupCoordinator(logs)
    made.start()
    yield made
    await made.close()


def started(logs: LogManager, settings: GroupSettings | None = None) -> GroupCoordinator:
    """A coordinator of a standalone broker (the offsets topic made if need be), running."""
    ensure_offsets_topic(logs)
    coordinator = GroupCoordinator(logs, settings)
    coordinator.start()
    return coordinator


async def joined(coordinator: GroupCoordinator, group: str) -> tuple[str, int]:
    result = await coordinator.join(group, request())
    if not result.member_id:  # pragma: no cover - the protocol may ask for a second join
        result = await coordinator.join(group, request(result.member_id))
    await coordinator.sync(group, result.member_id, result.generation, {result.member_id: b""})
    return result.member_id, result.generation


async def eventually(call: Callable[[], T], timeout: float = 5.0) -> T:
    """``call()`` once it stops answering coordinator_not_available."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except errors.CoordinatorNotAvailable:
            assert time.monotonic() < deadline, "still loading"
            await asyncio.sleep(0.01)


def place(logs: LogManager, hosted: set[int], held: set[int] = set()) -> None:  # noqa: B006
    logs.ensure_topic(
        GROUP_OFFSETS_TOPIC, GROUP_OFFSETS_PARTITIONS, GROUP_OFFSETS_CONFIG, hosted, held
    )


async def test_a_standalone_broker_keeps_offsets_in_the_groups_partition(
    logs: LogManager, coordinator: GroupCoordinator
) -> None:
    assert logs.topic(GROUP_OFFSETS_TOPIC).partitions == GROUP_OFFSETS_PARTITIONS
    ensure_offsets_topic(logs)  # idempotent: a restart finds it
    member, generation = await joined(coordinator, "g")
    await coordinator.commit("g", member, generation, [OffsetEntry("t", 0, 7)])
    ends = {p: logs.log(GROUP_OFFSETS_TOPIC, p).log_end_offset for p in ALL}
    mine = group_offsets_partition("g", GROUP_OFFSETS_PARTITIONS)
    assert ends[mine] == 3  # the generation, its membership once Stable, then the commit
    assert all(end == 0 for p, end in ends.items() if p != mine)


async def test_groups_are_given_up_when_their_partition_leaves_and_resumed_when_it_comes(
    logs: LogManager, coordinator: GroupCoordinator
) -> None:
    mine = group_offsets_partition("g", GROUP_OFFSETS_PARTITIONS)
    member, generation = await joined(coordinator, "g")
    await coordinator.commit("g", member, generation, [OffsetEntry("t", 1, 42, "m")])
    pending = asyncio.ensure_future(coordinator.join("g", request()))  # waits for a rejoin
    await asyncio.sleep(0.05)
    assert not pending.done()

    place(logs, set(ALL) - {mine}, {mine})  # moved away: retired here, read-only
    coordinator.placement_changed()
    with pytest.raises(errors.NotCoordinator):
        await asyncio.wait_for(pending, 5)
    for call in (
        lambda: coordinator.heartbeat("g", member, generation),
        lambda: coordinator.describe("g"),
        lambda: coordinator.committed("g"),
    ):
        with pytest.raises(errors.NotCoordinator):
            call()
    with pytest.raises(errors.NotCoordinator):
        await coordinator.commit("g", member, generation, [OffsetEntry("t", 1, 43)])
    assert "g" not in coordinator.group_ids()

    place(logs, set(ALL))  # served here again (as when a move onto this broker completes)
    with pytest.raises(errors.CoordinatorNotAvailable):
        coordinator.committed("g")  # its offsets are being loaded, a chunk at a time
    committed = await eventually(lambda: coordinator.committed("g"))
    assert committed[("t", 1)].offset == 42
    assert coordinator.describe("g")["generation"] == generation
    # It left in the middle of a rebalance: its membership was not the group any more.
    with pytest.raises(errors.UnknownMember):  # the old member rejoins ...
        coordinator.heartbeat("g", member, generation)
    _, again = await joined(coordinator, "g")
    assert again > generation  # ... into a newer generation: the old one stays fenced


async def test_a_stable_group_moved_away_and_back_carries_on_without_a_rebalance(
    logs: LogManager, coordinator: GroupCoordinator
) -> None:
    mine = group_offsets_partition("g", GROUP_OFFSETS_PARTITIONS)
    member, generation = await joined(coordinator, "g")
    place(logs, set(ALL) - {mine}, {mine})
    coordinator.placement_changed()
    with pytest.raises(errors.NotCoordinator):
        coordinator.heartbeat("g", member, generation)
    for _ in range(100):  # the clock gives the group up
        if "g" not in coordinator.group_ids():
            break
        await asyncio.sleep(0.01)
    assert "g" not in coordinator.group_ids()
    place(logs, set(ALL))  # back: its store is loaded, and its Stable group restored
    coordinator.placement_changed()
    await eventually(lambda: coordinator.heartbeat("g", member, generation))
    await coordinator.commit("g", member, generation, [OffsetEntry("t", 1, 43)])
    assert coordinator.describe("g")["state"] == "Stable"
    assert coordinator.rebalances() == {"g": 0}


async def test_without_the_offsets_topic_no_group_is_coordinated(logs: LogManager) -> None:
    coordinator = GroupCoordinator(logs)
    with pytest.raises(errors.CoordinatorNotAvailable):
        await coordinator.join("g", request())
    assert coordinator.group_ids() == []
    place(logs, set())  # placed on other brokers only
    with pytest.raises(errors.NotCoordinator):
        coordinator.committed("g")


async def test_offsets_kept_before_the_topic_existed_are_moved_into_it(
    tmp_path: Path, logs: LogManager, coordinator: GroupCoordinator
) -> None:
    legacy_dir = tmp_path / "internal" / "group-offsets"
    legacy = OffsetStore(PartitionLog("legacy", 0, legacy_dir, TopicConfig(retention_ms=-1)))
    await legacy.commit("old", [("t", 0, 12, "m"), ("t", 1, 3, "")])
    await legacy.record_generation("old", 5)
    await legacy.log.close()
    await coordinator.adopt_legacy_offsets(legacy_dir)
    assert not legacy_dir.exists()
    assert {tp: c.offset for tp, c in coordinator.committed("old").items()} == {
        ("t", 0): 12,
        ("t", 1): 3,
    }
    assert coordinator.committed("old")[("t", 0)].metadata == "m"
    assert coordinator.describe("old")["generation"] == 5
    await coordinator.adopt_legacy_offsets(legacy_dir)  # nothing left: nothing done


async def test_legacy_offsets_wait_for_their_partition_and_never_go_back(
    tmp_path: Path, logs: LogManager, coordinator: GroupCoordinator
) -> None:
    here, away = (
        "old-here",
        next(
            f"old-{i}"
            for i in range(100)
            if group_offsets_partition(f"old-{i}", GROUP_OFFSETS_PARTITIONS)
            != group_offsets_partition("old-here", GROUP_OFFSETS_PARTITIONS)
        ),
    )
    gone = group_offsets_partition(away, GROUP_OFFSETS_PARTITIONS)
    place(logs, set(ALL) - {gone})  # away's partition is served by another broker
    coordinator.placement_changed()
    legacy_dir = tmp_path / "internal" / "group-offsets"
    legacy = OffsetStore(PartitionLog("legacy", 0, legacy_dir, TopicConfig(retention_ms=-1)))
    for group in (here, away):
        await legacy.commit(group, [("t", 0, 100, "")])
    await legacy.log.close()

    await coordinator.adopt_legacy_offsets(legacy_dir)
    assert coordinator.committed(here)[("t", 0)].offset == 100
    assert legacy_dir.exists()  # away's offsets wait for its partition
    await coordinator.commit(here, "", -1, [OffsetEntry("t", 0, 5000)])
    # A restart adopts again: what was adopted is not copied back over newer commits.
    await coordinator.adopt_legacy_offsets(legacy_dir)
    assert coordinator.committed(here)[("t", 0)].offset == 5000

    place(logs, set(ALL))  # away's partition comes here: adopted once it is loaded
    coordinator.placement_changed()
    adopted = await eventually(lambda: coordinator.committed(away))
    assert adopted[("t", 0)].offset == 100
    await eventually(lambda: not legacy_dir.exists() or pytest.fail("kept"), 5.0)


async def test_a_group_taken_over_waits_for_all_its_members_before_its_first_rebalance(
    logs: LogManager,
) -> None:
    first = started(logs)
    # A generation that never turned Stable: no membership to carry on with.
    result = await first.join("g", request())
    member, generation = result.member_id, result.generation
    await first.close()
    # Another coordinator (a restart, or the partition moved): the group had a generation.
    settings = GroupSettings(takeover_rebalance_delay_ms=500)
    second = started(logs, settings)
    try:
        with pytest.raises(errors.UnknownMember):  # an old member's heartbeat comes first ...
            second.heartbeat("g", member, generation)
        await asyncio.sleep(0.05)  # ... and its empty group is forgotten: the wait is not
        began = time.monotonic()
        a = asyncio.ensure_future(second.join("g", request()))
        await asyncio.sleep(0.2)  # the other member rejoins a little later
        b = asyncio.ensure_future(second.join("g", request()))
        results = await asyncio.gather(a, b)
        assert time.monotonic() - began >= 0.45
        assert results[0].generation == results[1].generation  # one rebalance, not two
    finally:
        await second.close()


async def test_close_right_after_a_group_change_does_not_hang(logs: LogManager) -> None:
    # The clock waits for a change with a timeout; a cancellation arriving as the change is
    # signalled must still stop it (asyncio.wait_for in 3.11 could swallow it).
    ensure_offsets_topic(logs)
    for n in range(5):
        coordinator = GroupCoordinator(logs)
        coordinator.start()
        await joined(coordinator, f"g{n}")  # a new group each time: no takeover wait
        await asyncio.wait_for(coordinator.close(), 5)


async def test_a_stable_group_taken_over_keeps_its_members_generation_and_assignments(
    logs: LogManager,
) -> None:
    first = started(logs, GroupSettings(initial_rebalance_delay_ms=100))
    joins = await asyncio.gather(*(first.join("g", request()) for _ in range(2)))
    assert joins[0].generation == joins[1].generation  # one round
    generation, leader = joins[0].generation, joins[0].leader
    members = [j.member_id for j in joins]
    assignments = {m: m.encode() for m in members}
    await asyncio.gather(
        *(first.sync("g", m, generation, assignments if m == leader else None) for m in members)
    )
    await first.close()

    second = started(logs)  # a restart, or the partition moved here
    try:
        # Its members are live before any of them called: no reset, no deletion.
        with pytest.raises(errors.GroupNotEmpty):
            await second.reset_offsets("g", "earliest", topics=["t"])
        with pytest.raises(errors.GroupNotEmpty):
            await second.delete("g")
        for m in members:
            second.heartbeat("g", m, generation)
        described = second.describe("g")
        assert described["state"] == "Stable" and described["generation"] == generation
        assert described["leader"] == leader
        assert sorted(m["member_id"] for m in described["members"]) == sorted(members)
        assert second.rebalances() == {"g": 0}
        await second.commit("g", members[0], generation, [OffsetEntry("t", 0, 5)])
        answer = await second.sync("g", members[1], generation, None)
        assert answer.assignment == members[1].encode()  # what it was given
    finally:
        await second.close()


async def test_a_group_whose_members_all_left_is_not_taken_over_with_them(
    logs: LogManager,
) -> None:
    first = started(logs)
    member, generation = await joined(first, "g")
    first.leave("g", member)
    await first.close()  # waits for what the clock started writing

    second = started(logs)
    try:
        described = second.describe("g")
        assert described["state"] == "Empty" and described["members"] == []
        assert described["generation"] > generation
        with pytest.raises(errors.UnknownMember):
            second.heartbeat("g", member, generation)
    finally:
        await second.close()


async def test_a_group_that_began_a_rebalance_is_taken_over_without_its_old_members(
    logs: LogManager,
) -> None:
    first = started(logs)
    member, generation = await joined(first, "g")
    newcomer = asyncio.ensure_future(first.join("g", request()))  # a rebalance begins
    await asyncio.sleep(0)
    assert first._store("g").membership("g") is None  # at once, not when the write is done
    newcomer.cancel()  # the broker stops (its client would make the join again elsewhere)
    with contextlib.suppress(asyncio.CancelledError):
        await newcomer
    await first.close()

    second = started(logs)
    try:
        with pytest.raises(errors.UnknownMember):  # everyone rejoins: none is a ghost
            second.heartbeat("g", member, generation)
        assert second.describe("g")["members"] == []
    finally:
        await second.close()


async def test_members_of_a_group_taken_over_are_timed_from_the_takeover(
    logs: LogManager,
) -> None:
    first = started(logs)
    short = JoinRequest("", "client", "127.0.0.1", 1.0, 1.0, "consumer", (("range", b""),))
    result = await first.join("g", short)
    await first.sync("g", result.member_id, result.generation, {result.member_id: b""})
    await first.close()

    second = started(logs)  # restored at load: its clock evicts the silent member
    try:
        await asyncio.sleep(1.5)  # its session is 1 s
        described = second.describe("g")
        assert described["members"] == [] and described["state"] == "Empty"
        assert described["generation"] > result.generation
    finally:
        await second.close()


async def test_a_static_member_that_took_its_place_is_what_a_takeover_restores(
    logs: LogManager,
) -> None:
    def pod(n: int) -> JoinRequest:
        return dataclasses.replace(request(), group_instance_id=f"pod-{n}")

    first = started(logs, GroupSettings(initial_rebalance_delay_ms=100))
    joins = await asyncio.gather(*(first.join("g", pod(n)) for n in range(2)))
    leader = next(j for j in joins if j.member_id == j.leader)
    follower = next(j for j in joins if j.member_id != j.leader)
    plan = {j.member_id: j.member_id.encode() for j in joins}
    await asyncio.gather(
        first.sync("g", leader.member_id, leader.generation, plan),
        first.sync("g", follower.member_id, follower.generation, None),
    )
    described = {m["member_id"]: m for m in first.describe("g")["members"]}
    instance = int(described[follower.member_id]["group_instance_id"][-1])
    new = await first.join("g", pod(instance))  # its process restarted: same place
    assert new.generation == follower.generation and new.member_id != follower.member_id
    await first.close()

    second = started(logs)
    try:
        second.heartbeat("g", new.member_id, new.generation)
        answer = await second.sync("g", new.member_id, new.generation, None)
        assert answer.assignment == follower.member_id.encode()  # the old process's
        with pytest.raises(errors.FencedInstanceId):  # the old process stays fenced
            second.heartbeat("g", follower.member_id, follower.generation)
    finally:
        await second.close()
