"""The committed offsets of the groups held by one partition of the group-offsets topic.

Owned by the :class:`~millstream.broker.groups.coordinator.GroupCoordinator`, which keeps one
store for each partition of ``__group_offsets`` (:mod:`millstream.internal_topics`) served by
this broker and replays it when the partition comes here (at start, or when a move brings it).
The partition is an ordinary :class:`~millstream.broker.storage.partition_log.PartitionLog`
of the :class:`~millstream.broker.storage.log_manager.LogManager` (segments, indexes,
recovery, group commit), so it is placed and moved between brokers as any partition is, and
a group's offsets go wherever its partition goes. A commit is acknowledged only once fsynced,
and concurrent commits share fsyncs. Each commit request is one batch, so it is applied whole
or not at all. Records, keys and values in JSON::

    key ["offset", group, topic, partition]  value {"offset", "metadata", "time"}
    key ["offset", group, topic, partition]  value null             (the topic was deleted)
    key ["group", group]                     value {"generation"}   (the group's last one)
    key ["group", group]                     value {"generation", "membership"}  (Stable)
    key ["group", group]                     value null             (deleted: forget it all)

The latest record of a key wins, so the log is compacted (as Kafka compacts its
``__consumer_offsets``) by snapshot: when it holds many times more records than there are
live keys, the live state is appended as a snapshot that starts a new segment, after which
every earlier segment may be deleted (:meth:`PartitionLog.delete_below`). Offsets never
change, so a copy of the partition being taken by another broker simply goes on (or starts
again from the new log start, as after retention). A crash mid-snapshot leaves records that
repeat live values: harmless, as replay ends in the same state.

Generations are kept so that a group's numbering continues across restarts and moves instead
of starting again at 1: a member of a generation from before is then still told its
generation has ended. A group's generation never goes back: a record of an older one than the
group has (a membership written late) is ignored. The membership of a Stable generation
(:mod:`~millstream.broker.groups.membership`) rides with it, so the coordinator that takes the
group over keeps its members.

In memory every entry carries the log offset that wrote it, and an older write never replaces
a newer one, whatever order concurrent appends finish their fsyncs in.

Not thread-safe: used on the event loop's thread (the constructor may run before the loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from millstream.broker.storage.config import MIB
from millstream.broker.storage.partition_log import PartitionLog
from millstream.records import BatchBuilder, check_batches, decode_batch, iter_batches, now_ms

logger = logging.getLogger(__name__)

_REPLAY_CHUNK = 4 * MIB
_STEP_CHUNK = 256 * 1024  # a few milliseconds of decoding between two looks at the loop
# Well under the log's max.message.bytes (a record is at most ~30 KiB: 4096 characters of
# metadata, JSON-escaped).
_COMPACT_BATCH_BYTES = 1 * MIB

TopicPartitionKey = tuple[str, int]


@dataclass(slots=True)
class _Pending:
    generation: int
    membership: Mapping[str, Any] | None = None  # None: the generation alone
    write: asyncio.Future[None] = field(init=False)


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    offset: int
    metadata: str = ""
    commit_time_ms: int = 0


@dataclass(slots=True)
class _GroupOffsets:
    offsets: dict[TopicPartitionKey, tuple[int, CommittedOffset]]  # value: (log offset, ...)
    generation: tuple[int, int] = (-1, 0)  # (log offset, generation)
    membership: Mapping[str, Any] | None = None  # the generation's, once it was Stable


class OffsetStore:
    def __init__(
        self, log: PartitionLog, *, compact_min_bytes: int = 16 * MIB, replay: bool = True
    ) -> None:
        """Replay ``log`` (blocking file reads; :meth:`load` yields to the event loop as it
        goes). It is compacted once it is over ``compact_min_bytes`` and mostly dead
        records."""
        self.log = log
        self._compact_min_bytes = compact_min_bytes
        self._groups: dict[str, _GroupOffsets] = {}
        # Where each deleted group was deleted: older writes are of the incarnation before.
        self._deleted_at: dict[str, int] = {}
        # Each group's last ["group", group] record being written (they are written in turn).
        self._pending: dict[str, _Pending] = {}
        self._appending = 0  # appends in flight; a compaction waits for them to finish
        self._idle = asyncio.Event()
        self._idle.set()
        self._writable = asyncio.Event()  # cleared while a compaction writes its snapshot
        self._writable.set()
        self._snapshot_at = log.log_start_offset  # the records before are dead or repeated
        self._taken_over: set[str] = set()
        if replay:
            self._replayed(sum(self._replay(_REPLAY_CHUNK)))

    @classmethod
    async def load(cls, log: PartitionLog, **options: int) -> OffsetStore:
        """Replay ``log`` a small chunk at a time, letting the event loop serve in between
        (a partition that a move brings while the broker serves)."""
        store = cls(log, replay=False, **options)
        count = 0
        for replayed in store._replay(_STEP_CHUNK):
            count += replayed
            await asyncio.sleep(0)
        store._replayed(count)
        return store

    def _replayed(self, count: int) -> None:
        # Groups that had members under an earlier coordinator (or before a restart).
        self._taken_over = {g for g, stored in self._groups.items() if stored.generation[1]}
        logger.info(
            "group offsets %s: replayed %d record(s), %d group(s), %d committed offset(s)",
            *(self.log.name, count, len(self._groups)),
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

    def mark_taken_over(self, group: str) -> None:
        """``group`` came from elsewhere (adopted offsets): :meth:`take_over` says so once."""
        self._taken_over.add(group)

    def take_over(self, group: str) -> bool:
        """Whether ``group`` had a generation when this store was loaded and is only now
        being picked up here (True once per group)."""
        if group in self._taken_over:
            self._taken_over.discard(group)
            return True
        return False

    def generation(self, group: str) -> int:
        """The group's last generation, stored or being stored."""
        return self._latest(group)[0]

    def membership(self, group: str) -> Mapping[str, Any] | None:
        """The stored membership of the group's generation. None: none was stored for it, or
        a record of the group is being written (a rebalance began, the group emptied)."""
        stored = self._groups.get(group)
        if stored is None or group in self._pending:
            return None
        return stored.membership

    def _latest(self, group: str) -> tuple[int, bool]:
        """The generation of the group's last record, stored or being written, and whether
        it has a membership."""
        pending = self._pending.get(group)
        if pending is not None:
            return pending.generation, pending.membership is not None
        stored = self._groups.get(group)
        if stored is None:
            return 0, False
        return stored.generation[1], stored.membership is not None

    @property
    def size_bytes(self) -> int:
        return self.log.size_bytes

    # --- writes ---------------------------------------------------------------------------

    async def commit(self, group: str, offsets: Iterable[tuple[str, int, int, str]]) -> None:
        """Store (topic, partition, offset, metadata) entries; returns once durable."""
        now = now_ms()
        entries = [
            (["offset", group, topic, partition], {"offset": o, "metadata": m, "time": now})
            for topic, partition, o, m in offsets
        ]
        await self._append(entries)

    def record_generation(self, group: str, generation: int) -> asyncio.Future[None]:
        """Make sure the group's generation is at least ``generation`` on disk: done once it
        is (a join is answered only then). Concurrent answers of one rebalance share one
        write, and one already under way for a newer record counts too. Taken into account
        at once (:meth:`generation`), before the write even starts."""
        if generation > self._latest(group)[0]:
            return self._queue(group, _Pending(generation), {"generation": generation})
        return self._settled(group)

    def end_membership(self, group: str, generation: int) -> asyncio.Future[None]:
        """The group is not the stored membership any more (a rebalance began, or its last
        member went, at ``generation``): store the generation without members. Taken into
        account at once: :meth:`membership` is None from now on, even should the write fail
        (then only what is on disk, for a restart, still has the members)."""
        latest, with_members = self._latest(group)
        if generation > latest or (generation == latest and with_members):
            return self._queue(group, _Pending(generation), {"generation": generation})
        return self._settled(group)

    def record_membership(
        self, group: str, generation: int, membership: Mapping[str, Any]
    ) -> asyncio.Future[None]:
        """Store the membership of the group's ``generation`` now that it is Stable (or that a
        static member's new process took its place in it), unless a newer generation is
        stored or being stored, or this very membership is."""
        latest, with_members = self._latest(group)
        if generation < latest:
            return _done()
        if generation == latest and with_members and self._last_membership(group) == membership:
            return self._settled(group)
        value = {"generation": generation, "membership": membership}
        return self._queue(group, _Pending(generation, membership), value)

    def _last_membership(self, group: str) -> Mapping[str, Any] | None:
        pending = self._pending.get(group)
        if pending is not None:
            return pending.membership
        stored = self._groups.get(group)
        return None if stored is None else stored.membership

    async def delete_group(self, group: str) -> None:
        await self._queue(group, _Pending(0), None)

    async def settle(self) -> None:
        """Wait until no group's record is being written (failures are their callers')."""
        while self._pending:
            writes = [p.write for p in self._pending.values()]
            await asyncio.wait(writes)

    def _settled(self, group: str) -> asyncio.Future[None]:
        """Done once the group's record being written (if any) is durable."""
        pending = self._pending.get(group)
        return _done() if pending is None else asyncio.shield(pending.write)

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

    # --- inside ---------------------------------------------------------------------------

    def _queue(
        self, group: str, pending: _Pending, value: Mapping[str, Any] | None
    ) -> asyncio.Future[None]:
        """Write a ["group", group] record once the group's last one is written, so that they
        reach the log in the order they were asked for; the write, shielded."""
        before = self._pending.get(group)

        async def write() -> None:
            if before is not None:
                with contextlib.suppress(Exception):  # its own callers hear of its failure
                    await before.write
            await self._append([(["group", group], value)])

        pending.write = asyncio.ensure_future(write())
        self._pending[group] = pending

        def written(write: asyncio.Future[None]) -> None:
            if self._pending.get(group) is pending:
                del self._pending[group]
            failed = not write.cancelled() and write.exception() is not None
            stored = self._groups.get(group)
            ended = pending.membership is None and value is not None
            if failed and ended and stored is not None:
                # Not on disk, but this broker must not bring the members back, nor hand the
                # generation out again.
                stored.membership = None
                stored.generation = (
                    stored.generation[0],
                    max(stored.generation[1], pending.generation),
                )

        pending.write.add_done_callback(written)
        return asyncio.shield(pending.write)

    async def _append(self, entries: Sequence[tuple[list[Any], Mapping[str, Any] | None]]) -> None:
        await self._writable.wait()
        encoded = [
            (json.dumps(key).encode(), None if value is None else json.dumps(value).encode())
            for key, value in entries
        ]
        self._appending += 1
        self._idle.clear()
        try:
            await self._write(encoded)
        finally:
            self._appending -= 1
            if not self._appending:
                self._idle.set()

    async def _write(self, records: Sequence[tuple[bytes, bytes | None]]) -> None:
        raw = _batch(records)
        first, _ = await self.log.append(raw, check_batches(raw))
        for index, (key, value) in enumerate(records):
            self._apply(key, value, first + index)

    # --- compaction -----------------------------------------------------------------------

    def needs_compaction(self) -> bool:
        live = sum(len(g.offsets) + 1 for g in self._groups.values())
        records = self.log.log_end_offset - max(self._snapshot_at, self.log.log_start_offset)
        return self.log.size_bytes >= self._compact_min_bytes and records > 4 * live

    async def compact(self) -> None:
        """Append the live state as a snapshot in a segment of its own and let go of every
        segment before it; commits wait meanwhile."""
        self._writable.clear()
        try:
            await self._idle.wait()
            before = self.log.size_bytes
            start = self.log.roll()
            for chunk in _chunks(self._live_records(), _COMPACT_BATCH_BYTES):
                await self._write(chunk)
            self._snapshot_at = start
            await self.log.delete_below(start)
            logger.info(
                "group offsets %s compacted: %d bytes -> %d", self.log.name, before, self.size_bytes
            )
        finally:
            self._writable.set()

    def _live_records(self) -> list[tuple[bytes, bytes | None]]:
        records: list[tuple[bytes, bytes | None]] = []
        for group, stored in sorted(self._groups.items()):
            _, generation = stored.generation
            if generation:
                marker: dict[str, Any] = {"generation": generation}
                if stored.membership is not None:
                    marker["membership"] = stored.membership
                records.append((json.dumps(["group", group]).encode(), json.dumps(marker).encode()))
            for (topic, partition), (_, c) in sorted(stored.offsets.items()):
                key = json.dumps(["offset", group, topic, partition]).encode()
                value = {"offset": c.offset, "metadata": c.metadata, "time": c.commit_time_ms}
                records.append((key, json.dumps(value).encode()))
        return records

    def _replay(self, chunk: int) -> Iterator[int]:
        """Apply the log from its start, ``chunk`` bytes at a time; yields the records each
        chunk held."""
        offset, end = self.log.log_start_offset, self.log.high_watermark
        while offset < end:
            data = self.log.read(offset, chunk)
            count = 0
            for info in iter_batches(data):
                for record in decode_batch(data, info.position):
                    if record.offset >= offset:
                        self._apply(record.key, record.value, record.offset)
                        count += 1
                offset = info.last_offset + 1
            yield count

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
                generation = int(value["generation"])
                if log_offset > stored.generation[0] and generation >= stored.generation[1]:
                    stored.generation = (log_offset, generation)
                    stored.membership = value.get("membership")
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


def _done() -> asyncio.Future[None]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


def _batch(records: Sequence[tuple[bytes, bytes | None]]) -> bytes:
    builder = BatchBuilder()
    for key, value in records:
        builder.append(value, key)
    return builder.build()


def _chunks(
    items: list[tuple[bytes, bytes | None]], max_bytes: int
) -> Iterator[list[tuple[bytes, bytes | None]]]:
    """Runs of records of about ``max_bytes`` at most (one record, if it alone is larger)."""
    chunk: list[tuple[bytes, bytes | None]] = []
    size = 0
    for key, value in items:
        length = len(key) + len(value or b"")
        if chunk and size + length > max_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append((key, value))
        size += length + 32  # and each record's framing
    if chunk:
        yield chunk
