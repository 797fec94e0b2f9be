"""The consumer's state of one assigned partition: positions, fetched records, its fetch task.

Used by :mod:`~millstream.client.consumer` only. ``position`` is what the caller has been given
(the offset of the next record :meth:`Consumer.poll` returns) and what a commit commits;
``fetch_offset`` runs ahead of it by what is buffered in ``chunks``. A seek drops the buffer
and bumps ``seeks`` so that an offset lookup started before it is not applied after it.
"""

from __future__ import annotations

import asyncio
from collections import deque

from millstream import errors
from millstream.client.admin import OffsetSpec
from millstream.client.models import ConsumerRecord, TopicPartition


class Chunk:
    """One fetch response's records, consumed from ``index`` on."""

    __slots__ = ("index", "next_offset", "records", "size")

    def __init__(self, records: list[ConsumerRecord], next_offset: int, size: int) -> None:
        self.records = records
        self.index = 0
        self.next_offset = next_offset  # the position once every record here is consumed
        self.size = size


class PartitionState:
    __slots__ = (
        "chunks",
        "error",
        "fetch_offset",
        "high_watermark",
        "position",
        "reset",
        "seeks",
        "space",
        "task",
        "tp",
    )

    def __init__(self, tp: TopicPartition, reset: OffsetSpec | None) -> None:
        self.tp = tp
        self.position: int | None = None  # the next offset poll() returns
        self.fetch_offset: int | None = None  # the next offset the fetch task asks for
        self.reset = reset  # resolved into a position before the next fetch
        self.chunks: deque[Chunk] = deque()
        self.high_watermark: int | None = None
        self.error: errors.MillstreamError | None = None
        self.task: asyncio.Task[None] | None = None
        self.space = asyncio.Event()
        self.seeks = 0  # bumped by every seek, so a stale lookup is not applied

    @property
    def buffered(self) -> int:
        return sum(c.size for c in self.chunks)

    def move_to(self, offset: int | None, reset: OffsetSpec | None) -> None:
        """A seek: drop what was fetched and stop the fetch task (poll() starts a new one)."""
        self.position = self.fetch_offset = offset
        self.reset = reset
        self.chunks.clear()
        self.error = None
        self.seeks += 1
        if self.task is not None:
            self.task.cancel()
            self.task = None
