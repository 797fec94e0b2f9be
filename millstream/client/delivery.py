"""What a producer hands back for records it has queued: awaitables of where they landed.

Returned by :meth:`~millstream.client.Producer.send` and
:meth:`~millstream.client.Producer.send_many`, wrapped by :mod:`~millstream.client.sync`. As
Kafka's ``FutureRecordMetadata`` does, a record's future is its batch's future (resolved to
the batch's base offset) plus the record's index in the batch: the producer makes one asyncio
future per batch, never one per record, and ``send_many`` makes no per-record object at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

from millstream.client.models import RecordMetadata


class RecordFuture:
    """Where one record landed, once its batch is acknowledged: ``await`` it."""

    __slots__ = ("_future", "_index", "partition", "topic")

    def __init__(
        self, topic: str, partition: int, future: asyncio.Future[int] | None, index: int
    ) -> None:
        self.topic = topic
        self.partition = partition
        self._future = future  # None: acks=0, nothing to wait for
        self._index = index

    def done(self) -> bool:
        return self._future is None or self._future.done()

    def result(self) -> RecordMetadata:
        """The metadata of a done future (raises its error, or InvalidStateError if pending)."""
        base = -1 if self._future is None else self._future.result()
        return RecordMetadata(self.topic, self.partition, base + self._index if base >= 0 else -1)

    def __await__(self) -> Generator[Any, None, RecordMetadata]:
        if self._future is not None:
            yield from self._future.__await__()
        return self.result()


class RecordsFuture:
    """Where each record of one :meth:`Producer.send_many` call landed, in input order."""

    __slots__ = ("_segments", "_wait", "topic")

    def __init__(self, topic: str, segments: list[list[Any]], wait: bool = True) -> None:
        self.topic = topic
        # [batch, index of the first record in it, record count]: runs of one batch.
        self._segments = segments
        self._wait = wait  # False: acks=0, every offset is -1 at once

    def __len__(self) -> int:
        return sum(count for _batch, _first, count in self._segments)

    def __await__(self) -> Generator[Any, None, list[RecordMetadata]]:
        results: list[RecordMetadata] = []
        for batch, first, count in self._segments:
            base = (yield from batch.future.__await__()) if self._wait else -1
            topic, partition = self.topic, batch.partition
            if base < 0:
                results.extend(RecordMetadata(topic, partition, -1) for _ in range(count))
            else:
                start = base + first
                results.extend(
                    RecordMetadata(topic, partition, o) for o in range(start, start + count)
                )
        return results
