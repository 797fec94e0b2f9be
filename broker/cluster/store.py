"""``<data>/cluster.json``: the cluster metadata a broker was pushed, kept across restarts.

Read at start and rewritten after every accepted push by
:class:`~millstream.broker.cluster.node.ClusterNode`. Replaced atomically (tmp, fsync, rename,
fsync directory), so after a crash the file holds the last push or the one before, whole.
Its absence means a standalone broker. Format::

    {"version": 1,
     "broker_id": 1,                     # the broker it was pushed to: a data directory
                                         # mounted on another broker is refused at start
     "epoch": 7,
     "brokers": [{"id": 0, "url": "http://..."}, ...],
     "topics": {"orders": {"partitions": 3, "config": {"retention.ms": 60000},
                           "placement": [0, 1, 2],      # broker id by partition
                           "topic_id": "…", "epoch": 4}}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from millstream.broker.cluster.metadata import BrokerInfo, ClusterMetadata, TopicPlacement
from millstream.broker.storage.files import atomic_write

CLUSTER_FILE: Final = "cluster.json"
_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class Stored:
    broker_id: int
    metadata: ClusterMetadata


class MetadataStore:
    """The cluster file of one data directory. Not thread-safe (the event loop's thread)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / CLUSTER_FILE

    def load(self) -> Stored | None:
        """What was stored; None if nothing was. Raises OSError or ValueError for a file that
        cannot be read: a broker must not guess which partitions are its own."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return _decode(json.loads(raw))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{self.path} is damaged: {exc!r}") from None

    def save(self, broker_id: int, metadata: ClusterMetadata) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps(_encode(broker_id, metadata), indent=2, sort_keys=True)
        atomic_write(self.path, body.encode() + b"\n")


def _encode(broker_id: int, metadata: ClusterMetadata) -> dict[str, Any]:
    return {
        "version": _VERSION,
        "broker_id": broker_id,
        "epoch": metadata.epoch,
        "brokers": [{"id": b.id, "url": b.url} for b in metadata.brokers],
        "topics": {
            name: {
                "partitions": t.partitions,
                "config": dict(t.config),
                "placement": list(t.placement),
                "topic_id": t.topic_id,
                "epoch": t.epoch,
            }
            for name, t in sorted(metadata.topics.items())
        },
    }


def _decode(body: Any) -> Stored:
    if body["version"] != _VERSION:
        raise ValueError(f"unknown cluster file version {body['version']!r}")
    brokers = tuple(BrokerInfo(int(b["id"]), str(b["url"])) for b in body["brokers"])
    topics = {
        str(name): TopicPlacement(
            str(name),
            int(t["partitions"]),
            dict(t["config"]),
            tuple(int(b) for b in t["placement"]),
            None if t.get("topic_id") is None else str(t["topic_id"]),
            None if t.get("epoch") is None else int(t["epoch"]),
        )
        for name, t in body["topics"].items()
    }
    metadata = ClusterMetadata(int(body["epoch"]), brokers, topics)
    return Stored(int(body["broker_id"]), metadata)
