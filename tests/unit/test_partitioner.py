"""Kafka's default partitioner, checked against Kafka's own murmur2 test vectors."""

from __future__ import annotations

import pytest

from millstream.partitioner import StickyPartitioner, murmur2, partition_for_key


def signed32(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


@pytest.mark.parametrize(
    ("key", "expected"),
    [(b"21", -973932308), (b"foobar", -790332482), (b"abc", 479470107)],
)
def test_murmur2_matches_kafka(key: bytes, expected: int) -> None:
    assert signed32(murmur2(key)) == expected


def test_partition_for_key_masks_the_sign_like_kafka() -> None:
    assert partition_for_key(b"21", 7) == (-973932308 & 0x7FFFFFFF) % 7
    assert partition_for_key(b"abc", 10) == 479470107 % 10


def test_sticky_partitioner_sticks_until_the_batch_closes() -> None:
    sticky = StickyPartitioner(seed=1)
    first = sticky.partition("t", 5)
    assert all(sticky.partition("t", 5) == first for _ in range(100))
    seen = set()
    for _ in range(200):
        previous = sticky.partition("t", 5)
        moved = sticky.next_batch("t", 5)
        assert moved != previous
        seen.add(moved)
    assert seen == set(range(5))


def test_sticky_partitioner_follows_a_partition_count_change() -> None:
    sticky = StickyPartitioner(seed=3)
    for _ in range(20):
        sticky.next_batch("t", 8)
        assert 0 <= sticky.partition("t", 2) < 2
    assert sticky.next_batch("one", 1) == 0
