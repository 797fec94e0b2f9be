"""Walking batches in a file: by header, and checked by CRC with the reason for a stop."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from millstream.broker.storage.scan import iter_checked, iter_headers
from millstream.errors import CorruptBatch

from .support import T0, batch


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[tuple[int, list[bytes]]]:
    bufs = [batch(5, timestamp=T0 + i, tag=i) for i in range(6)]
    path = tmp_path / "x.log"
    path.write_bytes(b"".join(bufs))
    fd = os.open(path, os.O_RDWR)
    yield fd, bufs
    os.close(fd)


def test_headers(log_file: tuple[int, list[bytes]]) -> None:
    fd, bufs = log_file
    headers = list(iter_headers(fd, 0, sum(map(len, bufs))))
    assert [h.position for h in headers] == [len(bufs[0]) * i for i in range(6)]
    assert [h.last_offset - h.base_offset for h in headers] == [4] * 6
    assert [h.max_timestamp for h in headers] == [T0 + i for i in range(6)]


def test_headers_refuse_a_batch_crossing_the_end(log_file: tuple[int, list[bytes]]) -> None:
    fd, bufs = log_file
    with pytest.raises(CorruptBatch, match="impossible length"):
        list(iter_headers(fd, 0, len(bufs[0]) + 100))
    with pytest.raises(CorruptBatch, match="10 bytes at position"):
        list(iter_headers(fd, 0, len(bufs[0]) + 10))


def test_checked_positions_are_file_positions(log_file: tuple[int, list[bytes]]) -> None:
    fd, bufs = log_file
    start = len(bufs[0])
    infos = list(iter_checked(fd, start, start * 6))
    assert [i.position for i in infos] == [start * k for k in range(1, 6)]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda fd, end: os.ftruncate(fd, end - 30), "torn batch"),
        (lambda fd, end: os.ftruncate(fd, end - len(batch(5)) + 5), "torn batch header"),
        (lambda fd, end: os.pwrite(fd, b"\xff", end - 40), "CRC"),
        (lambda fd, end: os.pwrite(fd, b"\x7f\xff\xff\xff", end - len(batch(5)) + 8), "range"),
    ],
)
def test_checked_stops_at_damage_with_a_reason(
    log_file: tuple[int, list[bytes]], damage: object, reason: str
) -> None:
    fd, bufs = log_file
    end = sum(map(len, bufs))
    damage(fd, end)  # type: ignore[operator]
    good: list[int] = []
    with pytest.raises(CorruptBatch, match=reason):
        for info in iter_checked(fd, 0, os.fstat(fd).st_size):
            good.append(info.position)
    assert len(good) == 5
