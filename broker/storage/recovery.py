"""Opening a partition directory after a clean stop or a crash: the recovery point and the check.

Called by :class:`~millstream.broker.storage.partition_log.PartitionLog` when it opens, and
(through its flusher) to write the recovery point. The rule: what is before the recovery point
was fsynced, indexes included, so it is trusted; what is after it may be torn or corrupt by a
crash, so every batch there is checked (length, magic, CRC-32C, contiguous offsets) and the
log is truncated at the first bad one. A corrupt batch is never served after a restart.

File ``<partition>/recovery-point``, one ASCII line, replaced atomically (tmp, fsync, rename)::

    1 <segment base offset> <byte position>\n

meaning: every segment before that one, and that one up to that position, is durable with its
indexes. The flusher rewrites it every few seconds after an fsync and on a clean close (then it
points at the end, and opening checks nothing). A missing or unreadable file means "trust
nothing"; a stale one only means more checking.

Per segment (see ``LogSegment.recover``): before the point, indexes are loaded and their tail
verified by a header walk (a missing, corrupt or short index is rebuilt); after it, batches are
CRC-checked and indexed. A truncation drops every later segment too (they could only hold
unacknowledged writes), each logged at WARNING with the partition, position, bytes and reason.
Left-overs (``*.deleted``, ``*.tmp``, indexes without a log) are removed.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from millstream.broker.storage.config import TopicConfig
from millstream.broker.storage.files import atomic_write, fsync_dir
from millstream.broker.storage.segment import (
    INDEX_SUFFIX,
    LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
    LogSegment,
)
from millstream.errors import StorageError

log = logging.getLogger(__name__)

RECOVERY_POINT: Final = "recovery-point"
_SUFFIXES: Final = "|".join(map(re.escape, (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX)))
_SEGMENT_FILE: Final = re.compile(rf"(\d{{20}})({_SUFFIXES})")
_LEFTOVER_SUFFIXES: Final = (".deleted", ".tmp")


@dataclass(frozen=True, slots=True)
class RecoveryPoint:
    segment_base: int
    position: int

    def encode(self) -> bytes:
        return f"1 {self.segment_base} {self.position}\n".encode()

    @classmethod
    def decode(cls, data: bytes) -> RecoveryPoint:
        version, base, position = data.decode("ascii").split()
        if version != "1" or int(base) < 0 or int(position) < 0:
            raise ValueError(f"unexpected recovery point {data!r}")
        return cls(int(base), int(position))


def write_recovery_point(directory: Path, point: RecoveryPoint) -> None:
    """Blocking (fsyncs): called from a worker thread or during open."""
    atomic_write(directory / RECOVERY_POINT, point.encode())


def read_recovery_point(directory: Path, name: str) -> RecoveryPoint | None:
    try:
        return RecoveryPoint.decode((directory / RECOVERY_POINT).read_bytes())
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as exc:
        log.warning("partition %s: unreadable recovery point (%s); checking every batch", name, exc)
        return None


def recover_log(
    directory: Path, config: TopicConfig, name: str, now_ms: int, start_offset: int = 0
) -> list[LogSegment]:
    """The segments of ``directory``, checked and ready; if there are none, a new empty one
    based at ``start_offset``."""
    bases = _segment_bases(directory, name)
    if not bases:
        return [LogSegment.create(directory, start_offset, config, now_ms)]
    point = read_recovery_point(directory, name)
    segments: list[LogSegment] = []
    try:
        for base in bases:
            segments.append(LogSegment.open(directory, base, config))
        kept, changed = _recover_segments(segments, point, name, now_ms)
        last = kept[-1]
        if changed or point != RecoveryPoint(last.base_offset, last.size):
            for segment in kept:
                segment.fsync()
            fsync_dir(directory)
            write_recovery_point(directory, RecoveryPoint(last.base_offset, last.size))
    except BaseException:
        for segment in segments:
            segment.close()
        raise
    return kept


def _recover_segments(
    segments: list[LogSegment], point: RecoveryPoint | None, name: str, now_ms: int
) -> tuple[list[LogSegment], bool]:
    kept: list[LogSegment] = []
    changed = False
    for i, segment in enumerate(segments):
        if kept and segment.base_offset != kept[-1].next_offset:
            end = kept[-1].next_offset
            if _trusted_end(segment, point) > 0:
                raise StorageError(
                    f"partition {name}: segment {segment.path.name} starts at offset "
                    f"{segment.base_offset} but the one before ends at {end}; refusing to open"
                )
            _drop(segments[i:], name, f"offsets jump from {end} to {segment.base_offset}")
            return kept, True
        result = segment.recover(_trusted_end(segment, point), now_ms)
        kept.append(segment)
        changed |= bool(result.checked_bytes or result.reason)
        if result.dropped_bytes:
            log.warning(
                "partition %s: truncated %s at position %d, dropping %d bytes: %s",
                name,
                segment.path.name,
                segment.size,
                result.dropped_bytes,
                result.reason,
            )
            doomed = segments[i + 1 :]
            if not segment.size and len(kept) > 1:
                doomed = [kept.pop(), *doomed]
            _drop(doomed, name, "it follows a truncated segment")
            return kept, True
        if result.reason:
            log.info("partition %s: %s: %s", name, segment.path.name, result.reason)
    return kept, changed


def _trusted_end(segment: LogSegment, point: RecoveryPoint | None) -> int:
    if point is None or segment.base_offset > point.segment_base:
        return 0
    if segment.base_offset < point.segment_base:
        return segment.size
    return point.position


def _drop(segments: list[LogSegment], name: str, reason: str) -> None:
    for segment in segments:
        log.warning(
            "partition %s: deleting segment %s (%d bytes): %s",
            name,
            segment.path.name,
            segment.size,
            reason,
        )
        segment.delete()


def _segment_bases(directory: Path, name: str) -> list[int]:
    """Base offsets of the segments in ``directory``, after removing left-overs."""
    logs: set[int] = set()
    indexes: list[tuple[int, Path]] = []
    for path in directory.iterdir():
        match = _SEGMENT_FILE.fullmatch(path.name)
        if path.name.endswith(_LEFTOVER_SUFFIXES):
            path.unlink(missing_ok=True)
        elif match is None:
            if path.name != RECOVERY_POINT:
                log.warning("partition %s: ignoring unexpected file %s", name, path.name)
        elif match.group(2) == LOG_SUFFIX:
            logs.add(int(match.group(1)))
        else:
            indexes.append((int(match.group(1)), path))
    for base, path in indexes:
        if base not in logs:
            path.unlink(missing_ok=True)
    return sorted(logs)
