"""The producer's record accumulator: chooses partitions and groups records into batches.

Used only by :mod:`~millstream.client.producer`, which owns the I/O; this module does none, so
routing, batching and sticky switching are tested without a broker. As in Kafka's
``RecordAccumulator``, each partition has a queue of batches: full ones waiting to be sent and
at most one open one still taking records. A batch is closed when the next record would take
it past the size limit, or when the sender takes it; closing the sticky partition's batch
moves keyless records on to another partition (KIP-480), which is what keeps keyless batches
large without piling them on one partition.

The per-record path (:meth:`RecordAccumulator.append`) is the producer's hot loop: a partition
choice, one dict lookup, a size check and ``BatchWriter.append``; nothing else per record.
Not thread-safe; the producer calls it from its event loop only.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Final

from millstream import errors
from millstream.client.batch_writer import BatchWriter
from millstream.partitioner import StickyPartitioner, partition_for_key
from millstream.records import HEADER_SIZE, NONE, Headers

# The most a record's framing adds to its key, value and headers: seven varints (five bytes
# each at most, ten for the timestamp delta) and the attributes byte.
RECORD_OVERHEAD: Final = 41


def record_size(value: bytes | None, key: bytes | None, headers: Headers) -> int:
    """An upper bound of the bytes a record adds to a batch."""
    size = RECORD_OVERHEAD
    if value is not None:
        size += len(value)
    if key is not None:
        size += len(key)
    for hkey, hvalue in headers:
        size += len(hkey) * 4 + 10 + (len(hvalue) if hvalue is not None else 0)
    return size


class ProducerBatch:
    """Records bound for one partition, sent in one piece; ``future`` gets its base offset."""

    __slots__ = ("builder", "created", "data", "future", "partition", "record_count", "topic")

    def __init__(
        self,
        topic: str,
        partition: int,
        builder: BatchWriter,
        future: asyncio.Future[int],
        now: float,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.builder: BatchWriter | None = builder
        self.future = future
        self.created = now
        self.data = b""
        self.record_count = 0

    @property
    def is_open(self) -> bool:
        return self.builder is not None

    def close(self) -> None:
        """Encode the batch; it takes no more records. Encoding once keeps retries cheap."""
        if self.builder is not None:
            self.record_count = len(self.builder)
            # Empty only if BatchWriter.append refused the first record (bad input).
            self.data = self.builder.build() if self.record_count else b""
            self.builder = None


class PartitionQueue:
    """The batches of one partition, oldest first; the last may be open."""

    __slots__ = ("batches", "in_flight", "partition", "timer", "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.batches: deque[ProducerBatch] = deque()
        self.in_flight = False
        self.timer: asyncio.TimerHandle | None = None  # the sender's linger timer

    def has_full_batch(self) -> bool:
        return len(self.batches) > 1 or (bool(self.batches) and not self.batches[0].is_open)


class RecordAccumulator:
    """Per-partition batch queues of every topic a producer writes to.

    ``on_batch_opened`` is called when a partition's queue gets a new open batch (the sender
    arms its linger timer) and ``on_batch_full`` when a batch is closed for size (the sender
    may send it at once).
    """

    def __init__(
        self,
        *,
        batch_size: int,
        compression: int = NONE,
        new_future: Callable[[], asyncio.Future[int]],
        clock: Callable[[], float],
        on_batch_opened: Callable[[PartitionQueue], None],
        on_batch_full: Callable[[PartitionQueue, ProducerBatch], None],
        sticky: StickyPartitioner | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.compression = compression
        self._new_future = new_future
        self._clock = clock
        self._on_batch_opened = on_batch_opened
        self._on_batch_full = on_batch_full
        self._sticky = sticky or StickyPartitioner()
        self._queues: dict[str, list[PartitionQueue]] = {}
        self._partitions: dict[str, int] = {}
        # Bytes of closed batches not yet released by the sender: the producer's backpressure.
        self.pending_bytes = 0

    def queues(self) -> list[PartitionQueue]:
        return [q for queues in self._queues.values() for q in queues]

    def choose_partition(self, topic: str, key: bytes | None, partitions: int) -> int:
        if key is not None:
            return partition_for_key(key, partitions)
        return self._sticky.partition(topic, partitions)

    def append(
        self,
        topic: str,
        partitions: int,
        max_batch_bytes: int,
        value: bytes | None,
        key: bytes | None,
        headers: Headers,
        partition: int | None,
        timestamp: int | None,
    ) -> tuple[ProducerBatch, int]:
        """Add one record; returns its batch and its index in that batch.

        ``partitions`` is the topic's partition count and ``max_batch_bytes`` its
        max.message.bytes: the broker refuses bigger batches, so no batch grows past it.
        """
        if partition is None:
            if key is None:
                partition = self._sticky.partition(topic, partitions)
            else:
                partition = partition_for_key(key, partitions)
        elif not 0 <= partition < partitions:
            raise errors.UnknownPartition(
                f"topic {topic!r} has partitions 0..{partitions - 1}, not {partition}"
            )
        queues = self._queues.get(topic)
        if queues is None or partition >= len(queues):
            queues = self._grow(topic, partitions)
        queue = queues[partition]
        size = record_size(value, key, headers)
        if size + HEADER_SIZE > max_batch_bytes:
            raise errors.RecordTooLarge(
                f"a record of about {size} bytes does not fit in a batch of topic {topic!r} "
                f"(max.message.bytes is {max_batch_bytes})"
            )
        batch = queue.batches[-1] if queue.batches else None
        if batch is None or batch.builder is None:
            batch, builder = self._open(queue)
        else:
            builder = batch.builder
            if builder.size_estimate + size > min(self.batch_size, max_batch_bytes):
                self._close(queue, batch)
                self._on_batch_full(queue, batch)
                batch, builder = self._open(queue)
        index = len(builder)
        builder.append(value, key, timestamp, headers)
        return batch, index

    def _open(self, queue: PartitionQueue) -> tuple[ProducerBatch, BatchWriter]:
        builder = BatchWriter(self.compression)
        batch = ProducerBatch(
            queue.topic, queue.partition, builder, self._new_future(), self._clock()
        )
        queue.batches.append(batch)
        self._on_batch_opened(queue)
        return batch, builder

    def _grow(self, topic: str, partitions: int) -> list[PartitionQueue]:
        queues = self._queues.setdefault(topic, [])
        queues.extend(PartitionQueue(topic, p) for p in range(len(queues), partitions))
        self._partitions[topic] = partitions
        return queues

    def _close(self, queue: PartitionQueue, batch: ProducerBatch) -> None:
        batch.close()
        self.pending_bytes += len(batch.data)
        partitions = self._partitions[queue.topic]
        if self._sticky.partition(queue.topic, partitions) == queue.partition:
            self._sticky.next_batch(queue.topic, partitions)

    def take(self, queue: PartitionQueue, max_bytes: int) -> list[ProducerBatch]:
        """Close and remove the head batches of ``queue``: one at least, ``max_bytes`` at most."""
        taken: list[ProducerBatch] = []
        size = 0
        while queue.batches:
            batch = queue.batches[0]
            if batch.is_open:
                self._close(queue, batch)
            if not batch.record_count:
                queue.batches.popleft()
                batch.future.cancel()
                continue
            if taken and size + len(batch.data) > max_bytes:
                break
            taken.append(queue.batches.popleft())
            size += len(batch.data)
        return taken

    def release(self, batches: list[ProducerBatch]) -> None:
        """The sender is done with ``batches`` (acknowledged or failed)."""
        self.pending_bytes -= sum(len(b.data) for b in batches)

    def oldest(self, queue: PartitionQueue) -> float | None:
        """When the oldest batch of ``queue`` was opened (the sender's linger clock)."""
        return queue.batches[0].created if queue.batches else None

    def abort(self, error: BaseException) -> int:
        """Fail every batch not yet taken; returns how many records that dropped."""
        dropped = 0
        for queue in self.queues():
            while queue.batches:
                batch = queue.batches.popleft()
                dropped += batch.record_count or (len(batch.builder) if batch.builder else 0)
                self.pending_bytes -= len(batch.data)
                if not batch.future.done():
                    batch.future.set_exception(error)
                    batch.future.exception()  # reported by flush(); never "unretrieved"
        return dropped
