"""The values the client hands to its callers and takes from them.

Used by every client module and returned by the public API. Records and coordinates are
``NamedTuple``s on purpose: the consumer builds a million of them a second, and a tuple is the
cheapest object CPython can make; they also unpack and compare like the tuples users pass in
(``consumer.assign([("orders", 0)])``). Topic descriptions are parsed from the broker's JSON
here, so the shape of that JSON is known in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from millstream.errors import MillstreamError

DEFAULT_URL = "http://127.0.0.1:9092"

HeaderValue = bytes | str | None
HeadersIn = Sequence[tuple[str, HeaderValue]]


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class RecordMetadata(NamedTuple):
    """Where an acknowledged record landed. ``offset`` is -1 when sent with ``acks="0"``."""

    topic: str
    partition: int
    offset: int


class ProducerRecord(NamedTuple):
    """One record for :meth:`Producer.send_many`; strings are sent as UTF-8."""

    value: bytes | str | None
    key: bytes | str | None = None
    headers: HeadersIn = ()
    partition: int | None = None
    timestamp: int | None = None


class ConsumerRecord(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]


@dataclass(frozen=True, slots=True)
class TopicSummary:
    name: str
    partitions: int


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    partition: int
    earliest_offset: int
    # The log end offset: the offset the next record will get (Kafka's high watermark).
    latest_offset: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class TopicDescription:
    name: str
    partitions: tuple[PartitionInfo, ...]
    config: Mapping[str, int | str]

    @property
    def partition_count(self) -> int:
        return len(self.partitions)

    @classmethod
    def from_json(cls, body: Any) -> TopicDescription:
        try:
            partitions = tuple(
                PartitionInfo(
                    int(p["partition"]),
                    int(p["earliest_offset"]),
                    int(p["latest_offset"]),
                    int(p["size_bytes"]),
                )
                for p in body["partitions"]
            )
            return cls(str(body["name"]), partitions, dict(body.get("config") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise MillstreamError(f"unexpected topic description from the broker: {exc}") from None
