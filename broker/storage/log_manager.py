"""The data directory: topics, their partition logs, recovery at open, retention.

Created once per broker process by the server and used by the HTTP layer. Layout (see the
package docstring) plus two working directories on the same filesystem, so that moving a
topic in or out of ``topics/`` is one atomic rename::

    <data>/topics/<topic>/topic.json     name, partition count, config overrides, and the
                                         partitions hosted here (see ``topic_file``)
    <data>/topics/<topic>/<partition>/   one PartitionLog per hosted partition
    <data>/staging/<random>/             a topic being created (topic.json written, fsynced)
    <data>/trash/<random>/               a topic, or a partition, being deleted

A topic may host a subset of its partitions (a broker of a multi-broker cluster serves those
placed on it): :meth:`LogManager.topic` describes the whole topic (every partition counts for
keys and offset commits), :meth:`LogManager.log` opens only hosted partitions and refuses the
others with ``unknown_partition``. :meth:`LogManager.ensure_topic` makes a topic exactly what
the cluster's metadata says, creating it or altering it; a partition it stops hosting is
closed and its directory moved to ``trash/``, so the directory holds exactly the hosted
partitions. ``open()`` applies the same rule to a topic whose ``topic.json`` was rewritten
just before a crash. Standalone topics (``create_topic``) host every partition.

A broker of a cluster may also *hold* partitions it does not serve (``held`` in
``ensure_topic`` and ``topic.json``): a copy being received from another broker, written with
:meth:`PartitionLog.append_replica`, or the copy of a partition that moved away, kept
read-only until the new broker has copied its end. A held log is sealed (producers' appends
are refused) and reached only through :meth:`LogManager.held_log`; it keeps its log when it
becomes hosted and back (one ``topic.json`` rewrite is the commit point), so a copy is
promoted without moving a byte. Retention and segment rolling by age leave held logs alone.

Creating a topic builds it in ``staging/`` and renames it into ``topics/``; deleting renames it
into ``trash/`` and removes it in a worker thread. Either rename is the commit point, made
durable by fsyncing both directories, so after a crash a topic is entirely there or entirely
gone; ``open()`` empties ``staging/`` and ``trash/``. ``topic.json`` is replaced atomically
(tmp, fsync, rename, fsync directory) before the partitions it names are created or removed.

Not thread-safe: used on the event loop's thread (``open`` may run before the loop does).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from millstream.broker.storage.config import TopicConfig
from millstream.broker.storage.files import fsync_dir
from millstream.broker.storage.partition_log import PartitionLog
from millstream.broker.storage.topic_file import (
    TOPIC_FILE,
    TopicFile,
    read_topic_file,
    write_topic_file,
)
from millstream.errors import (
    BrokerUnavailable,
    InvalidConfig,
    InvalidPartitions,
    InvalidTopicName,
    NotLeader,
    StorageError,
    TopicExists,
    UnknownPartition,
    UnknownTopic,
)

logger = logging.getLogger(__name__)

MAX_PARTITIONS: Final = 10_000
_TOPIC_NAME: Final = re.compile(r"[a-zA-Z0-9._-]{1,249}")
DEFAULT_CONFIG: Final = TopicConfig()
# fsyncs of many partitions run side by side; more threads than this rarely helps a disk.
FSYNC_THREADS: Final = 16


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: int  # of the whole topic, wherever its partitions are served
    config: TopicConfig
    # The partitions this broker hosts; None: every one (a standalone broker's topic).
    hosted: frozenset[int] | None = None
    # The partitions with a log here that is not served (see the module docstring).
    held: frozenset[int] = frozenset()

    def hosts(self, partition: int) -> bool:
        return 0 <= partition < self.partitions and (
            self.hosted is None or partition in self.hosted
        )


@dataclass(slots=True)
class _Topic:
    info: TopicInfo
    overrides: dict[str, int]
    logs: dict[int, PartitionLog]  # by partition: the hosted ones
    held: dict[int, PartitionLog] = field(default_factory=dict)  # by partition: the held ones


class LogManager:
    def __init__(
        self,
        data_dir: Path,
        defaults: TopicConfig = DEFAULT_CONFIG,
        *,
        on_sync: Callable[[float], None] | None = None,
    ) -> None:
        """``on_sync`` is told how long each fsync job of any partition took (for metrics)."""
        self.data_dir = Path(data_dir)
        self.defaults = defaults
        self._on_sync = on_sync
        self._topics_dir = self.data_dir / "topics"
        self._staging_dir = self.data_dir / "staging"
        self._trash_dir = self.data_dir / "trash"
        self._topics: dict[str, _Topic] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._removals: set[asyncio.Future[None]] = set()
        self._open = False

    # --- lifecycle ------------------------------------------------------------------------

    def open(self) -> None:
        """Load every topic and recover every partition (blocking: run it before serving)."""
        if self._open:
            return
        for directory in (self._topics_dir, self._staging_dir, self._trash_dir):
            directory.mkdir(parents=True, exist_ok=True)
        for leftover in (*self._staging_dir.iterdir(), *self._trash_dir.iterdir()):
            logger.info("removing %s, left by an interrupted topic creation or deletion", leftover)
            shutil.rmtree(leftover, ignore_errors=True)
        self._executor = ThreadPoolExecutor(FSYNC_THREADS, thread_name_prefix="millstream-fsync")
        self._open = True
        try:
            for directory in sorted(self._topics_dir.iterdir()):
                self._load_topic(directory)
        except BaseException:
            for partition_log in (*self.logs(), *self.held_logs()):
                partition_log.delete(remove_files=False)
            self._topics.clear()
            self._open = False
            self._executor.shutdown()
            self._executor = None
            raise

    def _load_topic(self, directory: Path) -> None:
        try:
            stored = read_topic_file(directory)
            config = self.defaults.with_updates(stored.overrides)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, InvalidConfig) as exc:
            logger.error("ignoring %s: cannot read its %s: %s", directory, TOPIC_FILE, exc)
            return
        name, partitions = stored.name, stored.partitions
        if name != directory.name or not _valid_partitions(partitions):
            logger.error("ignoring %s: its %s does not match", directory, TOPIC_FILE)
            return
        info = TopicInfo(name, partitions, config, stored.hosted, stored.held)
        topic = _Topic(info, stored.overrides, {})
        self._topics[name] = topic
        hosted = sorted(stored.hosted) if stored.hosted is not None else range(partitions)
        for stray in _partition_dirs(directory) - set(hosted) - stored.held:
            # topic.json stopped hosting it just before a crash: finish the removal.
            logger.info("removing partition %d of %s, no longer hosted here", stray, name)
            self._trash(directory / str(stray))
        topic.logs = {p: self._open_log(directory, name, p, config) for p in hosted}
        topic.held = {p: self._open_held(directory, name, p, config) for p in sorted(stored.held)}

    def _open_log(
        self,
        directory: Path,
        name: str,
        partition: int,
        config: TopicConfig,
        start_offset: int = 0,
    ) -> PartitionLog:
        return PartitionLog(
            name,
            partition,
            directory / str(partition),
            config,
            executor=self._executor,
            on_sync=self._on_sync,
            start_offset=start_offset,
        )

    def _open_held(
        self,
        directory: Path,
        name: str,
        partition: int,
        config: TopicConfig,
        start_offset: int = 0,
    ) -> PartitionLog:
        held = self._open_log(directory, name, partition, config, start_offset)
        held.seal(_not_served(name, partition))
        return held

    async def close(self) -> None:
        """Close every log (final fsyncs run side by side), then wait for file removals."""
        if not self._open:
            return
        self._open = False
        logs = [*self.logs(), *self.held_logs()]
        await asyncio.gather(*(partition_log.close() for partition_log in logs))
        if self._removals:
            await asyncio.gather(*self._removals, return_exceptions=True)
        self._topics.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    # --- topics ---------------------------------------------------------------------------

    def create_topic(
        self, name: str, partitions: int, config: Mapping[str, Any] | None = None
    ) -> TopicInfo:
        """Create a topic; nothing is left on disk if any argument is refused."""
        self._check_open()
        check_topic_name(name)
        _check_partitions(partitions)
        overrides = _overrides({}, config or {})
        if name in self._topics or (self._topics_dir / name).exists():
            raise TopicExists(f"topic {name!r} already exists")
        return self._create(TopicFile(name, partitions, overrides))

    def _create(self, stored: TopicFile) -> TopicInfo:
        name, partitions = stored.name, stored.partitions
        effective = self.defaults.with_updates(stored.overrides)
        staging = self._staging_dir / uuid.uuid4().hex
        staging.mkdir()
        try:
            write_topic_file(staging, stored)
            os.rename(staging, self._topics_dir / name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_dir(self._staging_dir)
        fsync_dir(self._topics_dir)
        info = TopicInfo(name, partitions, effective, stored.hosted, stored.held)
        topic = _Topic(info, stored.overrides, {})
        self._topics[name] = topic
        directory = self._topics_dir / name
        try:
            for p in range(partitions):
                if info.hosts(p):
                    topic.logs[p] = self._open_log(directory, name, p, effective)
            for p in sorted(stored.held):
                topic.held[p] = self._open_held(directory, name, p, effective)
        except OSError as exc:
            self.delete_topic(name)
            raise StorageError(f"cannot create the partitions of {name!r}: {exc}") from exc
        logger.info(
            "created topic %s with %d partition(s), %d hosted here",
            name,
            partitions,
            len(topic.logs),
        )
        return info

    def ensure_topic(
        self,
        name: str,
        partitions: int,
        config: Mapping[str, Any],
        hosted: Iterable[int],
        held: Iterable[int] = (),
    ) -> TopicInfo:
        """Make the topic exactly this, as a cluster's metadata says: created if missing, else
        grown (never shrunk), its overrides replaced by ``config``, and this broker hosting
        exactly ``hosted`` and holding exactly ``held`` (either possibly none). A partition
        newly hosted or held starts empty; one that goes from hosted to held or back keeps its
        log; one in neither is closed (pending appends fail) and its directory removed.
        Idempotent: the server replays the metadata through it at every start. Everything is
        checked first."""
        self._check_open()
        check_topic_name(name)
        _check_partitions(partitions)
        wanted, kept = frozenset(hosted), frozenset(held)
        if not all(isinstance(p, int) and 0 <= p < partitions for p in wanted | kept):
            raise InvalidPartitions(f"hosted and held partitions must be in 0..{partitions - 1}")
        if wanted & kept:
            raise InvalidPartitions(f"partitions {sorted(wanted & kept)} cannot be hosted and held")
        overrides = _overrides({}, config)
        topic = self._topics.get(name)
        if topic is None:
            if (self._topics_dir / name).exists():
                raise StorageError(f"{self._topics_dir / name} exists but is not a loaded topic")
            return self._create(TopicFile(name, partitions, overrides, wanted, kept))
        old = topic.info
        if partitions < old.partitions:
            raise InvalidPartitions(
                f"topic {name!r} has {old.partitions} partitions; partitions can only grow "
                f"(got {partitions})"
            )
        if (partitions, overrides, wanted, kept) == (
            old.partitions,
            topic.overrides,
            old.hosted,
            old.held,
        ):
            return old
        directory = self._topics_dir / name
        write_topic_file(directory, TopicFile(name, partitions, overrides, wanted, kept))
        effective = self.defaults.with_updates(overrides)
        info = TopicInfo(name, partitions, effective, wanted, kept)
        topic.info, topic.overrides = info, overrides
        for p in sorted(set(topic.logs) & kept):  # stops being served: keep it, read-only
            topic.held[p] = topic.logs.pop(p)
            topic.held[p].seal(_not_served(name, p))
        for p in sorted(set(topic.held) & wanted):  # a copy received: served as it is
            topic.logs[p] = topic.held.pop(p)
            topic.logs[p].unseal()
        for logs, keep in ((topic.logs, wanted), (topic.held, kept)):
            for p in sorted(set(logs) - keep):
                logs.pop(p).delete(remove_files=False)
                self._trash(directory / str(p))
        for partition_log in (*topic.logs.values(), *topic.held.values()):
            if partition_log.config != effective:
                partition_log.update_config(effective)
        try:
            for p in sorted(wanted - set(topic.logs)):
                topic.logs[p] = self._open_log(directory, name, p, effective)
            for p in sorted(kept - set(topic.held)):
                topic.held[p] = self._open_held(directory, name, p, effective)
        except OSError as exc:
            raise StorageError(f"cannot create the partitions of {name!r}: {exc}") from exc
        logger.info(
            "topic %s: %d partition(s), hosting %s, holding %s, overrides %s",
            *(name, partitions, sorted(wanted), sorted(kept), overrides),
        )
        return info

    def held_log(self, topic: str, partition: int) -> PartitionLog:
        """A held partition's log (see the module docstring); UnknownPartition for any other."""
        self.check_partition(topic, partition)
        partition_log = self._topic(topic).held.get(partition)
        if partition_log is None:
            raise UnknownPartition(
                f"partition {partition} of topic {topic!r} has no copy held by this broker"
            )
        return partition_log

    def reset_held(self, topic: str, partition: int, start_offset: int) -> PartitionLog:
        """Replace a held log by an empty one that starts at ``start_offset``: a copy that
        starts over. The old log is closed (pending appends fail) and its files removed."""
        self._check_open()
        if start_offset < 0:
            raise InvalidPartitions(f"a log cannot start at offset {start_offset}")
        old = self.held_log(topic, partition)
        entry = self._topic(topic)
        directory = self._topics_dir / topic
        old.delete(remove_files=False)
        self._trash(directory / str(partition))
        try:
            entry.held[partition] = self._open_held(
                directory, topic, partition, entry.info.config, start_offset
            )
        except OSError as exc:
            del entry.held[partition]
            raise StorageError(f"cannot recreate {topic}/{partition}: {exc}") from exc
        logger.info("held partition %d of %s starts over at %d", partition, topic, start_offset)
        return entry.held[partition]

    def delete_topic(self, name: str) -> None:
        """Delete a topic: gone from disk at once (one rename), files removed in the background.

        Appends still waiting for durability fail with UnknownTopic; long-polls return.
        """
        self._check_open()
        topic = self._topic(name)
        self._trash(self._topics_dir / name)
        del self._topics[name]
        for partition_log in (*topic.logs.values(), *topic.held.values()):
            partition_log.delete(remove_files=False)
        logger.info("deleted topic %s", name)

    def _trash(self, directory: Path) -> None:
        """Remove a topic's or partition's directory: gone at once (one rename, the commit
        point, made durable by fsyncing both directories), its files later."""
        if not directory.exists():
            return
        tombstone = self._trash_dir / uuid.uuid4().hex
        os.rename(directory, tombstone)
        fsync_dir(directory.parent)
        fsync_dir(self._trash_dir)
        self._remove_later(tombstone)

    def _remove_later(self, path: Path) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            shutil.rmtree(path, ignore_errors=True)
            return
        future = loop.run_in_executor(None, shutil.rmtree, path, True)
        self._removals.add(future)
        future.add_done_callback(self._removals.discard)

    def alter_topic(
        self,
        name: str,
        partitions: int | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> TopicInfo:
        """Grow the partition count and/or change config overrides (a value of None
        returns a setting to the broker default). Everything is checked before anything
        changes; an unchanged partition count is accepted."""
        self._check_open()
        topic = self._topic(name)
        old = topic.info
        count = old.partitions if partitions is None else partitions
        if not _valid_partitions(count) or count < old.partitions:
            raise InvalidPartitions(
                f"topic {name!r} has {old.partitions} partitions; partitions can only grow, "
                f"up to {MAX_PARTITIONS} (got {partitions!r})"
            )
        overrides = _overrides(topic.overrides, config or {})
        effective = self.defaults.with_updates(overrides)
        if count == old.partitions and overrides == topic.overrides:
            return old
        directory = self._topics_dir / name
        write_topic_file(directory, TopicFile(name, count, overrides, old.hosted, old.held))
        info = TopicInfo(name, count, effective, old.hosted, old.held)
        topic.info, topic.overrides = info, overrides
        if effective != old.config:
            for partition_log in (*topic.logs.values(), *topic.held.values()):
                partition_log.update_config(effective)
        try:
            for p in range(old.partitions, count):
                if info.hosts(p):
                    topic.logs[p] = self._open_log(directory, name, p, effective)
        except OSError as exc:
            raise StorageError(f"cannot create the new partitions of {name!r}: {exc}") from exc
        logger.info("altered topic %s: %d partition(s), overrides %s", name, count, overrides)
        return info

    def topic_names(self) -> list[str]:
        return sorted(self._topics)

    def topic(self, name: str) -> TopicInfo:
        return self._topic(name).info

    def check_partition(self, topic: str, partition: int) -> None:
        """Raise UnknownTopic or UnknownPartition unless the topic has that partition, hosted
        here or not."""
        count = self._topic(topic).info.partitions
        if isinstance(partition, bool) or not isinstance(partition, int):
            raise UnknownPartition(f"partition {partition!r} of topic {topic!r} does not exist")
        if not 0 <= partition < count:
            raise UnknownPartition(
                f"topic {topic!r} has partitions 0 to {count - 1}, not {partition}"
            )

    def log(self, topic: str, partition: int) -> PartitionLog:
        """A hosted partition's log; UnknownPartition for any other."""
        self.check_partition(topic, partition)
        partition_log = self._topic(topic).logs.get(partition)
        if partition_log is None:
            raise UnknownPartition(
                f"partition {partition} of topic {topic!r} is not hosted by this broker"
            )
        return partition_log

    def topic_logs(self, topic: str) -> list[PartitionLog]:
        """The logs of a topic's hosted partitions, by partition."""
        logs = self._topic(topic).logs
        return [logs[p] for p in sorted(logs)]

    def logs(self) -> list[PartitionLog]:
        """Every hosted partition's log."""
        return [log for topic in self._topics.values() for log in topic.logs.values()]

    def held_logs(self) -> list[PartitionLog]:
        """Every held partition's log."""
        return [log for topic in self._topics.values() for log in topic.held.values()]

    # --- housekeeping -----------------------------------------------------------------------

    def enforce_retention(self, now_ms: int) -> int:
        """Apply retention to every partition; returns the number of segments deleted."""
        return sum(partition_log.enforce_retention(now_ms) for partition_log in self.logs())

    def maybe_roll(self, now_ms: int) -> int:
        """Roll active segments older than segment.ms; returns how many rolled."""
        return sum(partition_log.maybe_roll(now_ms) for partition_log in self.logs())

    def _topic(self, name: str) -> _Topic:
        topic = self._topics.get(name) if isinstance(name, str) else None
        if topic is None:
            raise UnknownTopic(f"topic {name!r} does not exist")
        return topic

    def _check_open(self) -> None:
        if not self._open:
            raise BrokerUnavailable("the log manager is not open")


def _not_served(topic: str, partition: int) -> NotLeader:
    return NotLeader(f"partition {partition} of topic {topic!r} is not served by this broker")


def check_topic_name(name: object) -> None:
    if not isinstance(name, str) or not _TOPIC_NAME.fullmatch(name) or name in (".", ".."):
        raise InvalidTopicName(
            f"invalid topic name {name!r}: use 1 to 249 characters of a-z, A-Z, 0-9, '.', '_' "
            "and '-', other than '.' and '..'"
        )


def _valid_partitions(count: object) -> bool:
    return isinstance(count, int) and not isinstance(count, bool) and 1 <= count <= MAX_PARTITIONS


def _check_partitions(count: object) -> None:
    if not _valid_partitions(count):
        raise InvalidPartitions(
            f"partitions must be an integer from 1 to {MAX_PARTITIONS}, got {count!r}"
        )


def _partition_dirs(directory: Path) -> set[int]:
    return {int(d.name) for d in directory.iterdir() if d.is_dir() and d.name.isdigit()}


def _overrides(current: Mapping[str, int], updates: Mapping[str, Any]) -> dict[str, int]:
    """``current`` with ``updates`` applied (None removes an override); raises InvalidConfig."""
    if not isinstance(updates, Mapping):
        raise InvalidConfig("config must be an object of setting names to values")
    known = DEFAULT_CONFIG.to_mapping()
    result = dict(current)
    for key, value in updates.items():
        if value is None:
            if key not in known:
                raise InvalidConfig(f"unknown config {key!r}; known: {', '.join(sorted(known))}")
            result.pop(key, None)
    checked = DEFAULT_CONFIG.with_updates({k: v for k, v in updates.items() if v is not None})
    parsed = checked.to_mapping()
    result.update({k: parsed[k] for k, v in updates.items() if v is not None})
    return result
