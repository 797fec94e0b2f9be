"""Which broker serves each partition of a topic: balanced, deterministic, and stable.

The Topic handler calls :func:`place` with the topic's partition count, the ids of the
Cluster's brokers (pod ordinals) and the placement already in effect (from the Topic's status),
writes the answer into status and pushes it to the brokers; the Cluster handler calls it again
for every topic when brokers come or go. :func:`moves` lists what changed, which is what a
rebalance has to copy. Pure functions, no I/O.

The rules, in order:

1. **Balanced.** Every broker serves ``partitions // len(brokers)`` partitions or one more.
2. **Minimal change.** A partition stays where it is unless its broker is gone or balance needs
   it elsewhere, and then as few partitions move as balance allows: the brokers that keep the
   larger share (one more than the others) are those that already hold the most. Growing a
   balanced topic moves nothing already placed.
3. **Deterministic.** The answer depends only on the partition count, the *set* of brokers,
   the current placement and the topic's offset, never on the order they were given in, so
   the operator computes the same placement after a restart.
4. **Spread across topics.** A fresh topic is dealt round-robin over the brokers sorted by id,
   starting at :func:`topic_offset` (a stable hash of the topic's name), so that many
   single-partition topics land on every broker instead of all on broker 0. New and displaced
   partitions continue that rotation where there is room.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

Placement = dict[int, int]  # partition -> id of the broker that serves it


@dataclass(frozen=True, slots=True, order=True)
class Move:
    """One partition changing broker: what a rebalance copies."""

    partition: int
    source: int
    target: int


def topic_offset(topic_name: str) -> int:
    """Where a topic's rotation over the brokers starts; the same in every process and release.

    CRC-32 of the UTF-8 name: Python's ``hash`` of a string changes with each process.
    """
    return zlib.crc32(topic_name.encode("utf-8"))


def place(
    partitions: int,
    brokers: Sequence[int],
    current: Mapping[int, int] | None = None,
    *,
    offset: int = 0,
) -> Placement:
    """The broker of every partition in ``range(partitions)``, following the module's rules.

    ``current`` maps partitions already placed to their brokers (any brokers: those no longer
    in ``brokers`` have their partitions moved). ``offset`` rotates where dealing starts,
    normally :func:`topic_offset` of the topic's name. Raises ValueError for a negative count,
    partitions without brokers, duplicate or negative broker ids, and a ``current`` that holds
    partitions outside ``range(partitions)`` (partitions cannot be removed: a decrease is the
    caller's to refuse before asking for a placement).
    """
    ring = _check(partitions, brokers, current or {})
    if partitions == 0:
        return {}
    current = current or {}
    capacity = _capacities(partitions, ring, current, offset)
    placement: Placement = {}
    for partition in sorted(current):
        broker = current[partition]
        if capacity.get(broker, 0) > 0:
            placement[partition] = broker
            capacity[broker] -= 1
    # Partitions past capacity were kept in ascending order, so the highest-numbered move: the
    # newest partitions, usually the smallest.
    size = len(ring)
    for partition in range(partitions):
        if partition in placement:
            continue
        start = (partition + offset) % size
        for step in range(size):
            broker = ring[(start + step) % size]
            if capacity[broker] > 0:
                placement[partition] = broker
                capacity[broker] -= 1
                break
    return dict(sorted(placement.items()))


def moves(before: Mapping[int, int], after: Mapping[int, int]) -> list[Move]:
    """Partitions placed in both that changed broker, in partition order."""
    return sorted(
        Move(partition, before[partition], broker)
        for partition, broker in after.items()
        if partition in before and before[partition] != broker
    )


def broker_loads(placement: Mapping[int, int], brokers: Iterable[int] = ()) -> dict[int, int]:
    """Partitions served by each broker; ``brokers`` are listed even when they serve none."""
    loads = dict.fromkeys(brokers, 0)
    for broker in placement.values():
        loads[broker] = loads.get(broker, 0) + 1
    return loads


def _check(partitions: int, brokers: Sequence[int], current: Mapping[int, int]) -> list[int]:
    if partitions < 0:
        raise ValueError(f"partition count must not be negative, got {partitions}")
    ring = sorted(brokers)
    if len(set(ring)) != len(ring):
        raise ValueError(f"broker ids must be unique, got {ring}")
    if ring and ring[0] < 0:
        raise ValueError(f"broker ids must not be negative, got {ring[0]}")
    if partitions and not ring:
        raise ValueError(f"no brokers to place {partitions} partitions on")
    outside = sorted(p for p in current if not 0 <= p < partitions)
    if outside:
        raise ValueError(
            f"partitions {outside} are placed but outside the {partitions} asked for: "
            "partitions cannot be removed"
        )
    return ring


def _capacities(
    partitions: int, ring: list[int], current: Mapping[int, int], offset: int
) -> dict[int, int]:
    """How many partitions each broker ends with: the larger share to those holding the most.

    Ties go to the brokers first in the topic's rotation, which for a fresh topic are exactly
    those that round-robin dealing from ``offset`` gives one more.
    """
    size = len(ring)
    share, extra = divmod(partitions, size)
    held = broker_loads(current, ring)
    start = offset % size
    by_priority = sorted(
        range(size), key=lambda index: (-held[ring[index]], (index - start) % size)
    )
    larger = {ring[index] for index in by_priority[:extra]}
    return {broker: share + (broker in larger) for broker in ring}
