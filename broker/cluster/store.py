"""``<data>/cluster.json``: the cluster metadata a broker was pushed, kept across restarts.

Read at start and rewritten after every accepted push by
:class:`~millstream.broker.cluster.node.ClusterNode`. Replaced atomically (tmp, fsync, rename,
fsync directory), so after a crash the file holds the last push or the one before, whole.
Its absence means a standalone broker. Format (written as version 1, without ``moves`` and
``retired``, when there are none, so that an older broker refuses the file only when it would
lose something by reading it)::

    {"version": 2,
     "broker_id": 1,                     # the broker it was pushed to: a data directory
                                         # mounted on another broker is refused at start
     "epoch": 7,
     "brokers": [{"id": 0, "url": "http://..."}, ...],
     "topics": {"orders": {"partitions": 3, "config": {"retention.ms": 60000},
                           "placement": [0, 1, 2],      # broker id by partition
                           "topic_id": "…", "epoch": 4}},
     "moves": [{"topic": "orders", "partition": 1, "source": 0,   # moves onto this broker
                "state": "copying", "throttle_bytes_per_s": null, "created_ms": …,
                "epoch": null, "final_offset": null, "error": null,
                "completed_ms": null, "source_released": false}],
     "retired": [["orders", 2]]}           # copies of partitions that moved away

Moves and retired copies (:mod:`~millstream.broker.cluster.moves`) are kept in the same file as
the placement they depend on, so that one rename commits both: a partition leaving this
broker is retired in the same write that places it elsewhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from millstream.broker.cluster.metadata import BrokerInfo, ClusterMetadata, TopicPlacement
from millstream.broker.cluster.moves import Move, MoveState, Transfers
from millstream.broker.storage.files import atomic_write, fsync_dir

CLUSTER_FILE: Final = "cluster.json"
_VERSION: Final = 2
_READABLE: Final = (1, 2)


@dataclass(frozen=True, slots=True)
class Stored:
    broker_id: int
    metadata: ClusterMetadata
    transfers: Transfers = field(default_factory=Transfers)


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

    def save(
        self, broker_id: int, metadata: ClusterMetadata, transfers: Transfers | None = None
    ) -> None:
        transfers = transfers or Transfers()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps(_encode(broker_id, metadata, transfers), indent=2, sort_keys=True)
        atomic_write(self.path, body.encode() + b"\n")

    def clear(self) -> None:
        """Forget everything stored (the broker left its cluster)."""
        self.path.unlink(missing_ok=True)
        fsync_dir(self.path.parent)


def _encode(broker_id: int, metadata: ClusterMetadata, transfers: Transfers) -> dict[str, Any]:
    body: dict[str, Any] = {
        "version": 1,
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
    if transfers.moves or transfers.retired:
        body["version"] = _VERSION
        body["moves"] = [_encode_move(m) for _, m in sorted(transfers.moves.items())]
        body["retired"] = [list(key) for key in sorted(transfers.retired)]
    return body


def _encode_move(move: Move) -> dict[str, Any]:
    return {
        "topic": move.topic,
        "partition": move.partition,
        "source": move.source,
        "state": move.state.value,
        "throttle_bytes_per_s": move.throttle_bytes_per_s,
        "created_ms": move.created_ms,
        "epoch": move.epoch,
        "final_offset": move.final_offset,
        "error": move.error,
        "completed_ms": move.completed_ms,
        "source_released": move.source_released,
    }


def _decode_move(m: Any) -> Move:
    return Move(
        str(m["topic"]),
        int(m["partition"]),
        int(m["source"]),
        MoveState(m["state"]),
        _int_or_none(m.get("throttle_bytes_per_s")),
        int(m.get("created_ms") or 0),
        _int_or_none(m.get("epoch")),
        _int_or_none(m.get("final_offset")),
        None if m.get("error") is None else str(m["error"]),
        _int_or_none(m.get("completed_ms")),
        bool(m.get("source_released", False)),
    )


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _decode(body: Any) -> Stored:
    if body["version"] not in _READABLE:
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
    moves = {move.key: move for move in map(_decode_move, body.get("moves", []))}
    retired = frozenset((str(t), int(p)) for t, p in body.get("retired", []))
    return Stored(int(body["broker_id"]), metadata, Transfers(moves, retired))
