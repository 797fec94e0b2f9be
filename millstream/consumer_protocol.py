"""The bytes a consumer group's members exchange through the broker: Kafka's consumer protocol.

Members of a group with protocol type ``consumer`` send a ``ConsumerProtocolSubscription`` as
their JoinGroup metadata, and the leader hands each member a ``ConsumerProtocolAssignment`` in
its SyncGroup. The broker treats both as opaque except when it describes a group
(``GET /v1/groups/{group}`` decodes each member's assignment), so :func:`decode_assignment` must
turn garbage into :class:`~millstream.errors.InvalidRequest`, never a crash. The client encodes
its subscription, the leader decodes everyone's and encodes the assignments, and each member
decodes its own. This module is shared by both sides, so it imports only the standard library
and kafka-python, whose schema-driven classes (generated from Kafka's own message definitions)
do the byte work; this module adds the version choice, validation and plain Python values.

Byte layout (big-endian, no tagged fields in any version; ``string`` is an int16 length and
UTF-8, ``bytes`` an int32 length (-1 for null), ``[]X`` an int32 count then the elements)::

    ConsumerProtocolSubscription            we write v2, read v0-v3 (newer as v3)
      version           int16
      topics            []string
      user_data         bytes (nullable; null is read as b"")
      owned_partitions  []{topic string, partitions []int32}     v1+
      generation_id     int32 (-1 when unknown)                  v2+
      rack_id           string (nullable; read and dropped)      v3+

    ConsumerProtocolAssignment              we write v2; v0-v3 share one layout
      version           int16
      assigned          []{topic string, partitions []int32}
      user_data         bytes (nullable)

Kafka's rule for versions beyond the ones known here is to read them with the newest known
layout and ignore what follows (later versions may only append fields), so trailing bytes are
accepted after a newer version and refused after a known one, where they can only be garbage.
"""

from __future__ import annotations

import io
import struct
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kafka.protocol.consumer.metadata import (
    ConsumerProtocolAssignment,
    ConsumerProtocolSubscription,
)

from millstream.errors import InvalidRequest

__all__ = [
    "ASSIGNMENT_VERSION",
    "PROTOCOL_TYPE",
    "SUBSCRIPTION_VERSION",
    "Subscription",
    "decode_assignment",
    "decode_subscription",
    "encode_assignment",
    "encode_subscription",
]

PROTOCOL_TYPE = "consumer"
# v2 is the newest version whose fields we use (owned partitions for cooperative rebalancing,
# the generation that says whose claim on a partition is current); v3 only adds a rack id.
SUBSCRIPTION_VERSION = 2
ASSIGNMENT_VERSION = 2

# What kafka-python raises on truncated, oversized or mis-encoded input.
_DECODE_ERRORS = (struct.error, ValueError, EOFError, IndexError, TypeError)


@dataclass(frozen=True, slots=True)
class Subscription:
    """One member's JoinGroup metadata: what it wants to read and what it holds now.

    ``owned`` and ``generation`` matter to cooperative assignors: the partitions the member
    still owns, and the generation in which it got them. :func:`decode_subscription` returns
    ``owned`` sorted.
    """

    topics: tuple[str, ...]
    owned: tuple[tuple[str, int], ...] = ()
    generation: int = -1
    user_data: bytes = b""


def encode_subscription(subscription: Subscription) -> bytes:
    owned = [
        ConsumerProtocolSubscription.TopicPartition(topic=topic, partitions=partitions)
        for topic, partitions in _group_by_topic(subscription.owned)
    ]
    message = ConsumerProtocolSubscription(
        version=SUBSCRIPTION_VERSION,
        topics=list(subscription.topics),
        user_data=subscription.user_data,
        owned_partitions=owned,
        generation_id=subscription.generation,
    )
    return bytes(message.encode())


def decode_subscription(data: bytes) -> Subscription:
    message = _decode(ConsumerProtocolSubscription, data, "subscription")
    topics = message.topics
    if topics is None or not all(isinstance(topic, str) for topic in topics):
        raise InvalidRequest("consumer protocol subscription: topics must be a list of names")
    # Absent before v1 and v2; kafka-python then leaves the schema defaults.
    owned_entries = getattr(message, "owned_partitions", None) or []
    generation = getattr(message, "generation_id", None)
    return Subscription(
        topics=tuple(topics),
        owned=tuple(sorted(_partitions_of(owned_entries, "subscription"))),
        generation=-1 if generation is None else int(generation),
        user_data=bytes(message.user_data or b""),
    )


def encode_assignment(partitions: Iterable[tuple[str, int]], user_data: bytes = b"") -> bytes:
    assigned = [
        ConsumerProtocolAssignment.TopicPartition(topic=topic, partitions=numbers)
        for topic, numbers in _group_by_topic(partitions)
    ]
    message = ConsumerProtocolAssignment(
        version=ASSIGNMENT_VERSION, assigned_partitions=assigned, user_data=user_data
    )
    return bytes(message.encode())


def decode_assignment(data: bytes) -> list[tuple[str, int]]:
    """The partitions of an assignment, sorted and without repeats."""
    message = _decode(ConsumerProtocolAssignment, data, "assignment")
    if message.assigned_partitions is None:
        raise InvalidRequest("consumer protocol assignment: the partition list is null")
    return sorted(set(_partitions_of(message.assigned_partitions, "assignment")))


def _group_by_topic(partitions: Iterable[tuple[str, int]]) -> list[tuple[str, list[int]]]:
    by_topic: defaultdict[str, set[int]] = defaultdict(set)
    for topic, partition in partitions:
        by_topic[topic].add(partition)
    return [(topic, sorted(by_topic[topic])) for topic in sorted(by_topic)]


def _decode(message_class: Any, data: bytes, what: str) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidRequest(f"consumer protocol {what}: expected bytes")
    data = bytes(data)
    if len(data) < 2:
        raise InvalidRequest(f"consumer protocol {what}: {len(data)} bytes, too short")
    stream = io.BytesIO(data)
    try:
        message = message_class.decode(stream)
    except _DECODE_ERRORS as error:
        raise InvalidRequest(f"consumer protocol {what}: malformed ({error})") from None
    (version,) = struct.unpack_from(">h", data)
    unread = len(data) - stream.tell()
    if unread and version <= message_class.max_version:
        raise InvalidRequest(
            f"consumer protocol {what}: {unread} trailing byte(s) after a v{version} message"
        )
    return message


def _partitions_of(entries: Iterable[Any], what: str) -> Iterable[tuple[str, int]]:
    for entry in entries:
        if not isinstance(entry.topic, str) or entry.partitions is None:
            raise InvalidRequest(f"consumer protocol {what}: a topic entry has a null field")
        for partition in entry.partitions:
            if partition < 0:
                raise InvalidRequest(
                    f"consumer protocol {what}: negative partition {partition} of {entry.topic!r}"
                )
            yield entry.topic, int(partition)
