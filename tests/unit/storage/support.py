"""Helpers shared by the storage unit tests: batches, appends, crashes and file surgery."""

from __future__ import annotations

import os
import resource
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from millstream.broker.storage.partition_log import PartitionLog
from millstream.records import BatchInfo, check_batches, encode_batch, iter_batches

T0 = 1_700_000_000_000  # a fixed timestamp (ms) to keep tests independent of the clock


def batch(records: int = 10, value_size: int = 100, timestamp: int = T0, tag: int = 0) -> bytes:
    """One RecordBatch v2 of ``records`` records; ``tag`` makes values distinct."""
    value = tag.to_bytes(4, "big") * (value_size // 4 + 1)
    return encode_batch([(None, value[:value_size])] * records, timestamp=timestamp)


def checked(buf: bytes) -> tuple[bytes, list[BatchInfo]]:
    return buf, check_batches(buf)


async def append(log: PartitionLog, *bufs: bytes, wait_durable: bool = True) -> tuple[int, int]:
    """Append the batches as one request."""
    buf = b"".join(bufs)
    return await log.append(buf, check_batches(buf), wait_durable=wait_durable)


def batches(data: bytes) -> list[BatchInfo]:
    """The batches of a read, CRC checked; fails if bytes are left over."""
    infos = list(iter_batches(data))
    assert sum(info.size for info in infos) == len(data), "a read returned a partial batch"
    return infos


def offsets(data: bytes) -> list[int]:
    return [info.base_offset for info in batches(data)]


def read_all(log: PartitionLog, start: int | None = None) -> Iterator[BatchInfo]:
    """Every batch from ``start`` (default: the log start) to the high watermark."""
    offset = log.log_start_offset if start is None else start
    while offset < log.high_watermark:
        infos = batches(log.read(offset, 1 << 20))
        yield from infos
        offset = infos[-1].last_offset + 1


def crash(log: PartitionLog) -> None:
    """Leave the log as kill -9 would: no final fsync, no recovery point, files as written."""
    log.delete(remove_files=False)


def segment_files(directory: Path, suffix: str = ".log") -> list[Path]:
    return sorted(directory.glob(f"*{suffix}"))


def flip_byte(path: Path, position: int) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        (byte,) = os.pread(fd, 1, position)
        os.pwrite(fd, bytes([byte ^ 0xFF]), position)
    finally:
        os.close(fd)


@contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Make the kernel refuse (EFBIG) any write that would grow a file past ``limit`` bytes."""
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
