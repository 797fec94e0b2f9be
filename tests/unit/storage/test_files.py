"""Durable file helpers: atomic replace and the buffered append-only file."""

from __future__ import annotations

from pathlib import Path

from millstream.broker.storage.files import AppendFile, atomic_write


def test_atomic_write_replaces_without_leaving_a_temporary(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    atomic_write(path, b"one")
    atomic_write(path, b"two")
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_append_file_is_created_on_first_flush(tmp_path: Path) -> None:
    f = AppendFile(tmp_path / "a")
    f.flush()
    assert not f.path.exists()
    f.buffer(b"abc")
    f.buffer(b"def")
    assert not f.path.exists()
    f.flush()
    f.fsync()
    assert f.path.read_bytes() == b"abcdef"
    f.buffer(b"gh")
    f.truncate(2)  # buffered bytes count as written
    assert f.path.read_bytes() == b"ab"
    f.buffer(b"zz")
    f.close()
    assert f.path.read_bytes() == b"abzz"


def test_truncating_an_unopened_file_to_zero_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "b"
    path.write_bytes(b"stale")
    AppendFile(path).truncate(0)
    assert not path.exists()
