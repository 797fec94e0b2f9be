"""Choosing a partition for a record: Kafka's default partitioner, so keys land as in Kafka.

Used by the broker's JSON produce path and by the client's producer. Keyed records go to
``(murmur2(key) & 0x7fffffff) % partitions`` (kafka-python's murmur2, byte-for-byte the Java
client's); records without a key stick to one partition until a batch is closed, then move on
(KIP-480's sticky partitioner), which keeps batches large without skewing load. The same hash
of a group id picks the group's partition of the group-offsets topic
(:mod:`millstream.internal_topics`).
"""

from __future__ import annotations

import random

from kafka.partitioner.default import murmur2

__all__ = ["StickyPartitioner", "murmur2", "partition_for_key"]


def partition_for_key(key: bytes, partitions: int) -> int:
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


class StickyPartitioner:
    """Picks the partition for keyless records: the same one until :meth:`next_batch`."""

    __slots__ = ("_current", "_rng")

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._current: dict[str, int] = {}

    def partition(self, topic: str, partitions: int) -> int:
        current = self._current.get(topic)
        if current is None or current >= partitions:
            current = self._rng.randrange(partitions)
            self._current[topic] = current
        return current

    def next_batch(self, topic: str, partitions: int) -> int:
        """Called when the sticky partition's batch is closed: move to another partition."""
        previous = self._current.get(topic)
        choice = self._rng.randrange(partitions)
        if partitions > 1 and choice == previous:
            choice = (choice + 1 + self._rng.randrange(partitions - 1)) % partitions
        self._current[topic] = choice
        return choice
