"""The values the client hands to its callers and takes from them.

Used by every client module and returned by the public API. Records and coordinates are
``NamedTuple``s on purpose: the consumer builds a million of them a second, and a tuple is the
cheapest object CPython can make; they also unpack and compare like the tuples users pass in
(``consumer.assign([("orders", 0)])``). Topic and group descriptions are parsed from the
broker's JSON here, so the shape of that JSON is known in one place; the rest are frozen
dataclasses.
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
    # In a cluster: the id of the broker serving the partition.
    broker: int | None = None


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
                    _opt_int(p.get("broker")),
                )
                for p in body["partitions"]
            )
            return cls(str(body["name"]), partitions, dict(body.get("config") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise MillstreamError(f"unexpected topic description from the broker: {exc}") from None


@dataclass(frozen=True, slots=True)
class TopicMetadata:
    """What any broker knows of a topic: its partition count and settings (no offsets)."""

    name: str
    partition_count: int
    config: Mapping[str, int | str]

    @classmethod
    def from_json(cls, body: Any) -> TopicMetadata:
        """From a topic description (``GET /v1/topics/{topic}``) of any broker."""
        try:
            count = len(body["partitions"])
            return cls(str(body["name"]), count, dict(body.get("config") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise MillstreamError(f"unexpected topic description from the broker: {exc}") from None


# --- consumer groups ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OffsetAndMetadata:
    """A committed offset: the next offset the group reads from the partition, and a note."""

    offset: int
    metadata: str = ""


@dataclass(frozen=True, slots=True)
class GroupMetadata:
    """Where a consumer stands in its group (Kafka's ``ConsumerGroupMetadata``).

    ``generation`` is that of the assignment the consumer is reading (-1 before its first);
    ``member_id`` is empty before the first join.
    """

    group_id: str
    generation: int
    member_id: str


@dataclass(frozen=True, slots=True)
class GroupSummary:
    group: str
    state: str
    protocol_type: str | None
    members: int


@dataclass(frozen=True, slots=True)
class MemberDescription:
    member_id: str
    client_id: str
    client_host: str
    session_timeout_ms: int
    # Decoded by the broker for the ``consumer`` protocol type; None for other types.
    assignment: tuple[TopicPartition, ...] | None


@dataclass(frozen=True, slots=True)
class GroupPartitionOffset:
    """A partition's committed offset and lag in a group; None where nothing is committed."""

    topic: str
    partition: int
    committed: int | None
    log_end_offset: int | None
    lag: int | None
    member_id: str | None


@dataclass(frozen=True, slots=True)
class GroupDescription:
    group: str
    state: str
    protocol_type: str | None
    protocol: str | None
    generation: int
    leader: str | None
    members: tuple[MemberDescription, ...]
    offsets: tuple[GroupPartitionOffset, ...]
    lag: int | None

    @classmethod
    def from_json(cls, body: Any) -> GroupDescription:
        try:
            return cls(
                str(body["group"]),
                str(body["state"]),
                _opt_str(body.get("protocol_type")),
                _opt_str(body.get("protocol")),
                int(body.get("generation", -1)),
                _opt_str(body.get("leader")),
                tuple(_member(m) for m in body.get("members") or ()),
                tuple(_group_offset(o) for o in body.get("offsets") or ()),
                _opt_int(body.get("lag")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MillstreamError(f"unexpected group description from the broker: {exc}") from None


def group_summary_from_json(body: Any) -> GroupSummary:
    members = body.get("members")
    # The listing counts members; a list of them is counted here rather than refused.
    count = len(members) if isinstance(members, list) else int(members or 0)
    return GroupSummary(
        str(body["group"]), str(body["state"]), _opt_str(body.get("protocol_type")), count
    )


def _member(body: Any) -> MemberDescription:
    assignment = body.get("assignment")
    return MemberDescription(
        str(body["member_id"]),
        str(body.get("client_id") or ""),
        str(body.get("client_host") or ""),
        int(body.get("session_timeout_ms") or 0),
        None
        if assignment is None
        else tuple(
            TopicPartition(str(a["topic"]), int(p)) for a in assignment for p in a["partitions"]
        ),
    )


def _group_offset(body: Any) -> GroupPartitionOffset:
    return GroupPartitionOffset(
        str(body["topic"]),
        int(body["partition"]),
        _opt_int(body.get("committed")),
        _opt_int(body.get("log_end_offset")),
        _opt_int(body.get("lag")),
        _opt_str(body.get("member_id")),
    )


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)
