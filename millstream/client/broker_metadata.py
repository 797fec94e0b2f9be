"""One broker's cluster metadata, as ``GET /v1/cluster`` gives it: values, no I/O.

Read by :mod:`~millstream.client.cluster_admin` (which fetches it) and by the operator's pure
planning (``millstream.operator.plan``), which compares it with what the Topic resources say.
The wire format is docs/cluster.md's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from millstream import errors


@dataclass(frozen=True, slots=True)
class PlacedTopic:
    """A topic as a broker's cluster metadata has it."""

    name: str
    partitions: int
    placement: Mapping[int, int]  # partition -> id of the broker that serves it
    topic_id: str | None = None
    # The topic's epoch on the broker (a push's or a move's); None when it has none, or from a
    # broker too old to say.
    epoch: int | None = None


@dataclass(frozen=True, slots=True)
class BrokerMetadata:
    """What one broker answers to ``GET /v1/cluster``. ``epoch`` is None for a standalone
    broker (no metadata pushed yet)."""

    broker_id: int | None
    epoch: int | None = None
    brokers: Mapping[int, str] = field(default_factory=dict)  # id -> URL
    topics: Mapping[str, PlacedTopic] = field(default_factory=dict)

    @property
    def managed(self) -> bool:
        """Whether the broker holds cluster metadata (else it is standalone)."""
        return self.epoch is not None

    @classmethod
    def from_json(cls, body: Any) -> BrokerMetadata:
        try:
            raw_id = body.get("broker_id")
            broker_id = None if raw_id is None else int(raw_id)
            if body.get("mode") != "cluster":
                return cls(broker_id)
            brokers = {int(b["id"]): str(b["url"]) for b in body["brokers"]}
            topics = {}
            for t in body["topics"]:
                partitions = int(t["partitions"])
                placement = {p: int(t["placement"][str(p)]) for p in range(partitions)}
                topic_id = t.get("topic_id")
                epoch = t.get("epoch")
                name = str(t["name"])
                topics[name] = PlacedTopic(
                    name,
                    partitions,
                    placement,
                    None if topic_id is None else str(topic_id),
                    None if epoch is None else int(epoch),
                )
            return cls(broker_id, int(body["epoch"]), brokers, topics)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise errors.MillstreamError(f"unexpected cluster metadata: {exc!r}") from None
