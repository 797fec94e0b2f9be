"""Committed offsets in the internal log: durable, replayed at open, deletions respected."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from millstream.broker.groups import offsets
from millstream.broker.groups.offsets import OffsetStore


async def reopen(store: OffsetStore, directory: Path) -> OffsetStore:
    await store.close()
    return OffsetStore(directory)


async def test_commits_are_replayed_after_a_reopen(tmp_path: Path) -> None:
    store = OffsetStore(tmp_path)
    await store.commit("g", [("t", 0, 10, "a"), ("t", 1, 20, "")])
    await store.commit("g", [("t", 0, 11, "b")])
    await store.commit("h", [("u", 0, 5, "")])
    await store.record_generation("g", 7)
    store = await reopen(store, tmp_path)
    assert {tp: c.offset for tp, c in store.committed("g").items()} == {("t", 0): 11, ("t", 1): 20}
    assert store.committed("g")[("t", 0)].metadata == "b"
    assert store.committed("g")[("t", 0)].commit_time_ms > 0
    assert store.generation("g") == 7 and store.generation("h") == 0
    assert store.groups() == ["g", "h"]
    await store.close()


async def test_a_deleted_group_stays_deleted_and_can_start_again(tmp_path: Path) -> None:
    store = OffsetStore(tmp_path)
    await store.commit("g", [("t", 0, 10, "")])
    await store.record_generation("g", 3)
    await store.delete_group("g")
    assert store.committed("g") == {} and "g" not in store.groups()
    await store.commit("g", [("t", 1, 1, "")])  # a new group of the same name
    store = await reopen(store, tmp_path)
    assert {tp: c.offset for tp, c in store.committed("g").items()} == {("t", 1): 1}
    assert store.generation("g") == 0
    await store.close()


async def test_concurrent_commits_keep_the_last_one_written(tmp_path: Path) -> None:
    store = OffsetStore(tmp_path)
    await asyncio.gather(*(store.commit("g", [("t", 0, n, "")]) for n in range(50)))
    assert store.committed("g")[("t", 0)].offset == 49
    store = await reopen(store, tmp_path)
    assert store.committed("g")[("t", 0)].offset == 49
    await store.close()


async def test_a_torn_tail_loses_only_the_unacknowledged_commit(tmp_path: Path) -> None:
    store = OffsetStore(tmp_path)
    await store.commit("g", [("t", 0, 10, "")])
    await store.close()
    segment = next(tmp_path.glob("*.log"))
    size = segment.stat().st_size
    store = OffsetStore(tmp_path)
    await store.commit("g", [("t", 0, 11, "")])
    await store.close()
    with segment.open("r+b") as f:  # as if the machine died halfway through the second write
        f.truncate(size + 10)
    store = OffsetStore(tmp_path)
    assert store.committed("g")[("t", 0)].offset == 10
    await store.close()


async def test_compaction_keeps_the_live_state_in_a_smaller_log(tmp_path: Path) -> None:
    directory = tmp_path / "offsets"
    store = OffsetStore(directory, compact_min_bytes=1)
    for n in range(200):
        await store.commit("g", [("t", n % 2, n, "")])
    await store.record_generation("g", 4)
    await store.commit("gone", [("t", 0, 1, "")])
    await store.delete_group("gone")
    assert store.needs_compaction()
    before = store.size_bytes
    pending = asyncio.ensure_future(store.compact())
    late = asyncio.ensure_future(store.commit("g", [("t", 1, 1000, "")]))  # waits for the swap
    await asyncio.gather(pending, late)
    assert store.size_bytes < before / 10
    assert not store.needs_compaction()
    store = await reopen(store, directory)
    assert {tp: c.offset for tp, c in store.committed("g").items()} == {
        ("t", 0): 198,
        ("t", 1): 1000,
    }
    assert store.generation("g") == 4 and store.groups() == ["g"]
    await store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["offsets"]


async def test_a_compaction_cut_short_goes_back_to_the_old_log(tmp_path: Path) -> None:
    directory = tmp_path / "offsets"
    store = OffsetStore(directory)
    await store.commit("g", [("t", 0, 5, "")])
    await store.close()
    # The crash came between the two renames: only the old log and the new one exist.
    directory.rename(tmp_path / "offsets.old")
    (tmp_path / "offsets.compacting").mkdir()
    store = OffsetStore(directory)
    assert store.committed("g")[("t", 0)].offset == 5
    await store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["offsets"]


async def test_a_deleted_topics_offsets_are_forgotten(tmp_path: Path) -> None:
    store = OffsetStore(tmp_path)
    await store.commit("g", [("t", 0, 5, ""), ("u", 0, 6, "")])
    await store.commit("h", [("t", 1, 7, "")])
    await store.forget_topic("t")
    assert list(store.committed("g")) == [("u", 0)] and store.committed("h") == {}
    store = await reopen(store, tmp_path)
    assert list(store.committed("g")) == [("u", 0)] and store.committed("h") == {}
    await store.close()


async def test_compaction_of_large_metadata_writes_batches_the_log_accepts(tmp_path: Path) -> None:
    store = OffsetStore(tmp_path / "offsets", compact_min_bytes=1)
    metadata = "é" * 4096  # JSON-escaped to six bytes a character
    for start in range(0, 2500, 250):
        await store.commit("g", [("t", p, 1, metadata) for p in range(start, start + 250)])
    await store.commit("g", [("t", 0, 2, "")])
    await store.compact()
    store = await reopen(store, tmp_path / "offsets")
    assert len(store.committed("g")) == 2500
    await store.close()


async def test_a_failed_compaction_leaves_the_log_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = OffsetStore(tmp_path / "offsets", compact_min_bytes=1)
    await store.commit("g", [("t", 0, 1, "")])

    def broken(records: object) -> bytes:
        raise OSError("disk full")

    monkeypatch.setattr(offsets, "_batch", broken)
    with pytest.raises(OSError):
        await store.compact()
    monkeypatch.undo()
    await store.commit("g", [("t", 0, 2, "")])
    store = await reopen(store, tmp_path / "offsets")
    assert store.committed("g")[("t", 0)].offset == 2
    await store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["offsets"]
