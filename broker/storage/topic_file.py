"""``topic.json``: what a topic is, as the log manager keeps it next to its partitions.

Read and written by :class:`~millstream.broker.storage.log_manager.LogManager` only. Format
(JSON, replaced atomically: tmp, fsync, rename, fsync directory)::

    {"version": 1, "name": "orders", "partitions": 3, "config": {"retention.ms": 60000}}
    {"version": 2, "name": "orders", "partitions": 3, "config": {}, "hosted": [0, 2]}
    {"version": 3, "name": "orders", "partitions": 3, "config": {}, "hosted": [0],
     "held": [1]}

- ``config`` holds only overrides of the broker's defaults, so a change of defaults reaches
  every topic that did not set its own value.
- ``hosted`` (version 2) lists the partitions this broker serves, when it serves a subset, as
  a broker of a multi-broker cluster does; the other partitions live on other brokers and have
  no directory here. Version 1 (no ``hosted``) means every partition, as a standalone broker
  has it; a topic that hosts a subset is written as version 2 so that a broker too old to know
  ``hosted`` refuses the file instead of opening partitions that are not its own.
- ``held`` (version 3) lists partitions that have a log here but are not served: a copy being
  received from another broker, or the read-only copy of a partition that moved away and
  that its new broker has not finished copying. Disjoint from ``hosted``. Written as version
  3 only when not empty, so that an older broker refuses the file rather than delete them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from millstream.broker.storage.files import atomic_write

TOPIC_FILE: Final = "topic.json"
_VERSIONS: Final = (1, 2, 3)


@dataclass(frozen=True, slots=True)
class TopicFile:
    name: str
    partitions: int
    overrides: dict[str, int]
    # The partitions served here; None: all of them.
    hosted: frozenset[int] | None = None
    # The partitions with a log here that is not served (copies on their way in or out).
    held: frozenset[int] = frozenset()


def write_topic_file(directory: Path, topic: TopicFile) -> None:
    body: dict[str, Any] = {
        "version": 1,
        "name": topic.name,
        "partitions": topic.partitions,
        "config": topic.overrides,
    }
    if topic.hosted is not None:
        body["version"] = 2
        body["hosted"] = sorted(topic.hosted)
    if topic.held:
        body["version"] = 3
        body["held"] = sorted(topic.held)
    data = json.dumps(body, indent=2, sort_keys=True).encode() + b"\n"
    atomic_write(directory / TOPIC_FILE, data)


def read_topic_file(directory: Path) -> TopicFile:
    """The topic file in ``directory``; raises OSError, ValueError, KeyError or TypeError for
    one that cannot be read or does not hold together."""
    stored = json.loads((directory / TOPIC_FILE).read_bytes())
    if stored.get("version", 1) not in _VERSIONS:
        raise ValueError(f"unknown version {stored.get('version')!r}")
    name, partitions = stored["name"], stored["partitions"]
    if not isinstance(name, str) or isinstance(partitions, bool) or not isinstance(partitions, int):
        raise TypeError("name must be a string and partitions an integer")
    overrides = {str(k): int(v) for k, v in stored["config"].items()}
    hosted = None
    if stored.get("hosted") is not None:
        hosted = frozenset(stored["hosted"])
        if not all(type(p) is int and 0 <= p < partitions for p in hosted):
            raise ValueError(f"hosted partitions {sorted(hosted)} are not all in 0..{partitions}")
    held = frozenset(stored.get("held") or ())
    served = frozenset(range(partitions)) if hosted is None else hosted
    if not all(type(p) is int and 0 <= p < partitions for p in held) or held & served:
        raise ValueError(f"held partitions {sorted(held)} are not in 0..{partitions}, or hosted")
    return TopicFile(name, partitions, overrides, hosted, held)
