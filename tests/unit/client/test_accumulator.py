"""The producer's accumulator: partition routing, batch sizes, sticky switching, draining."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from millstream import errors
from millstream.client.accumulator import (
    PartitionQueue,
    ProducerBatch,
    RecordAccumulator,
    record_size,
)
from millstream.partitioner import StickyPartitioner, partition_for_key
from millstream.records import check_batch, decode_batch

BIG = 8 * 1024 * 1024


@dataclass
class Events:
    opened: list[tuple[str, int]] = field(default_factory=list)
    full: list[tuple[str, int]] = field(default_factory=list)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def make(
    loop: asyncio.AbstractEventLoop, batch_size: int = 1024, seed: int = 7
) -> tuple[RecordAccumulator, Events]:
    events = Events()

    def opened(q: PartitionQueue) -> None:
        events.opened.append((q.topic, q.partition))

    def full(q: PartitionQueue, _b: ProducerBatch) -> None:
        events.full.append((q.topic, q.partition))

    acc = RecordAccumulator(
        batch_size=batch_size,
        new_future=loop.create_future,
        clock=lambda: 0.0,
        on_batch_opened=opened,
        on_batch_full=full,
        sticky=StickyPartitioner(seed=seed),
    )
    return acc, events


def append(
    acc: RecordAccumulator,
    value: bytes,
    key: bytes | None = None,
    partition: int | None = None,
    partitions: int = 4,
    max_batch_bytes: int = BIG,
) -> tuple[ProducerBatch, int]:
    return acc.append("t", partitions, max_batch_bytes, value, key, (), partition, None)


def test_keyed_records_go_where_kafka_puts_them(loop: asyncio.AbstractEventLoop) -> None:
    acc, _ = make(loop)
    for key in (b"alice", b"bob", b"21", b"foobar", b"abc"):
        batch, _ = append(acc, b"v", key=key, partitions=7)
        assert batch.partition == partition_for_key(key, 7)


def test_an_explicit_partition_wins_and_is_checked(loop: asyncio.AbstractEventLoop) -> None:
    acc, _ = make(loop)
    batch, _ = append(acc, b"v", key=b"alice", partition=3)
    assert batch.partition == 3
    with pytest.raises(errors.UnknownPartition):
        append(acc, b"v", partition=4)


def test_records_fill_a_batch_in_order_until_the_next_would_not_fit(
    loop: asyncio.AbstractEventLoop,
) -> None:
    acc, events = make(loop, batch_size=1024)
    placed = [append(acc, bytes([i]) * 100, partition=0) for i in range(20)]
    first = placed[0][0]
    in_first = [index for batch, index in placed if batch is first]
    assert in_first == list(range(len(in_first)))
    assert 5 <= len(in_first) < 20
    assert events.full[0] == ("t", 0)
    assert len(first.data) <= 1024
    decoded = decode_batch(first.data)
    assert [r.value for r in decoded] == [bytes([i]) * 100 for i in range(len(in_first))]


def test_keyless_records_stick_to_one_partition_until_its_batch_closes(
    loop: asyncio.AbstractEventLoop,
) -> None:
    acc, events = make(loop, batch_size=1024)
    partitions_used = [append(acc, b"x" * 100)[0].partition for _ in range(50)]
    # Runs of the same partition, each as long as a batch, switching when one is full.
    runs = [p for i, p in enumerate(partitions_used) if i == 0 or p != partitions_used[i - 1]]
    assert len(runs) > 2
    assert len(events.full) >= len(runs) - 1
    assert all(a != b for a, b in itertools.pairwise(runs))


def test_closing_a_keyed_batch_does_not_move_the_sticky_partition(
    loop: asyncio.AbstractEventLoop,
) -> None:
    acc, _ = make(loop, batch_size=1024)
    sticky = append(acc, b"x")[0].partition
    other = next(p for p in range(4) if p != sticky)
    key = next(k for k in (b"%d" % i for i in range(100)) if partition_for_key(k, 4) == other)
    for _ in range(30):  # fills and closes batches of `other`
        append(acc, b"y" * 100, key=key)
    assert append(acc, b"x")[0].partition == sticky


def test_a_record_bigger_than_the_topic_allows_is_refused(
    loop: asyncio.AbstractEventLoop,
) -> None:
    acc, _ = make(loop)
    with pytest.raises(errors.RecordTooLarge):
        append(acc, b"x" * 2000, max_batch_bytes=1024)
    # A record bigger than the batch size but within the topic's limit gets a batch alone.
    _, index = append(acc, b"x" * 5000, partition=1)
    assert index == 0
    assert all(not q.batches for q in acc.queues() if q.partition != 1)  # nothing half-added


def test_batches_never_exceed_the_topic_limit(loop: asyncio.AbstractEventLoop) -> None:
    acc, _ = make(loop, batch_size=64 * 1024)
    batches = {append(acc, b"x" * 100, partition=0, max_batch_bytes=1024)[0] for _ in range(100)}
    for batch in batches:
        batch.close()
        assert len(batch.data) <= 1024
        check_batch(batch.data)


def test_take_closes_the_open_batch_and_respects_max_bytes(
    loop: asyncio.AbstractEventLoop,
) -> None:
    acc, _ = make(loop, batch_size=1024)
    for _ in range(40):
        append(acc, b"z" * 100, partition=2)
    queue = acc.queues()[2]
    assert queue.has_full_batch()
    taken = acc.take(queue, max_bytes=2048)
    assert 1 <= len(taken) <= 2
    assert sum(len(b.data) for b in taken) <= 2048
    rest = acc.take(queue, max_bytes=10**9)
    assert not queue.batches
    assert sum(b.record_count for b in taken + rest) == 40
    assert acc.pending_bytes == sum(len(b.data) for b in taken + rest)
    acc.release(taken + rest)
    assert acc.pending_bytes == 0
    # At least one batch, even when it alone is bigger than max_bytes.
    append(acc, b"z" * 500, partition=2)
    assert len(acc.take(queue, max_bytes=1)) == 1


def test_opened_callback_fires_once_per_new_batch(loop: asyncio.AbstractEventLoop) -> None:
    acc, events = make(loop, batch_size=1024)
    for _ in range(3):
        append(acc, b"v", partition=1)
    assert events.opened == [("t", 1)]


def test_abort_fails_every_queued_batch(loop: asyncio.AbstractEventLoop) -> None:
    acc, _ = make(loop)
    batch, _ = append(acc, b"v", partition=0)
    append(acc, b"v", partition=1)
    assert acc.abort(errors.MillstreamError("closed")) == 2
    assert isinstance(batch.future.exception(), errors.MillstreamError)


def test_record_size_is_an_upper_bound() -> None:
    from millstream.records import BatchBuilder

    for value, key, headers in [
        (b"", None, ()),
        (b"x" * 300, b"k" * 70, [("h", b"v" * 200), ("\u00e9t\u00e9", None)]),
        (None, None, ()),
    ]:
        builder = BatchBuilder()
        builder.append(value, key, 0, headers)
        builder.append(value, key, 2**40, headers)
        assert builder.size_estimate - 61 <= 2 * record_size(value, key, headers)
