"""The consumer's fetching: one task per assigned partition, filling its buffer ahead of poll.

Used by :class:`~millstream.client.consumer.Consumer`, which owns the partitions' states
(:mod:`~millstream.client.partition_state`) and starts a fetch task for each through
:meth:`Fetcher.start`. Partitions are fetched concurrently and ahead of :meth:`Consumer.poll`:
while the caller works on one response the next is on its way. A fetch asks for raw
RecordBatch v2 bytes with long polling (the broker holds the request up to ``wait_ms`` until
data arrives) and decodes the whole response at once (:mod:`~millstream.client.decoding`);
each task stops fetching while a response's worth of its records is still unread. In
``stream`` mode a task follows its partition with one long-lived streaming fetch instead.
A task resolves a missing position first (``auto_offset_reset`` or a pending seek), retries
what is retriable, and parks anything else on the partition for poll to raise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Literal

from millstream import errors
from millstream.client.admin import Admin
from millstream.client.decoding import decode_fetched, whole_batches_end
from millstream.client.partition_state import Chunk, PartitionState
from millstream.client.transport import sleep_backoff
from millstream.records import batch_size_at

log = logging.getLogger("millstream.client.consumer")

OffsetReset = Literal["earliest", "latest", "none"]
_MAX_FETCH_BYTES = 64 * 1024 * 1024  # the broker's ceiling for max_bytes


class Fetcher:
    """Fetches for the partition states it is given; ``wake`` tells poll there is something
    for it (records or an error)."""

    def __init__(
        self,
        admin: Admin,
        *,
        reset: OffsetReset,
        fetch_max_bytes: int,
        wait_ms: int,
        stream: bool,
        backoff_s: tuple[float, float],
        wake: Callable[[], None],
    ) -> None:
        self._admin = admin
        self._transport = admin.transport
        self._reset: OffsetReset = reset
        self._fetch_max_bytes = fetch_max_bytes
        self._wait_ms = wait_ms
        self._stream = stream
        self._backoff_s = backoff_s
        self._wake = wake

    def start(self, state: PartitionState) -> None:
        state.task = asyncio.ensure_future(self._fetch_loop(state))

    async def resolve(self, state: PartitionState) -> None:
        """Give the partition a position from its pending reset or ``auto_offset_reset``."""
        spec = state.reset if state.reset is not None else self._reset
        if spec == "none":
            raise errors.InvalidOffset(
                f"no position for {state.tp.topic}/{state.tp.partition}: seek first "
                "(auto_offset_reset is 'none')"
            )
        seeks = state.seeks
        offset = await self._admin.offset_for(state.tp.topic, state.tp.partition, spec)
        if seeks == state.seeks and state.position is None:
            state.position = state.fetch_offset = offset
            state.reset = None

    async def _fetch_loop(self, state: PartitionState) -> None:
        max_bytes = self._fetch_max_bytes
        attempt = 0
        while True:
            try:
                if state.position is None:
                    await self.resolve(state)
                while state.buffered >= self._fetch_max_bytes:
                    state.space.clear()
                    await state.space.wait()
                if self._stream:
                    await self._follow_stream(state)
                else:
                    max_bytes = await self._fetch_once(state, max_bytes)
                attempt = 0
            except errors.OffsetOutOfRange as exc:
                if self._reset == "none":
                    return self._stop(state, exc)
                log.warning("%s/%d: %s; reset to %s", *state.tp, exc, self._reset)
                state.chunks.clear()
                state.position = state.fetch_offset = None
                state.reset = self._reset
            except errors.MillstreamError as exc:
                attempt += 1
                if not exc.retriable:
                    return self._stop(state, exc)
                log.warning("fetch from %s/%d failed (%s), retrying", *state.tp, exc)
                await sleep_backoff(attempt, *self._backoff_s)

    async def _fetch_once(self, state: PartitionState, max_bytes: int) -> int:
        """One long-polling fetch into the partition's buffer; returns the next max_bytes."""
        (topic, partition), offset = state.tp, state.fetch_offset
        assert offset is not None
        fetched = await self._transport.fetch_batches(
            topic, partition, offset, max_bytes=max_bytes, wait_ms=self._wait_ms
        )
        if fetched.high_watermark is not None:
            state.high_watermark = fetched.high_watermark
        if self._deliver(state, fetched.data) == offset and (
            batch_size_at(fetched.data, 0) > len(fetched.data)
        ):
            # Only the start of one batch came back: it is bigger than max_bytes. Ask for more.
            if max_bytes >= _MAX_FETCH_BYTES:
                raise errors.RecordTooLarge(f"a batch at {topic}/{partition}@{offset} is too big")
            return min(_MAX_FETCH_BYTES, max_bytes * 2)
        return max_bytes

    async def _follow_stream(self, state: PartitionState) -> None:
        """Follow the partition with one streaming fetch, until the broker ends it: records
        arrive as they become durable, without a request per fetch."""
        (topic, partition), offset = state.tp, state.fetch_offset
        assert offset is not None
        pending = b""
        async for chunk in self._transport.stream_batches(topic, partition, offset):
            pending = pending + chunk if pending else chunk
            whole = whole_batches_end(pending)
            if not whole:
                continue
            self._deliver(state, pending[:whole])
            pending = pending[whole:]
            # Not reading on is the flow control: TCP holds the broker back meanwhile.
            while state.buffered >= self._fetch_max_bytes:
                state.space.clear()
                await state.space.wait()

    def _deliver(self, state: PartitionState, data: bytes) -> int:
        """Decode fetched batches into the partition's buffer; returns the next fetch offset."""
        (topic, partition), offset = state.tp, state.fetch_offset
        assert offset is not None
        records, next_offset = decode_fetched(data, topic, partition, offset)
        if next_offset != offset:
            state.fetch_offset = next_offset
            state.chunks.append(Chunk(records, next_offset, len(data)))
            self._wake()
        return next_offset

    def _stop(self, state: PartitionState, error: errors.MillstreamError) -> None:
        state.error = error
        state.task = None
        self._wake()
