"""The asyncio consumer: reads assigned partitions from positions the caller controls.

Used by applications, by :mod:`~millstream.client.sync` and by ``millstream consume``. Each
assigned partition has its own fetch task, so partitions are fetched concurrently and ahead of
:meth:`Consumer.poll`: while the caller works on one response the next is on its way. A fetch
asks for raw RecordBatch v2 bytes with long polling (the broker holds the request up to
``fetch_max_wait_ms`` until data arrives) and decodes the whole response at once
(:mod:`~millstream.client.decoding`); each task stops fetching while a response's worth of its
records is still unread.

Positions follow Kafka's consumer: ``position(tp)`` is the offset of the next record ``poll``
returns. A partition without a position starts from ``auto_offset_reset``; ``seek_to_*`` set
a reset that is resolved (one offset lookup) when the partition is next fetched. There are no
consumer groups yet: the caller assigns partitions and keeps its own offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Literal

from millstream import errors
from millstream.client.admin import Admin, OffsetSpec
from millstream.client.decoding import decode_fetched
from millstream.client.models import DEFAULT_URL, ConsumerRecord, TopicPartition
from millstream.client.transport import Transport, sleep_backoff
from millstream.records import batch_size_at

log = logging.getLogger("millstream.client.consumer")

OffsetReset = Literal["earliest", "latest", "none"]
_MAX_FETCH_BYTES = 64 * 1024 * 1024  # the broker's ceiling for max_bytes


class _Chunk:
    """One fetch response's records, consumed from ``index`` on."""

    __slots__ = ("index", "next_offset", "records", "size")

    def __init__(self, records: list[ConsumerRecord], next_offset: int, size: int) -> None:
        self.records = records
        self.index = 0
        self.next_offset = next_offset  # the position once every record here is consumed
        self.size = size


class _PartitionState:
    __slots__ = (
        "chunks",
        "error",
        "fetch_offset",
        "generation",
        "high_watermark",
        "position",
        "reset",
        "space",
        "task",
        "tp",
    )

    def __init__(self, tp: TopicPartition, reset: OffsetSpec | None) -> None:
        self.tp = tp
        self.position: int | None = None  # the next offset poll() returns
        self.fetch_offset: int | None = None  # the next offset the fetch task asks for
        self.reset = reset  # resolved into a position before the next fetch
        self.chunks: deque[_Chunk] = deque()
        self.high_watermark: int | None = None
        self.error: errors.MillstreamError | None = None
        self.task: asyncio.Task[None] | None = None
        self.space = asyncio.Event()
        self.generation = 0  # bumped by every seek, so a stale lookup is not applied

    @property
    def buffered(self) -> int:
        return sum(c.size for c in self.chunks)

    def move_to(self, offset: int | None, reset: OffsetSpec | None) -> None:
        """A seek: drop what was fetched and stop the fetch task (poll() starts a new one)."""
        self.position = self.fetch_offset = offset
        self.reset = reset
        self.chunks.clear()
        self.error = None
        self.generation += 1
        if self.task is not None:
            self.task.cancel()
            self.task = None


class Consumer:
    """Reads records from assigned partitions: ``assign``, ``seek``, then ``poll`` or iterate.

    ``async with Consumer(url) as consumer: consumer.assign([("orders", 0)]);
    consumer.seek_to_beginning(); async for record in consumer: ...``

    - ``auto_offset_reset``: where a partition without a position starts, and where one whose
      position fell out of the log (retention) goes: ``"latest"`` (default, as in Kafka),
      ``"earliest"``, or ``"none"`` to raise ``OffsetOutOfRange``/``InvalidOffset`` instead.
    - ``fetch_max_bytes``: the most one fetch returns per partition, and how much a partition
      buffers ahead. 1-2 MiB measured fastest: bigger responses become more objects at once
      without overlapping any better.
    - ``max_poll_records``: the default cap of :meth:`poll` (None: all that is buffered).
    - ``stream``: follow each partition with one long-lived streaming fetch instead of a
      request per fetch: lower latency and less work on both sides for consumers that keep
      up with a live log. ``highwater()`` is not updated in this mode.
    """

    def __init__(
        self,
        url: str | Transport = DEFAULT_URL,
        *,
        auto_offset_reset: OffsetReset = "latest",
        fetch_max_bytes: int = 2 * 1024 * 1024,
        fetch_max_wait_ms: int = 500,
        stream: bool = False,
        max_poll_records: int | None = None,
        retry_backoff_ms: float = 100.0,
        retry_backoff_max_ms: float = 1000.0,
        request_timeout_ms: float = 30_000.0,
    ) -> None:
        if auto_offset_reset not in ("earliest", "latest", "none"):
            raise ValueError(
                f"auto_offset_reset must be earliest, latest or none, not {auto_offset_reset!r}"
            )
        self._admin = Admin(url, timeout_s=request_timeout_ms / 1000)
        self._transport = self._admin.transport
        self._reset: OffsetReset = auto_offset_reset
        self._fetch_max_bytes = fetch_max_bytes
        self._wait_ms = fetch_max_wait_ms
        self._stream = stream
        self._max_poll_records = max_poll_records
        self._backoff_s = (retry_backoff_ms / 1000, retry_backoff_max_ms / 1000)
        self._states: dict[TopicPartition, _PartitionState] = {}
        self._data = asyncio.Event()  # set when a fetch task has records or an error for poll
        self._rotation = 0
        self._closed = False

    async def __aenter__(self) -> Consumer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- assignment and positions ----------------------------------------------------------

    def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Read exactly these partitions; those already assigned keep their positions."""
        wanted = [TopicPartition(str(t), int(p)) for t, p in partitions]
        for tp, state in list(self._states.items()):
            if tp not in wanted:
                state.move_to(None, None)
                del self._states[tp]
        for tp in wanted:
            self._states.setdefault(tp, _PartitionState(tp, None))

    def assignment(self) -> set[TopicPartition]:
        return set(self._states)

    def _state(self, tp: tuple[str, int]) -> _PartitionState:
        state = self._states.get(TopicPartition(*tp))
        if state is None:
            raise errors.InvalidRequest(f"partition {tp[0]}/{tp[1]} is not assigned")
        return state

    def _targets(self, tps: tuple[tuple[str, int], ...]) -> list[_PartitionState]:
        return [self._state(tp) for tp in tps] if tps else list(self._states.values())

    def seek(self, tp: tuple[str, int], offset: int) -> None:
        """Make ``offset`` the next offset read from ``tp``."""
        if offset < 0:
            raise errors.InvalidOffset(f"offsets are not negative, got {offset}")
        self._state(tp).move_to(offset, None)

    def seek_to_beginning(self, *tps: tuple[str, int]) -> None:
        """Read from the earliest offset still in the log (of every partition if none given)."""
        for state in self._targets(tps):
            state.move_to(None, "earliest")

    def seek_to_end(self, *tps: tuple[str, int]) -> None:
        """Read only records produced from now on."""
        for state in self._targets(tps):
            state.move_to(None, "latest")

    def seek_to_timestamp(self, timestamp_ms: int, *tps: tuple[str, int]) -> None:
        """Read from the first record whose timestamp is at or after ``timestamp_ms``."""
        for state in self._targets(tps):
            state.move_to(None, int(timestamp_ms))

    async def position(self, tp: tuple[str, int]) -> int:
        """The offset of the next record that poll() returns for ``tp``."""
        state = self._state(tp)
        if state.position is None:
            await self._resolve(state)
        assert state.position is not None
        return state.position

    def highwater(self, tp: tuple[str, int]) -> int | None:
        """The partition's log end offset as of the last fetch (None before the first)."""
        return self._state(tp).high_watermark

    async def beginning_offsets(self, tps: Iterable[tuple[str, int]]) -> dict[TopicPartition, int]:
        return await self._lookup_all(tps, "earliest")

    async def end_offsets(self, tps: Iterable[tuple[str, int]]) -> dict[TopicPartition, int]:
        """The log end offsets (the offset the next record will get) of ``tps``."""
        return await self._lookup_all(tps, "latest")

    async def _lookup_all(
        self, tps: Iterable[tuple[str, int]], at: OffsetSpec
    ) -> dict[TopicPartition, int]:
        keys = [TopicPartition(*tp) for tp in tps]
        offsets = await asyncio.gather(*(self._admin.offset_for(t, p, at) for t, p in keys))
        return dict(zip(keys, offsets, strict=True))

    async def _resolve(self, state: _PartitionState) -> None:
        spec = state.reset if state.reset is not None else self._reset
        if spec == "none":
            raise errors.InvalidOffset(
                f"no position for {state.tp.topic}/{state.tp.partition}: seek first "
                "(auto_offset_reset is 'none')"
            )
        generation = state.generation
        offset = await self._admin.offset_for(state.tp.topic, state.tp.partition, spec)
        if generation == state.generation and state.position is None:
            state.position = state.fetch_offset = offset
            state.reset = None

    # --- fetching --------------------------------------------------------------------------

    def _ensure_fetching(self) -> None:
        for state in self._states.values():
            if state.task is None and state.error is None:
                state.task = asyncio.ensure_future(self._fetch_loop(state))

    async def _fetch_loop(self, state: _PartitionState) -> None:
        max_bytes = self._fetch_max_bytes
        attempt = 0
        while True:
            try:
                if state.position is None:
                    await self._resolve(state)
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

    async def _fetch_once(self, state: _PartitionState, max_bytes: int) -> int:
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

    async def _follow_stream(self, state: _PartitionState) -> None:
        """Follow the partition with one streaming fetch, until the broker ends it: records
        arrive as they become durable, without a request per fetch."""
        (topic, partition), offset = state.tp, state.fetch_offset
        assert offset is not None
        pending = b""
        async for chunk in self._transport.stream_batches(topic, partition, offset):
            pending = pending + chunk if pending else chunk
            whole = _whole_batches_end(pending)
            if not whole:
                continue
            self._deliver(state, pending[:whole])
            pending = pending[whole:]
            # Not reading on is the flow control: TCP holds the broker back meanwhile.
            while state.buffered >= self._fetch_max_bytes:
                state.space.clear()
                await state.space.wait()

    def _deliver(self, state: _PartitionState, data: bytes) -> int:
        """Decode fetched batches into the partition's buffer; returns the next fetch offset."""
        (topic, partition), offset = state.tp, state.fetch_offset
        assert offset is not None
        records, next_offset = decode_fetched(data, topic, partition, offset)
        if next_offset != offset:
            state.fetch_offset = next_offset
            state.chunks.append(_Chunk(records, next_offset, len(data)))
            self._data.set()
        return next_offset

    def _stop(self, state: _PartitionState, error: errors.MillstreamError) -> None:
        state.error = error
        state.task = None
        self._data.set()

    # --- polling ---------------------------------------------------------------------------

    async def poll(
        self, timeout_ms: float = 1000, max_records: int | None = None
    ) -> list[ConsumerRecord]:
        """Records fetched so far, waiting up to ``timeout_ms`` for some; in offset order within
        each partition. A partition whose fetch failed for good (its topic was deleted...)
        raises that error here, and is fetched again on the next poll."""
        if self._closed:
            raise errors.MillstreamError("the consumer is closed")
        self._ensure_fetching()
        limit = max_records or self._max_poll_records
        records = self._collect(limit)
        if records or timeout_ms <= 0:
            return records or self._raise_errors()
        self._raise_errors()
        self._data.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._data.wait(), timeout_ms / 1000)
        return self._collect(limit) or self._raise_errors()

    def _raise_errors(self) -> list[ConsumerRecord]:
        for state in self._states.values():
            error, state.error = state.error, None
            if error is not None:
                raise error
        return []

    def _collect(self, limit: int | None) -> list[ConsumerRecord]:
        states = list(self._states.values())
        if not states:
            return []
        # Start from a different partition each time so a busy one cannot starve the others.
        self._rotation = (self._rotation + 1) % len(states)
        out: list[ConsumerRecord] = []
        for state in states[self._rotation :] + states[: self._rotation]:
            while state.chunks and (limit is None or len(out) < limit):
                chunk = state.chunks[0]
                records = chunk.records
                want = len(records) - chunk.index if limit is None else limit - len(out)
                taken = (
                    records[chunk.index : chunk.index + want]
                    if chunk.index or want < len(records)
                    else records
                )
                out += taken
                chunk.index += len(taken)
                if chunk.index >= len(records):
                    state.chunks.popleft()
                    state.position = chunk.next_offset
                    state.space.set()
                else:
                    state.position = records[chunk.index].offset
        return out

    def __aiter__(self) -> AsyncIterator[ConsumerRecord]:
        return self._follow()

    async def _follow(self) -> AsyncIterator[ConsumerRecord]:
        # Follows the log for as long as the caller iterates; errors surface from poll().
        while True:
            for record in await self.poll(timeout_ms=max(1000, self._wait_ms)):
                yield record

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        tasks = [s.task for s in self._states.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._admin.close()


def _whole_batches_end(data: bytes) -> int:
    """Where the whole batches at the start of ``data`` end (0: not even one is complete)."""
    end = 0
    while (size := batch_size_at(data, end)) and end + size <= len(data):
        end += size
    return end
