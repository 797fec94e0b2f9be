"""Committed offsets in a partition of the group-offsets topic: durable, replayed at open,
deletions respected, compacted by snapshot without changing any offset."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from millstream import errors
from millstream.broker.groups import offsets
from millstream.broker.groups.offsets import OffsetStore
from millstream.broker.storage.config import TopicConfig
from millstream.broker.storage.partition_log import PartitionLog
from millstream.internal_topics import GROUP_OFFSETS_CONFIG, GROUP_OFFSETS_TOPIC

CONFIG = TopicConfig().with_updates(GROUP_OFFSETS_CONFIG)


def open_store(directory: Path, config: TopicConfig = CONFIG, **options: int) -> OffsetStore:
    return OffsetStore(PartitionLog(GROUP_OFFSETS_TOPIC, 0, directory, config), **options)


async def reopen(store: OffsetStore) -> OffsetStore:
    await store.log.close()
    return open_store(store.log.directory, store.log.config)


async def test_commits_are_replayed_after_a_reopen(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    await store.commit("g", [("t", 0, 10, "a"), ("t", 1, 20, "")])
    await store.commit("g", [("t", 0, 11, "b")])
    await store.commit("h", [("u", 0, 5, "")])
    await store.record_generation("g", 7)
    store = await reopen(store)
    assert {tp: c.offset for tp, c in store.committed("g").items()} == {("t", 0): 11, ("t", 1): 20}
    assert store.committed("g")[("t", 0)].metadata == "b"
    assert store.committed("g")[("t", 0)].commit_time_ms > 0
    assert store.generation("g") == 7 and store.generation("h") == 0
    assert store.groups() == ["g", "h"]
    await store.log.close()


async def test_a_generation_is_written_once_and_never_goes_back(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    await asyncio.gather(*(store.record_generation("g", 3) for _ in range(5)))
    assert store.log.log_end_offset == 1  # concurrent answers of one rebalance: one write
    await store.record_generation("g", 2)
    assert store.generation("g") == 3 and store.log.log_end_offset == 1
    await store.log.close()


MEMBERSHIP = {
    "protocol_type": "consumer",
    "protocol": "range",
    "leader": "m",
    "members": [
        {
            "id": "m",
            "client_id": "c",
            "client_host": "127.0.0.1",
            "session_timeout_ms": 10_000,
            "rebalance_timeout_ms": 10_000,
            "protocols": [["range", ""]],
            "assignment": "",
        }
    ],
}


async def stable_store(directory: Path) -> OffsetStore:
    """A store holding group g, Stable in generation 1 with MEMBERSHIP."""
    store = open_store(directory)
    await store.record_generation("g", 1)
    await store.record_membership("g", 1, MEMBERSHIP)
    return store


async def test_a_membership_rides_with_its_generation_and_a_newer_generation_clears_it(
    tmp_path: Path,
) -> None:
    store = open_store(tmp_path)
    await store.record_generation("g", 3)
    assert store.membership("g") is None  # joined, not Stable yet
    await asyncio.gather(*(store.record_membership("g", 3, MEMBERSHIP) for _ in range(3)))
    assert store.log.log_end_offset == 2  # every member's sync answer: one write
    store = await reopen(store)
    assert store.generation("g") == 3 and store.membership("g") == MEMBERSHIP
    await store.record_membership("g", 2, MEMBERSHIP)  # an ended generation's: not written
    assert store.log.log_end_offset == 2
    await store.record_generation("g", 4)  # the next rebalance (or the group emptied)
    assert store.membership("g") is None
    store = await reopen(store)
    assert store.generation("g") == 4 and store.membership("g") is None
    await store.log.close()


async def test_a_membership_written_after_a_newer_generation_is_ignored(tmp_path: Path) -> None:
    # Two appends can finish in either order; replay must not take the group back.
    store = open_store(tmp_path)
    await store.record_generation("g", 5)
    await store._append([(["group", "g"], {"generation": 4, "membership": MEMBERSHIP})])
    assert store.generation("g") == 5 and store.membership("g") is None
    store = await reopen(store)
    assert store.generation("g") == 5 and store.membership("g") is None
    await store.log.close()


async def test_every_answer_of_a_generation_waits_until_it_is_durable(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    first, second = store.record_generation("g", 3), store.record_generation("g", 3)
    assert store.generation("g") == 3  # counted at once
    await asyncio.sleep(0)
    assert not second.done()  # not before the one write is on disk
    await asyncio.gather(first, second)
    assert store.log.log_end_offset == 1
    await store.log.close()


async def test_a_failed_generation_write_fails_every_answer_waiting_on_it(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    answers = [store.record_generation("g", 3) for _ in range(2)]
    # The partition is switching to another broker: nothing more is written here.
    store.log.seal(errors.NotLeader("moving away"))
    for answer in answers:
        with pytest.raises(errors.NotLeader):
            await answer
    assert store.generation("g") == 0
    await store.log.close()


async def test_records_of_a_group_reach_the_log_in_the_order_asked(tmp_path: Path) -> None:
    # A membership still being written when the group rebalances or empties: what replay
    # finds last is the newer record, without members.
    for later in (1, 2):  # a rebalance began (same generation), the group emptied (next one)
        store = open_store(tmp_path / str(later))
        await store.record_generation("g", 1)
        membership = store.record_membership("g", 1, MEMBERSHIP)
        emptied = store.end_membership("g", later)
        assert store.membership("g") is None and store.generation("g") == later
        await asyncio.gather(membership, emptied)
        assert store.log.log_end_offset == 3
        store = await reopen(store)
        assert store.generation("g") == later and store.membership("g") is None
        await store.log.close()


async def test_a_join_answered_in_the_stored_generation_keeps_its_membership(
    tmp_path: Path,
) -> None:
    # A follower rejoining a Stable group unchanged is answered with the current generation.
    store = await stable_store(tmp_path)
    await store.record_generation("g", 1)
    assert store.membership("g") == MEMBERSHIP and store.log.log_end_offset == 2
    await store.log.close()


async def test_a_membership_ended_but_not_written_is_not_brought_back(tmp_path: Path) -> None:
    store = await stable_store(tmp_path)
    store.log.seal(errors.NotLeader("moving away"))
    with pytest.raises(errors.NotLeader):
        await store.end_membership("g", 2)  # the group emptied
    assert store.membership("g") is None and store.generation("g") == 2
    await store.log.close()


async def test_no_membership_is_read_while_a_newer_generation_is_being_written(
    tmp_path: Path,
) -> None:
    store = await stable_store(tmp_path)
    writing = asyncio.ensure_future(store.record_generation("g", 2))
    await asyncio.sleep(0)  # promised, not yet durable
    assert store.membership("g") is None
    await writing
    assert store.membership("g") is None and store.generation("g") == 2
    await store.log.close()


async def test_a_deleted_group_stays_deleted_and_can_start_again(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    await store.commit("g", [("t", 0, 10, "")])
    await store.record_generation("g", 3)
    await store.delete_group("g")
    assert store.committed("g") == {} and "g" not in store.groups()
    await store.commit("g", [("t", 1, 1, "")])  # a new group of the same name
    store = await reopen(store)
    assert {tp: c.offset for tp, c in store.committed("g").items()} == {("t", 1): 1}
    assert store.generation("g") == 0
    await store.log.close()


async def test_concurrent_commits_keep_the_last_one_written(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    await asyncio.gather(*(store.commit("g", [("t", 0, n, "")]) for n in range(50)))
    assert store.committed("g")[("t", 0)].offset == 49
    store = await reopen(store)
    assert store.committed("g")[("t", 0)].offset == 49
    await store.log.close()


async def test_a_torn_tail_loses_only_the_unacknowledged_commit(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    await store.commit("g", [("t", 0, 10, "")])
    await store.log.close()
    segment = next(tmp_path.glob("*.log"))
    size = segment.stat().st_size
    store = open_store(tmp_path)
    await store.commit("g", [("t", 0, 11, "")])
    await store.log.close()
    with segment.open("r+b") as f:  # as if the machine died halfway through the second write
        f.truncate(size + 10)
    store = open_store(tmp_path)
    assert store.committed("g")[("t", 0)].offset == 10
    await store.log.close()


async def test_compaction_snapshots_the_live_state_and_drops_the_old_segments(
    tmp_path: Path,
) -> None:
    small = CONFIG.with_updates({"segment.bytes": 4096})
    store = open_store(tmp_path, small, compact_min_bytes=1)
    for n in range(200):
        await store.commit("g", [("t", n % 2, n, "")])
    await store.record_generation("g", 4)
    await store.record_membership("g", 4, MEMBERSHIP)
    await store.commit("gone", [("t", 0, 1, "")])
    await store.delete_group("gone")
    assert store.needs_compaction()
    before, end = store.size_bytes, store.log.log_end_offset
    pending = asyncio.ensure_future(store.compact())
    late = asyncio.ensure_future(store.commit("g", [("t", 1, 1000, "")]))  # waits for it
    await asyncio.gather(pending, late)
    assert store.size_bytes < before / 10
    # Offsets never change: the snapshot follows on, and the log now starts where it began.
    assert store.log.log_start_offset == end
    assert store.log.log_end_offset == end + 3 + 1  # generation, two offsets; the late commit
    assert not store.needs_compaction()
    store = await reopen(store)
    assert {tp: c.offset for tp, c in store.committed("g").items()} == {
        ("t", 0): 198,
        ("t", 1): 1000,
    }
    assert store.generation("g") == 4 and store.groups() == ["g"]
    assert store.membership("g") == MEMBERSHIP
    await store.log.close()


async def test_a_deleted_topics_offsets_are_forgotten(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    await store.commit("g", [("t", 0, 5, ""), ("u", 0, 6, "")])
    await store.commit("h", [("t", 1, 7, "")])
    await store.forget_topic("t")
    assert list(store.committed("g")) == [("u", 0)] and store.committed("h") == {}
    store = await reopen(store)
    assert list(store.committed("g")) == [("u", 0)] and store.committed("h") == {}
    await store.log.close()


async def test_compaction_of_large_metadata_writes_batches_the_log_accepts(tmp_path: Path) -> None:
    store = open_store(tmp_path, compact_min_bytes=1)
    metadata = "é" * 4096  # JSON-escaped to six bytes a character
    for start in range(0, 2500, 250):
        await store.commit("g", [("t", p, 1, metadata) for p in range(start, start + 250)])
    await store.commit("g", [("t", 0, 2, "")])
    await store.compact()
    store = await reopen(store)
    assert len(store.committed("g")) == 2500
    await store.log.close()


async def test_a_compaction_cut_short_leaves_a_log_with_the_same_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(tmp_path, compact_min_bytes=1)
    for n in range(300):
        await store.commit(f"g{n % 3}", [("t", n % 4, n, "")])
    expected = {g: store.committed(g) for g in store.groups()}
    real = offsets._batch
    written = 0

    def fails_on_the_second_batch(records: object) -> bytes:
        nonlocal written
        written += 1
        if written == 2:
            raise OSError("disk full")
        return real(records)  # type: ignore[arg-type]

    monkeypatch.setattr(offsets, "_COMPACT_BATCH_BYTES", 200)  # a snapshot of several batches
    monkeypatch.setattr(offsets, "_batch", fails_on_the_second_batch)
    with pytest.raises(OSError):
        await store.compact()
    monkeypatch.undo()
    assert store.log.log_start_offset == 0  # nothing was dropped
    await store.commit("g0", [("t", 0, 5000, "")])  # and commits go on
    expected["g0"] = store.committed("g0")
    store = await reopen(store)
    assert {g: store.committed(g) for g in store.groups()} == expected
    await store.log.close()
