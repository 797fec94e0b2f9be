"""A Stable group's membership, stored and restored: the restored group is the same generation
with the same members, protocols and assignments, and every member's session starts afresh."""

from __future__ import annotations

import dataclasses
import json

import pytest

from millstream import errors
from millstream.broker.groups import membership
from millstream.broker.groups.group import Group, GroupState
from tests.unit.groups.test_group import SESSION, request, stable_group


async def test_a_restored_group_is_the_stable_generation_that_was_stored() -> None:
    group, members = await stable_group(3)
    stored = json.loads(json.dumps(membership.snapshot(group)))  # as the log keeps it
    restored = membership.restore("g", group.generation, stored, now=100.0)
    assert restored.state is GroupState.STABLE
    assert (restored.generation, restored.protocol, restored.leader) == (
        group.generation,
        group.protocol,
        group.leader,
    )
    assert restored.assignments() == group.assignments() == {m: m.encode() for m in members}
    for member_id in members:
        before, after = group.members[member_id], restored.members[member_id]
        assert after.request == dataclasses.replace(before.request, member_id=member_id)
        assert after.joined and after.assignment == before.assignment
    # Members carry on: a heartbeat of the generation is welcome, an older one is not.
    restored.heartbeat(members[0], group.generation, now=100.0)
    with pytest.raises(errors.IllegalGeneration):
        restored.heartbeat(members[0], group.generation - 1, now=100.0)
    # Sessions start at the restore: one that never comes back is evicted after its timeout.
    restored.heartbeat(members[1], group.generation, now=100.0 + SESSION)
    restored.heartbeat(members[2], group.generation, now=100.0 + SESSION)
    restored.tick(now=100.0 + SESSION + 0.1)
    assert members[0] not in restored.members
    assert restored.state is GroupState.PREPARING_REBALANCE


async def test_a_follower_rejoining_with_what_it_had_stays_in_the_restored_generation() -> None:
    group, members = await stable_group(2)
    restored = membership.restore("g", group.generation, membership.snapshot(group), now=0.0)
    follower = next(m for m in members if m != group.leader)
    joined = await restored.join(request(follower), now=1.0)
    assert joined.generation == group.generation and restored.state is GroupState.STABLE


def test_only_a_stable_group_has_a_membership_to_store() -> None:
    with pytest.raises(ValueError, match="not Stable"):
        membership.snapshot(Group("g"))


@pytest.mark.parametrize(
    "damage",
    [
        lambda s: s.pop("leader"),
        lambda s: s.update(leader="nobody"),
        lambda s: s.update(members=[]),
        lambda s: s["members"][0].update(assignment="not base64!"),
        lambda s: s["members"][0].update(assignment=7),
        lambda s: s["members"][0].update(session_timeout_ms="soon"),
    ],
)
async def test_a_stored_membership_that_does_not_parse_is_refused(damage: object) -> None:
    group, _ = await stable_group(1)
    stored = membership.snapshot(group)
    damage(stored)  # type: ignore[operator]
    with pytest.raises((ValueError, KeyError, TypeError)):
        membership.restore("g", group.generation, stored, now=0.0)
