"""Committed offsets of every group, kept in an internal log of the broker and replayed at start.

Owned by the :class:`~millstream.broker.groups.coordinator.GroupCoordinator`. The log is an
ordinary :class:`~millstream.broker.storage.partition_log.PartitionLog` in
``<data>/internal/group-offsets/`` (RecordBatch v2 segments, indexes, recovery, group commit),
so a commit is acknowledged only once fsynced and concurrent commits share fsyncs. Each commit
request is one batch, so it is applied whole or not at all. Records, keys and values in JSON::

    key ["offset", group, topic, partition]  value {"offset", "metadata", "time"}
    key ["offset", group, topic, partition]  value null             (the topic was deleted)
    key ["group", group]                     value {"generation"}   (the group's last one)
    key ["group", group]                     value null             (deleted: forget it all)

The latest record of a key wins, so the log is compacted (as Kafka compacts its
``__consumer_offsets``), whole: when it holds many times more records than there are live keys,
the live state is written to a fresh log beside it, which then replaces it by two renames::

    group-offsets/             the log
    group-offsets.compacting/  being written; removed at open if left over
    group-offsets.old/         the log before the swap; at open, put back if the swap was cut
                               short before the new log was renamed in, else removed

Generations are kept so that a restarted broker continues a
group's numbering instead of starting again at 1: a member of a generation from before the
restart is then still told its generation has ended.

In memory every entry carries the log offset that wrote it, and an older write never replaces
a newer one, whatever order concurrent appends finish their fsyncs in.

Not thread-safe: used on the event loop's thread (the constructor may run before the loop).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from millstream.broker.storage.config import MIB, TopicConfig
from millstream.broker.storage.files import fsync_dir
from millstream.broker.storage.partition_log import PartitionLog
from millstream.records import BatchBuilder, check_batches, decode_batch, iter_batches, now_ms

logger = logging.getLogger(__name__)

LOG_NAME = "__group_offsets"
# Never deleted by time or size: the latest record of a key may be arbitrarily old.
_LOG_CONFIG = TopicConfig(segment_bytes=64 * MIB, retention_ms=-1, retention_bytes=-1)
_REPLAY_CHUNK = 4 * MIB
# Well under the log's max.message.bytes (a record is at most ~30 KiB: 4096 characters of
# metadata, JSON-escaped).
_COMPACT_BATCH_BYTES = 1 * MIB

TopicPartitionKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    offset: int
    metadata: str = ""
    commit_time_ms: int = 0


@dataclass(slots=True)
class _GroupOffsets:
    offsets: dict[TopicPartitionKey, tuple[int, CommittedOffset]]  # value: (log offset, ...)
    generation: tuple[int, int] = (-1, 0)  # (log offset, generation)


class OffsetStore:
    def __init__(
        self,
        directory: Path,
        *,
        on_sync: Callable[[float], None] | None = None,
        compact_min_bytes: int = 16 * MIB,
    ) -> None:
        """Open (recovering and replaying) the log in ``directory``; blocking file work.

        The log is compacted once it is over ``compact_min_bytes`` and mostly dead records."""
        self._directory = directory
        self._on_sync = on_sync
        self._compact_min_bytes = compact_min_bytes
        _finish_interrupted_swap(directory)
        self._log = self._open_log(directory)
        self._groups: dict[str, _GroupOffsets] = {}
        # Where each deleted group was deleted: older writes are of the incarnation before.
        self._deleted_at: dict[str, int] = {}
        self._appending = 0  # appends in flight; a compaction waits for them to finish
        self._idle = asyncio.Event()
        self._idle.set()
        self._swapped = asyncio.Event()  # cleared while a compaction swaps the log
        self._swapped.set()
        replayed = self._replay()
        logger.info(
            "group offsets: replayed %d record(s), %d group(s), %d committed offset(s)",
            replayed,
            len(self._groups),
            sum(len(g.offsets) for g in self._groups.values()),
        )

    # --- reads ----------------------------------------------------------------------------

    def groups(self) -> list[str]:
        """Groups with committed offsets or a recorded generation."""
        return sorted(self._groups)

    def committed(self, group: str) -> dict[TopicPartitionKey, CommittedOffset]:
        stored = self._groups.get(group)
        if stored is None:
            return {}
        return {tp: entry for tp, (_, entry) in sorted(stored.offsets.items())}

    def generation(self, group: str) -> int:
        stored = self._groups.get(group)
        return 0 if stored is None else stored.generation[1]

    @property
    def size_bytes(self) -> int:
        return self._log.size_bytes

    # --- writes ---------------------------------------------------------------------------

    async def commit(self, group: str, offsets: Iterable[tuple[str, int, int, str]]) -> None:
        """Store (topic, partition, offset, metadata) entries; returns once durable."""
        now = now_ms()
        entries = [
            (["offset", group, topic, partition], {"offset": o, "metadata": m, "time": now})
            for topic, partition, o, m in offsets
        ]
        await self._append(entries)

    async def record_generation(self, group: str, generation: int) -> None:
        await self._append([(["group", group], {"generation": generation})])

    async def delete_group(self, group: str) -> None:
        await self._append([(["group", group], None)])

    async def forget_topic(self, topic: str) -> None:
        """Drop every group's committed offsets of ``topic`` (it was deleted)."""
        doomed: list[tuple[list[Any], Mapping[str, Any] | None]] = [
            (["offset", group, t, p], None)
            for group, stored in sorted(self._groups.items())
            for t, p in sorted(stored.offsets)
            if t == topic
        ]
        if doomed:
            await self._append(doomed)

    async def close(self) -> None:
        await self._log.close()

    # --- inside ---------------------------------------------------------------------------

    async def _append(self, entries: Sequence[tuple[list[Any], Mapping[str, Any] | None]]) -> None:
        await self._swapped.wait()
        encoded = [
            (json.dumps(key).encode(), None if value is None else json.dumps(value).encode())
            for key, value in entries
        ]
        raw = _batch(encoded)
        self._appending += 1
        self._idle.clear()
        try:
            first, _ = await self._log.append(raw, check_batches(raw))
        finally:
            self._appending -= 1
            if not self._appending:
                self._idle.set()
        for index, (key, value) in enumerate(encoded):
            self._apply(key, value, first + index)

    # --- compaction -----------------------------------------------------------------------

    def needs_compaction(self) -> bool:
        live = sum(len(g.offsets) + 1 for g in self._groups.values())
        records = self._log.log_end_offset - self._log.log_start_offset
        return self._log.size_bytes >= self._compact_min_bytes and records > 4 * live

    async def compact(self) -> None:
        """Replace the log with one holding only the live state; commits wait meanwhile.

        The new log is written in full beside the old one first: if anything fails, it is
        removed and the old log goes on serving as if nothing had happened."""
        self._swapped.clear()
        fresh = self._directory.with_name(self._directory.name + ".compacting")
        try:
            await self._idle.wait()
            before = self._log.size_bytes
            shutil.rmtree(fresh, ignore_errors=True)
            new_log = self._open_log(fresh)
            try:
                for chunk in _chunks(self._live_records(), _COMPACT_BATCH_BYTES):
                    raw = _batch(chunk)
                    await new_log.append(raw, check_batches(raw))
            finally:
                await new_log.close()
            await self._log.close()
            old = self._directory.with_name(self._directory.name + ".old")
            self._directory.rename(old)
            fresh.rename(self._directory)
            fsync_dir(self._directory.parent)
            shutil.rmtree(old)
            logger.info("group offsets compacted: %d bytes -> %d", before, self.size_bytes)
        except BaseException:
            logger.exception("group offsets: compaction failed; the log stays as it was")
            shutil.rmtree(fresh, ignore_errors=True)
            raise
        finally:
            if self._log.closed:  # swapped (or failed after closing): serve the log in place
                _finish_interrupted_swap(self._directory)
                self._log = self._open_log(self._directory)
                self._groups.clear()
                self._deleted_at.clear()
                self._replay()
            self._swapped.set()

    def _live_records(self) -> list[tuple[bytes, bytes]]:
        records = []
        for group, stored in sorted(self._groups.items()):
            _, generation = stored.generation
            if generation:
                marker = json.dumps({"generation": generation}).encode()
                records.append((json.dumps(["group", group]).encode(), marker))
            for (topic, partition), (_, c) in sorted(stored.offsets.items()):
                key = json.dumps(["offset", group, topic, partition]).encode()
                value = {"offset": c.offset, "metadata": c.metadata, "time": c.commit_time_ms}
                records.append((key, json.dumps(value).encode()))
        return records

    def _open_log(self, directory: Path) -> PartitionLog:
        return PartitionLog(LOG_NAME, 0, directory, _LOG_CONFIG, on_sync=self._on_sync)

    def _replay(self) -> int:
        offset, end, count = self._log.log_start_offset, self._log.high_watermark, 0
        while offset < end:
            data = self._log.read(offset, _REPLAY_CHUNK)
            for info in iter_batches(data):
                for record in decode_batch(data, info.position):
                    if record.offset >= offset:
                        self._apply(record.key, record.value, record.offset)
                        count += 1
                offset = info.last_offset + 1
        return count

    def _apply(self, raw_key: bytes | None, raw_value: bytes | None, log_offset: int) -> None:
        try:
            key = json.loads(raw_key or b"null")
            value: Any = None if raw_value is None else json.loads(raw_value)
            kind, group = str(key[0]), str(key[1])
            if log_offset < self._deleted_at.get(group, -1):
                return  # written for an incarnation of the group that was deleted since
            if kind == "group" and value is None:
                self._groups.pop(group, None)
                self._deleted_at[group] = log_offset
                return
            stored = self._groups.setdefault(group, _GroupOffsets({}))
            if kind == "group":
                if log_offset > stored.generation[0]:
                    stored.generation = (log_offset, int(value["generation"]))
            elif kind == "offset":
                tp = (str(key[2]), int(key[3]))
                current = stored.offsets.get(tp)
                if value is None:
                    if current is not None and current[0] < log_offset:
                        del stored.offsets[tp]
                elif current is None or current[0] < log_offset:
                    entry = CommittedOffset(value["offset"], value["metadata"], value["time"])
                    stored.offsets[tp] = (log_offset, entry)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            # Only this broker writes the log, and every batch in it passed its CRC check: a
            # record that does not parse is a bug, not damage. Skip it loudly.
            logger.error("group offsets: skipping unreadable record at %d: %s", log_offset, exc)


def _batch(records: Sequence[tuple[bytes, bytes | None]]) -> bytes:
    builder = BatchBuilder()
    for key, value in records:
        builder.append(value, key)
    return builder.build()


def _chunks(
    items: list[tuple[bytes, bytes]], max_bytes: int
) -> Iterator[list[tuple[bytes, bytes]]]:
    """Runs of records of about ``max_bytes`` at most (one record, if it alone is larger)."""
    chunk: list[tuple[bytes, bytes]] = []
    size = 0
    for key, value in items:
        if chunk and size + len(key) + len(value) > max_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append((key, value))
        size += len(key) + len(value) + 32  # and each record's framing
    if chunk:
        yield chunk


def _finish_interrupted_swap(directory: Path) -> None:
    old = directory.with_name(directory.name + ".old")
    fresh = directory.with_name(directory.name + ".compacting")
    if old.exists() and not directory.exists():
        logger.warning("group offsets: a compaction was cut short; going back to %s", old)
        old.rename(directory)
    for leftover in (old, fresh):
        shutil.rmtree(leftover, ignore_errors=True)
