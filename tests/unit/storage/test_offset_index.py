"""OffsetIndex: lookups, the ordering invariant, truncation, persistence and corruption."""

from __future__ import annotations

from pathlib import Path

import pytest

from millstream.broker.storage.offset_index import CorruptIndex, OffsetIndex
from millstream.errors import MillstreamError

BASE = 1000


@pytest.fixture
def index(tmp_path: Path) -> OffsetIndex:
    index = OffsetIndex(tmp_path / "00000000000000001000.index", BASE)
    for offset, position in ((1010, 400), (1020, 800), (1035, 1300)):
        index.append(offset, position)
    index.flush()
    return index


def test_lookup_returns_the_last_entry_at_or_before(index: OffsetIndex) -> None:
    assert index.lookup(999) == 0
    assert index.lookup(1000) == 0
    assert index.lookup(1009) == 0
    assert index.lookup(1010) == 400
    assert index.lookup(1019) == 400
    assert index.lookup(1020) == 800
    assert index.lookup(1_000_000) == 1300


def test_floor_by_position(index: OffsetIndex) -> None:
    assert index.floor_by_position(399) is None
    assert index.floor_by_position(400) == (1010, 400)
    assert index.floor_by_position(1299) == (1020, 800)
    assert index.floor_by_position(10**9) == (1035, 1300)


def test_append_refuses_an_offset_not_after_the_last(index: OffsetIndex) -> None:
    with pytest.raises(MillstreamError, match="not after the last entry"):
        index.append(1035, 2000)
    with pytest.raises(MillstreamError):
        index.append(1001, 2000)
    assert len(index) == 3


def test_append_refuses_what_does_not_fit_32_bits(tmp_path: Path) -> None:
    index = OffsetIndex(tmp_path / "x.index", 0)
    with pytest.raises(MillstreamError):
        index.append(2**32, 0)


def test_entries_persist_big_endian(index: OffsetIndex) -> None:
    raw = index.path.read_bytes()
    assert raw[:8] == (10).to_bytes(4, "big") + (400).to_bytes(4, "big")
    loaded = OffsetIndex.load(index.path, BASE, log_size=5000)
    assert loaded.last_entry == (1035, 1300)
    assert loaded.lookup(1025) == 800


def test_missing_file_is_an_empty_index(tmp_path: Path) -> None:
    index = OffsetIndex.load(tmp_path / "absent.index", 0, log_size=0)
    assert len(index) == 0
    assert index.lookup(5) == 0
    assert not (tmp_path / "absent.index").exists()


def test_truncate_to_drops_that_offset_and_later(index: OffsetIndex) -> None:
    index.truncate_to(1021)
    assert index.last_entry == (1020, 800)
    index.truncate_to(1020)
    assert index.last_entry == (1010, 400)
    assert index.path.stat().st_size == 8
    index.append(1015, 600)  # the end is open again
    index.flush()
    assert OffsetIndex.load(index.path, BASE, 5000).last_entry == (1015, 600)


def test_truncate_to_position(index: OffsetIndex) -> None:
    index.truncate_to_position(801)
    assert index.last_entry == (1020, 800)
    index.truncate_to_position(800)
    assert index.last_entry == (1010, 400)


def test_clear_empties_the_file(index: OffsetIndex) -> None:
    index.clear()
    assert len(index) == 0
    assert index.lookup(2000) == 0
    index.close()
    assert not index.path.exists() or index.path.stat().st_size == 0


def test_unflushed_entries_are_not_in_the_file(tmp_path: Path) -> None:
    index = OffsetIndex(tmp_path / "0.index", 0)
    index.append(5, 100)
    assert index.lookup(7) == 100
    assert not index.path.exists()
    index.close()  # close writes them
    assert index.path.stat().st_size == 8


def _entry(relative: int, position: int) -> bytes:
    return relative.to_bytes(4, "big") + position.to_bytes(4, "big")


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"\x00" * 12, "multiple"),
        (_entry(20, 8) + _entry(10, 16), "offsets"),
        (_entry(1, 900) + _entry(2, 8), "positions"),
        (_entry(1, 5000), "past the end"),
    ],
)
def test_load_detects_corruption(tmp_path: Path, raw: bytes, problem: str) -> None:
    path = tmp_path / "0.index"
    path.write_bytes(raw)
    with pytest.raises(CorruptIndex, match=problem):
        OffsetIndex.load(path, 0, log_size=5000)
