"""The partitions of the group-offsets topic this broker serves, each with its offset store.

Owned by the :class:`~millstream.broker.groups.coordinator.GroupCoordinator`: a group is
coordinated here exactly while its partition (:func:`~millstream.internal_topics.
group_offsets_partition`) is served here, and :meth:`OffsetPartitions.store_for` says so or
raises the error that tells the client where to go:

- ``coordinator_not_available`` (retriable): the topic is not known here yet, or the
  partition is served here but its store is still loading (the HTTP layer answers the same,
  from the cluster's metadata, while the partition's copy is completed by a move);
- ``not_coordinator``: the partition is not served here (the HTTP layer names the broker
  that serves it).

:meth:`OffsetPartitions.follow` compares what the log manager serves with the stores loaded:
a partition that went (moved away, deleted) is dropped, and the coordinator told
(``on_resign``) so it gives up its groups; a partition that came is loaded, and the
coordinator handed its store (``on_load``) so it takes its groups up. At start that is
done at once, before serving; later (a move completed) a task replays it in small chunks that
let the event loop serve in between, as Kafka loads a ``__consumer_offsets`` partition
(COORDINATOR_LOAD_IN_PROGRESS meanwhile).

Offsets kept by brokers before the topic existed (one log, ``<data>/internal/group-offsets``)
are adopted (:meth:`OffsetPartitions.adopt_legacy`): each group whose partition is served here
is copied (only offsets the topic does not have yet, so nothing goes back) and then deleted
from the old log; the old log goes once it is empty. Groups served elsewhere wait there until
their partition comes (adoption runs again after every load).

Not thread-safe: used on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Final

from millstream import errors
from millstream.broker.groups.offsets import OffsetStore
from millstream.broker.storage.config import TopicConfig
from millstream.broker.storage.log_manager import LogManager
from millstream.broker.storage.partition_log import PartitionLog
from millstream.internal_topics import GROUP_OFFSETS_TOPIC, group_offsets_partition

logger = logging.getLogger(__name__)

_LEGACY_CONFIG: Final = TopicConfig(retention_ms=-1, retention_bytes=-1)

Resign = Callable[[int, int], None]  # (partition, the topic's partition count)
Load = Callable[[OffsetStore], None]


class OffsetPartitions:
    def __init__(self, logs: LogManager, on_resign: Resign, on_load: Load) -> None:
        self._logs = logs
        self._on_resign = on_resign
        self._on_load = on_load
        self._stores: dict[int, OffsetStore] = {}
        self._loading: dict[int, asyncio.Task[None]] = {}
        self._legacy: Path | None = None
        # One adoption at a time: each opens the old log, and two writers must never share it.
        self._adopting = asyncio.Lock()

    # --- lookups --------------------------------------------------------------------------

    def partitions(self) -> int:
        """The topic's partition count; 0 while this broker does not know the topic."""
        try:
            return self._logs.topic(GROUP_OFFSETS_TOPIC).partitions
        except errors.UnknownTopic:
            return 0

    def stores(self) -> list[OffsetStore]:
        return list(self._stores.values())

    def store_for(self, group_id: str) -> OffsetStore:
        """The store of the group's partition, or the error that says where to go."""
        partitions = self.partitions()
        if not partitions:
            raise errors.CoordinatorNotAvailable(
                "the group-offsets topic does not exist yet (the operator creates it)"
            )
        partition = group_offsets_partition(group_id, partitions)
        log = self._served_log(partition)
        store = self._stores.get(partition)
        if log is not None and (store is None or store.log is not log):
            self.follow()
            store = self._stores.get(partition)
        if log is not None and store is not None:
            return store
        if log is not None:
            raise errors.CoordinatorNotAvailable(
                f"the offsets of group {group_id!r} are being loaded on this broker "
                f"(partition {partition} of {GROUP_OFFSETS_TOPIC}); try again shortly"
            )
        raise errors.NotCoordinator(
            f"group {group_id!r} is not coordinated by this broker: partition {partition} "
            f"of {GROUP_OFFSETS_TOPIC} is not served here"
        )

    def _served_log(self, partition: int) -> PartitionLog | None:
        try:
            log = self._logs.log(GROUP_OFFSETS_TOPIC, partition)
        except errors.MillstreamError:  # placed elsewhere, moving here, or not there
            return None
        return None if log.closed or log.sealed else log

    # --- following the placement ----------------------------------------------------------

    def follow(self, *, at_once: bool = False) -> None:
        """Drop the stores of partitions gone and load those come: ``at_once`` (before
        serving), or in a task each."""
        partitions = self.partitions()
        served = {p: log for p in range(partitions) if (log := self._served_log(p)) is not None}
        for partition, store in list(self._stores.items()):
            if served.get(partition) is not store.log:
                del self._stores[partition]
                self._on_resign(partition, partitions)
                logger.info("no longer coordinating the groups of %s", store.log.name)
        for partition, task in list(self._loading.items()):
            if partition not in served:
                task.cancel()
                del self._loading[partition]
        for partition, log in served.items():
            if partition in self._stores or partition in self._loading:
                continue
            if at_once:
                self._stores[partition] = store = OffsetStore(log)
                logger.info("coordinating the groups of %s", log.name)
                self._on_load(store)
            else:
                task = asyncio.get_running_loop().create_task(self._load(partition, log))
                self._loading[partition] = task

    async def _load(self, partition: int, log: PartitionLog) -> None:
        try:
            store = await OffsetStore.load(log)
            # Adopted before the store is used, so no member reads or commits in between.
            await self._adopt_legacy_into(store)
            if self._served_log(partition) is log:  # still here
                self._stores[partition] = store
                logger.info("coordinating the groups of %s", log.name)
                self._on_load(store)
        except Exception:
            logger.exception("group offsets: loading %s failed; the next look tries again", log)
        finally:
            if self._loading.get(partition) is asyncio.current_task():
                del self._loading[partition]

    async def close(self) -> None:
        tasks = list(self._loading.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- offsets from before the topic ----------------------------------------------------

    async def adopt_legacy(self, directory: Path) -> None:
        """Adopt the old log's groups whose partitions are served here (see the module)."""
        shutil.rmtree(directory.with_name(directory.name + ".adopted"), ignore_errors=True)
        shutil.rmtree(directory.with_name(directory.name + ".compacting"), ignore_errors=True)
        old = directory.with_name(directory.name + ".old")  # its compaction was cut short
        if old.exists() and not directory.exists():
            old.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
        if directory.exists():
            self._legacy = directory
            for store in self.stores():
                try:
                    await self._adopt_legacy_into(store)
                except errors.MillstreamError as exc:  # the partition left meanwhile
                    logger.warning("group offsets: not adopted into %s: %s", store.log.name, exc)

    async def _adopt_legacy_into(self, store: OffsetStore) -> None:
        async with self._adopting:
            await self._adopt_legacy_locked(store)

    async def _adopt_legacy_locked(self, store: OffsetStore) -> None:
        directory = self._legacy
        if directory is None or self._served_log(store.log.partition) is not store.log:
            return  # nothing left to adopt, or the partition left meanwhile
        partitions = self.partitions()
        log = PartitionLog("legacy-group-offsets", 0, directory, _LEGACY_CONFIG)
        try:
            legacy = OffsetStore(log)
            mine = [
                g
                for g in legacy.groups()
                if group_offsets_partition(g, partitions) == store.log.partition
            ]
            for group_id in mine:
                have = store.committed(group_id)
                missing = [
                    (t, p, c.offset, c.metadata)
                    for (t, p), c in legacy.committed(group_id).items()
                    if (t, p) not in have
                ]
                if missing:
                    await store.commit(group_id, missing)
                await store.record_generation(group_id, legacy.generation(group_id))
                store.mark_taken_over(group_id)
                await legacy.delete_group(group_id)  # adopted: never copied again
            left = len(legacy.groups())
        finally:
            await log.close()
        if mine:
            logger.info("group offsets of %d group(s) adopted from %s", len(mine), directory)
        if not left:
            # Renamed first, so a crash mid-removal never leaves half a log to replay.
            gone = directory.with_name(directory.name + ".adopted")
            directory.rename(gone)
            shutil.rmtree(gone)
            self._legacy = None
