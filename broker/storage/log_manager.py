"""The data directory: topics, their partition logs, recovery at open, retention.

Created once per broker process by the server and used by the HTTP layer. Layout (see the
package docstring) plus two working directories on the same filesystem, so that moving a
topic in or out of ``topics/`` is one atomic rename::

    <data>/topics/<topic>/topic.json     {"version": 1, "name": ..., "partitions": N,
                                          "config": {<overrides of the broker defaults>}}
    <data>/topics/<topic>/<partition>/   one PartitionLog each
    <data>/staging/<random>/             a topic being created (topic.json written, fsynced)
    <data>/trash/<random>/               a topic being deleted

Creating a topic builds it in ``staging/`` and renames it into ``topics/``; deleting renames it
into ``trash/`` and removes it in a worker thread. Either rename is the commit point, made
durable by fsyncing both directories, so after a crash a topic is entirely there or entirely
gone; ``open()`` empties ``staging/`` and ``trash/``. ``topic.json`` is replaced atomically
(tmp, fsync, rename, fsync directory). Only config overrides are stored, so a change of broker
defaults reaches every topic that did not set its own value.

Not thread-safe: used on the event loop's thread (``open`` may run before the loop does).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from millstream.broker.storage.config import TopicConfig
from millstream.broker.storage.files import atomic_write, fsync_dir
from millstream.broker.storage.partition_log import PartitionLog
from millstream.errors import (
    BrokerUnavailable,
    InvalidConfig,
    InvalidPartitions,
    InvalidTopicName,
    StorageError,
    TopicExists,
    UnknownPartition,
    UnknownTopic,
)

logger = logging.getLogger(__name__)

TOPIC_FILE: Final = "topic.json"
MAX_PARTITIONS: Final = 10_000
_TOPIC_NAME: Final = re.compile(r"[a-zA-Z0-9._-]{1,249}")
DEFAULT_CONFIG: Final = TopicConfig()
# fsyncs of many partitions run side by side; more threads than this rarely helps a disk.
FSYNC_THREADS: Final = 16


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: int
    config: TopicConfig


@dataclass(slots=True)
class _Topic:
    info: TopicInfo
    overrides: dict[str, int]
    logs: list[PartitionLog]


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
            for partition_log in self.logs():
                partition_log.delete(remove_files=False)
            self._topics.clear()
            self._open = False
            self._executor.shutdown()
            self._executor = None
            raise

    def _load_topic(self, directory: Path) -> None:
        try:
            stored = json.loads((directory / TOPIC_FILE).read_bytes())
            name, partitions = stored["name"], stored["partitions"]
            overrides = {str(k): int(v) for k, v in stored["config"].items()}
            config = self.defaults.with_updates(overrides)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, InvalidConfig) as exc:
            logger.error("ignoring %s: cannot read its %s: %s", directory, TOPIC_FILE, exc)
            return
        if name != directory.name or not _valid_partitions(partitions):
            logger.error("ignoring %s: its %s does not match", directory, TOPIC_FILE)
            return
        info = TopicInfo(name, partitions, config)
        topic = _Topic(info, overrides, [])
        self._topics[name] = topic
        topic.logs = [self._open_log(directory, name, p, config) for p in range(partitions)]

    def _open_log(
        self, directory: Path, name: str, partition: int, config: TopicConfig
    ) -> PartitionLog:
        return PartitionLog(
            name,
            partition,
            directory / str(partition),
            config,
            executor=self._executor,
            on_sync=self._on_sync,
        )

    async def close(self) -> None:
        """Close every log (final fsyncs run side by side), then wait for file removals."""
        if not self._open:
            return
        self._open = False
        logs = [partition_log for topic in self._topics.values() for partition_log in topic.logs]
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
        _check_name(name)
        if not _valid_partitions(partitions):
            raise InvalidPartitions(
                f"partitions must be an integer from 1 to {MAX_PARTITIONS}, got {partitions!r}"
            )
        overrides = _overrides({}, config or {})
        effective = self.defaults.with_updates(overrides)
        if name in self._topics or (self._topics_dir / name).exists():
            raise TopicExists(f"topic {name!r} already exists")
        staging = self._staging_dir / uuid.uuid4().hex
        staging.mkdir()
        try:
            _write_topic_file(staging, name, partitions, overrides)
            os.rename(staging, self._topics_dir / name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_dir(self._staging_dir)
        fsync_dir(self._topics_dir)
        info = TopicInfo(name, partitions, effective)
        topic = _Topic(info, overrides, [])
        self._topics[name] = topic
        directory = self._topics_dir / name
        try:
            for p in range(partitions):
                topic.logs.append(self._open_log(directory, name, p, effective))
        except OSError as exc:
            self.delete_topic(name)
            raise StorageError(f"cannot create the partitions of {name!r}: {exc}") from exc
        logger.info("created topic %s with %d partition(s)", name, partitions)
        return info

    def delete_topic(self, name: str) -> None:
        """Delete a topic: gone from disk at once (one rename), files removed in the background.

        Appends still waiting for durability fail with UnknownTopic; long-polls return.
        """
        self._check_open()
        topic = self._topic(name)
        tombstone = self._trash_dir / uuid.uuid4().hex
        os.rename(self._topics_dir / name, tombstone)
        fsync_dir(self._topics_dir)
        fsync_dir(self._trash_dir)
        del self._topics[name]
        for partition_log in topic.logs:
            partition_log.delete(remove_files=False)
        self._remove_later(tombstone)
        logger.info("deleted topic %s", name)

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
        _write_topic_file(directory, name, count, overrides)
        info = TopicInfo(name, count, effective)
        topic.info, topic.overrides = info, overrides
        if effective != old.config:
            for partition_log in topic.logs:
                partition_log.update_config(effective)
        try:
            for p in range(old.partitions, count):
                topic.logs.append(self._open_log(directory, name, p, effective))
        except OSError as exc:
            raise StorageError(f"cannot create the new partitions of {name!r}: {exc}") from exc
        logger.info("altered topic %s: %d partition(s), overrides %s", name, count, overrides)
        return info

    def topic_names(self) -> list[str]:
        return sorted(self._topics)

    def topic(self, name: str) -> TopicInfo:
        return self._topic(name).info

    def log(self, topic: str, partition: int) -> PartitionLog:
        logs = self._topic(topic).logs
        if isinstance(partition, bool) or not isinstance(partition, int):
            raise UnknownPartition(f"partition {partition!r} of topic {topic!r} does not exist")
        if not 0 <= partition < len(logs):
            raise UnknownPartition(
                f"topic {topic!r} has partitions 0 to {len(logs) - 1}, not {partition}"
            )
        return logs[partition]

    def logs(self) -> list[PartitionLog]:
        """Every open partition log."""
        return [partition_log for topic in self._topics.values() for partition_log in topic.logs]

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


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not _TOPIC_NAME.fullmatch(name) or name in (".", ".."):
        raise InvalidTopicName(
            f"invalid topic name {name!r}: use 1 to 249 characters of a-z, A-Z, 0-9, '.', '_' "
            "and '-', other than '.' and '..'"
        )


def _valid_partitions(count: object) -> bool:
    return isinstance(count, int) and not isinstance(count, bool) and 1 <= count <= MAX_PARTITIONS


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


def _write_topic_file(
    directory: Path, name: str, partitions: int, overrides: dict[str, int]
) -> None:
    body = {"version": 1, "name": name, "partitions": partitions, "config": overrides}
    atomic_write(
        directory / TOPIC_FILE, json.dumps(body, indent=2, sort_keys=True).encode() + b"\n"
    )
