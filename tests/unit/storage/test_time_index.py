"""TimeIndex: entries only when the maximum grows, lookups, truncation, persistence."""

from __future__ import annotations

from pathlib import Path

import pytest

from millstream.broker.storage.offset_index import CorruptIndex
from millstream.broker.storage.time_index import TimeIndex
from millstream.errors import MillstreamError

BASE = 100


@pytest.fixture
def index(tmp_path: Path) -> TimeIndex:
    index = TimeIndex(tmp_path / "00000000000000000100.timeindex", BASE)
    index.maybe_append(1000, 110)
    index.maybe_append(1000, 120)  # did not grow: no entry
    index.maybe_append(900, 125)  # went back: no entry
    index.maybe_append(2000, 130)
    index.maybe_append(3000, 150)
    index.flush()
    return index


def test_entries_only_when_the_maximum_grows(index: TimeIndex) -> None:
    assert len(index) == 3
    assert index.last_timestamp == 3000
    assert index.path.stat().st_size == 3 * 12


def test_lookup_returns_the_last_entry_below_the_target(index: TimeIndex) -> None:
    assert index.lookup(0) == BASE
    assert index.lookup(1000) == BASE  # batches before offset 110 may hold 1000 too
    assert index.lookup(1001) == 110
    assert index.lookup(2000) == 110
    assert index.lookup(2500) == 130
    assert index.lookup(10**15) == 150


def test_offsets_must_increase(index: TimeIndex) -> None:
    with pytest.raises(MillstreamError, match="not after the last entry"):
        index.maybe_append(4000, 150)


def test_truncate_and_reload(index: TimeIndex) -> None:
    index.truncate_to(131)
    assert index.last_timestamp == 2000
    index.truncate_to(130)
    assert index.last_timestamp == 1000
    index.close()
    loaded = TimeIndex.load(index.path, BASE)
    assert len(loaded) == 1
    assert loaded.lookup(5000) == 110


def test_empty_index(tmp_path: Path) -> None:
    index = TimeIndex.load(tmp_path / "none.timeindex", 7)
    assert index.last_timestamp == -1
    assert index.lookup(123) == 7


def test_load_detects_corruption(tmp_path: Path) -> None:
    path = tmp_path / "0.timeindex"
    path.write_bytes(b"\x00" * 13)
    with pytest.raises(CorruptIndex, match="multiple"):
        TimeIndex.load(path, 0)
    path.write_bytes(
        (50).to_bytes(8, "big")
        + (1).to_bytes(4, "big")
        + (40).to_bytes(8, "big")
        + (2).to_bytes(4, "big")
    )
    with pytest.raises(CorruptIndex, match="timestamps"):
        TimeIndex.load(path, 0)
