"""The consumer's side of a group: what is committed when, where assigned partitions start,
and when the application's callbacks run."""

from __future__ import annotations

from typing import Any

import pytest

from millstream import errors
from millstream.client.coordinator import ConsumerCoordinator, GroupSettings
from millstream.client.group import MemberSettings
from millstream.client.models import OffsetAndMetadata, TopicPartition

T0, T1, T2 = (TopicPartition("t", p) for p in range(3))


class FakeConsumer:
    def __init__(self) -> None:
        self.partitions: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int] = {}
        self.seeks: list[tuple[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return set(self.partitions)

    def _set_assignment(self, partitions: Any) -> None:
        self.partitions = set(partitions)
        self.positions = {tp: o for tp, o in self.positions.items() if tp in self.partitions}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))
        self.positions[tp] = offset

    def _positions(self) -> dict[TopicPartition, int]:
        return dict(self.positions)

    def _wake(self) -> None:
        pass


class FakeAdmin:
    transport: Any = None

    def __init__(self, log: list[Any]) -> None:
        self.log = log
        self.committed: dict[TopicPartition, OffsetAndMetadata] = {}
        self.commit_error: Exception | None = None

    async def committed_offsets(self, group: str, topics: Any = None) -> Any:
        return {tp: o for tp, o in self.committed.items() if topics is None or tp.topic in topics}

    async def commit_offsets(self, group: str, offsets: Any, **identity: Any) -> None:
        self.log.append(("commit", dict(offsets), identity))
        if self.commit_error is not None:
            raise self.commit_error


def make(
    auto_commit: bool = True,
) -> tuple[ConsumerCoordinator, FakeConsumer, FakeAdmin, list[Any]]:
    log: list[Any] = []
    consumer, admin = FakeConsumer(), FakeAdmin(log)
    member = MemberSettings("me", ("range",), 1_000, 1_000, 100)
    settings = GroupSettings("g", member, auto_commit, 60_000)
    coordinator = ConsumerCoordinator(consumer, admin, settings)  # type: ignore[arg-type]
    return coordinator, consumer, admin, log


def callbacks(coordinator: ConsumerCoordinator, log: list[Any], *, coroutines: bool) -> None:
    def record(name: str) -> Any:
        if coroutines:

            async def callback(partitions: set[TopicPartition]) -> None:
                log.append((name, sorted(partitions)))

            return callback
        return lambda partitions: log.append((name, sorted(partitions)))

    coordinator.subscribe(["t"], record("on_assign"), record("on_revoke"))


@pytest.mark.parametrize("coroutines", [False, True])
async def test_assigned_partitions_start_at_the_committed_offset(coroutines: bool) -> None:
    coordinator, consumer, admin, log = make()
    callbacks(coordinator, log, coroutines=coroutines)
    admin.committed = {T0: OffsetAndMetadata(42), TopicPartition("u", 0): OffsetAndMetadata(7)}
    await coordinator.partitions_assigned(frozenset({T0, T1}))
    assert consumer.partitions == {T0, T1}
    assert consumer.seeks == [(T0, 42)]  # T1 has no commit: auto_offset_reset decides
    assert log == [("on_assign", [T0, T1])]


async def test_revoking_commits_the_positions_first_then_calls_back_then_drops() -> None:
    coordinator, consumer, _, log = make()
    callbacks(coordinator, log, coroutines=False)
    await coordinator.partitions_assigned(frozenset({T0, T1, T2}))
    consumer.positions = {T0: 5, T1: 9, T2: 0}
    await coordinator.partitions_revoked(frozenset({T1, T2}), lost=False)
    assert log[1:] == [
        ("commit", {T1: 9, T2: 0}, {"member_id": None, "generation": None}),
        ("on_revoke", [T1, T2]),
    ]
    assert consumer.partitions == {T0}


async def test_lost_partitions_are_not_committed() -> None:
    coordinator, consumer, _, log = make()
    callbacks(coordinator, log, coroutines=True)
    await coordinator.partitions_assigned(frozenset({T0}))
    consumer.positions = {T0: 5}
    await coordinator.partitions_revoked(frozenset({T0}), lost=True)
    assert log[1:] == [("on_revoke", [T0])]
    assert consumer.partitions == set()


async def test_without_auto_commit_only_the_application_commits() -> None:
    coordinator, consumer, _, log = make(auto_commit=False)
    await coordinator.partitions_assigned(frozenset({T0}))
    consumer.positions = {T0: 5}
    await coordinator.partitions_revoked(frozenset({T0}), lost=False)
    assert log == []
    consumer.partitions, consumer.positions = {T1}, {T1: 3}
    await coordinator.commit()
    await coordinator.commit({("t", 0): 11})
    assert [entry[1] for entry in log] == [{T1: 3}, {T0: 11}]


async def test_auto_commit_sends_only_what_changed_and_survives_failures() -> None:
    coordinator, consumer, admin, log = make()
    consumer.partitions, consumer.positions = {T0, T1}, {T0: 5, T1: 3}
    await coordinator._commit_positions()
    consumer.positions[T0] = 8
    await coordinator._commit_positions()
    await coordinator._commit_positions()
    assert [entry[1] for entry in log] == [{T0: 5, T1: 3}, {T0: 8}]
    admin.commit_error = errors.BrokerUnavailable("down")
    consumer.positions[T1] = 4
    await coordinator._commit_positions()  # logged, not raised
    admin.commit_error = None
    await coordinator._commit_positions()
    assert log[-1][1] == {T1: 4}


async def test_a_refused_commit_is_raised_to_the_application() -> None:
    coordinator, consumer, admin, _ = make()
    consumer.partitions, consumer.positions = {T0}, {T0: 5}
    admin.commit_error = errors.IllegalGeneration("gone")
    with pytest.raises(errors.IllegalGeneration):
        await coordinator.commit()


async def test_a_callback_error_still_drops_the_partitions() -> None:
    coordinator, consumer, _, _ = make()

    def boom(partitions: set[TopicPartition]) -> None:
        raise RuntimeError("application bug")

    coordinator.subscribe("t", None, boom)
    await coordinator.partitions_assigned(frozenset({T0}))
    with pytest.raises(RuntimeError):
        await coordinator.partitions_revoked(frozenset({T0}), lost=False)
    assert consumer.partitions == set()


def test_unknown_assignors_and_empty_subscriptions_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown partition assignor"):
        GroupSettings("g", MemberSettings("me", ("sticky",), 1_000, 1_000, 100), True, 1_000)
    with pytest.raises(ValueError, match="at least one"):
        GroupSettings("g", MemberSettings("me", (), 1_000, 1_000, 100), True, 1_000)
    coordinator, _, _, _ = make()
    with pytest.raises(errors.InvalidRequest):
        coordinator.subscribe([], None, None)
