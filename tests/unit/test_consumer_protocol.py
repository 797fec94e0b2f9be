"""Kafka's consumer protocol bytes: vectors derived by hand from Kafka's schema, round trips,
older and newer versions, and garbage, which must be an InvalidRequest and nothing else."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.structs import TopicPartition as KafkaTopicPartition

from millstream.consumer_protocol import (
    PROTOCOL_TYPE,
    Subscription,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from millstream.errors import InvalidRequest


def int16(value: int) -> bytes:
    return struct.pack(">h", value)


def int32(value: int) -> bytes:
    return struct.pack(">i", value)


def string(value: str) -> bytes:
    encoded = value.encode()
    return int16(len(encoded)) + encoded


def topic_partitions(topic: str, *partitions: int) -> bytes:
    return string(topic) + int32(len(partitions)) + b"".join(map(int32, partitions))


NULL_BYTES = int32(-1)

# Subscription v2 of a member reading "orders" and "audit", owning orders 0 and 2 from
# generation 5, user data 01 02: version, topics, user data, owned partitions, generation.
SUBSCRIPTION_V2 = b"".join(
    [
        int16(2),
        int32(2) + string("orders") + string("audit"),
        int32(2) + b"\x01\x02",
        int32(1) + topic_partitions("orders", 0, 2),
        int32(5),
    ]
)

# Assignment v2: audit 0, orders 1 and 2, topics sorted, then empty user data.
ASSIGNMENT_V2 = b"".join(
    [
        int16(2),
        int32(2) + topic_partitions("audit", 0) + topic_partitions("orders", 1, 2),
        int32(0),
    ]
)


def test_protocol_type_is_kafkas() -> None:
    assert PROTOCOL_TYPE == "consumer"


def test_subscription_bytes_match_kafkas_schema() -> None:
    subscription = Subscription(
        topics=("orders", "audit"),
        owned=(("orders", 2), ("orders", 0)),
        generation=5,
        user_data=b"\x01\x02",
    )
    assert encode_subscription(subscription) == SUBSCRIPTION_V2
    assert decode_subscription(SUBSCRIPTION_V2) == Subscription(
        topics=("orders", "audit"),
        owned=(("orders", 0), ("orders", 2)),
        generation=5,
        user_data=b"\x01\x02",
    )


def test_assignment_bytes_match_kafkas_schema() -> None:
    encoded = encode_assignment([("orders", 2), ("audit", 0), ("orders", 1)])
    assert encoded == ASSIGNMENT_V2
    assert decode_assignment(ASSIGNMENT_V2) == [("audit", 0), ("orders", 1), ("orders", 2)]


def test_an_empty_assignment_is_an_empty_list() -> None:
    assert encode_assignment([]) == int16(2) + int32(0) + int32(0)
    assert decode_assignment(encode_assignment([])) == []


def test_subscription_v0_has_no_owned_partitions_and_no_generation() -> None:
    v0 = int16(0) + int32(1) + string("orders") + NULL_BYTES
    assert decode_subscription(v0) == Subscription(topics=("orders",))


def test_subscription_v1_has_owned_partitions_but_no_generation() -> None:
    v1 = int16(1) + int32(1) + string("t") + int32(0) + int32(1) + topic_partitions("t", 3)
    assert decode_subscription(v1) == Subscription(topics=("t",), owned=(("t", 3),))


def test_subscription_v3_rack_id_is_read_and_dropped() -> None:
    v3 = int16(3) + int32(1) + string("t") + int32(0) + int32(0) + int32(9) + string("rack-a")
    assert decode_subscription(v3) == Subscription(topics=("t",), generation=9)


def test_a_newer_version_is_read_as_the_newest_known_and_its_extra_fields_ignored() -> None:
    v3_body = int32(1) + string("t") + int32(0) + int32(0) + int32(9) + string("rack-a")
    assert decode_subscription(int16(7) + v3_body + b"future fields") == Subscription(
        topics=("t",), generation=9
    )
    assert decode_assignment(int16(7) + ASSIGNMENT_V2[2:] + b"future") == decode_assignment(
        ASSIGNMENT_V2
    )


def test_null_user_data_reads_as_empty() -> None:
    assignment = int16(0) + int32(1) + topic_partitions("t", 0) + NULL_BYTES
    assert decode_assignment(assignment) == [("t", 0)]


def test_bytes_written_by_kafka_python_coordinator_decode() -> None:
    """kafka-python's own cooperative member metadata (v1) and range assignment (v0)."""
    assignor = CooperativeStickyAssignor()
    assignor.member_assignment = [KafkaTopicPartition("t", 1), KafkaTopicPartition("t", 0)]
    metadata = assignor.metadata({"t", "u"}).encode()
    assert decode_subscription(metadata) == Subscription(
        topics=("t", "u"), owned=(("t", 0), ("t", 1))
    )

    class Cluster:
        def topics(self) -> set[str]:
            return {"t"}

        def partitions_for_topic(self, topic: str) -> set[int]:
            return {0, 1}

    class Member:
        member_id = "m"
        group_instance_id = None
        metadata = RangePartitionAssignor.metadata(["t"])

    assigned = RangePartitionAssignor.assign(Cluster(), [Member()])["m"].encode()
    assert decode_assignment(assigned) == [("t", 0), ("t", 1)]


names = st.text(min_size=0, max_size=12)
partition_numbers = st.integers(min_value=0, max_value=2**31 - 1)
subscriptions = st.builds(
    Subscription,
    topics=st.lists(names, max_size=5).map(tuple),
    owned=st.lists(st.tuples(names, partition_numbers), max_size=8).map(
        lambda owned: tuple(sorted(set(owned)))
    ),
    generation=st.integers(min_value=-1, max_value=2**31 - 1),
    user_data=st.binary(max_size=20),
)


@settings(max_examples=150, deadline=None)
@given(subscriptions)
def test_subscriptions_round_trip(subscription: Subscription) -> None:
    assert decode_subscription(encode_subscription(subscription)) == subscription


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(names, partition_numbers), max_size=10), st.binary(max_size=10))
def test_assignments_round_trip(partitions: list[tuple[str, int]], user_data: bytes) -> None:
    encoded = encode_assignment(partitions, user_data=user_data)
    assert decode_assignment(encoded) == sorted(set(partitions))


GARBAGE = {
    "empty": b"",
    "one byte": b"\x00",
    "version only": int16(2),
    "negative version": int16(-1) + ASSIGNMENT_V2[2:],
    "count beyond the data": int16(2) + int32(2**31 - 1),
    "string beyond the data": int16(2) + int32(1) + int16(500) + b"ab",
    "bytes beyond the data": int16(2) + int32(0) + int32(2**31 - 1),
    "not utf-8": int16(2) + int32(1) + int16(2) + b"\xff\xfe" + int32(0) + int32(0),
    "trailing bytes": ASSIGNMENT_V2 + b"\x00",
}


@pytest.mark.parametrize("data", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_raises_invalid_request(data: bytes) -> None:
    with pytest.raises(InvalidRequest, match="consumer protocol assignment"):
        decode_assignment(data)
    with pytest.raises(InvalidRequest, match="consumer protocol subscription"):
        decode_subscription(data)


def test_every_truncation_of_valid_bytes_is_refused() -> None:
    for valid, decode in [
        (SUBSCRIPTION_V2, decode_subscription),
        (ASSIGNMENT_V2, decode_assignment),
    ]:
        for end in range(len(valid)):
            with pytest.raises(InvalidRequest):
                decode(valid[:end])


def test_null_lists_and_names_are_refused() -> None:
    null_topics = int16(0) + int32(-1) + int32(0)
    with pytest.raises(InvalidRequest, match="topics"):
        decode_subscription(null_topics)
    null_topic_name = int16(0) + int32(1) + int16(-1) + int32(0)
    with pytest.raises(InvalidRequest, match="topics"):
        decode_subscription(null_topic_name)
    with pytest.raises(InvalidRequest, match="null"):
        decode_assignment(int16(0) + int32(-1) + int32(0))
    with pytest.raises(InvalidRequest, match="null"):
        decode_assignment(int16(0) + int32(1) + int16(-1) + int32(0) + int32(0))


def test_negative_partitions_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="negative partition -1 of 't'"):
        decode_assignment(int16(0) + int32(1) + topic_partitions("t", -1) + int32(0))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_decode_or_raise_invalid_request(data: bytes) -> None:
    for decode in (decode_subscription, decode_assignment):
        with contextlib.suppress(InvalidRequest):
            decode(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([SUBSCRIPTION_V2, ASSIGNMENT_V2]), st.data())
def test_corrupted_valid_bytes_decode_or_raise_invalid_request(
    valid: bytes, data: st.DataObject
) -> None:
    position = data.draw(st.integers(min_value=0, max_value=len(valid) - 1))
    corrupted = bytearray(valid)
    corrupted[position] = data.draw(st.integers(min_value=0, max_value=255))
    for decode in (decode_subscription, decode_assignment):
        with contextlib.suppress(InvalidRequest):
            decode(bytes(corrupted))
