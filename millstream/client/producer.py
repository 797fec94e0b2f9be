"""The asyncio producer: batches records per partition and appends them as raw RecordBatch v2.

Used by applications, by :mod:`~millstream.client.sync` and by ``millstream produce``.
Records go into the :class:`~millstream.client.accumulator.RecordAccumulator`; this module is
the sender around it. Each partition has at most one request in flight, which carries every
batch that is ready for that partition (the batches route takes several at once): that keeps
records in order per partition through retries, and a slow fsync makes the next request bigger
rather than the pipeline deeper. A batch is sent when it is full, when it has lingered
``linger_ms``, or on :meth:`Producer.flush`.

Delivery is at least once: a request that fails with a retriable error (the broker is down or
restarting, a disk error, a timeout) is sent again, so a request that was applied but whose
answer was lost is applied twice. Acknowledged records are never lost by the client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from millstream import errors
from millstream.client.accumulator import PartitionQueue, ProducerBatch, RecordAccumulator
from millstream.client.admin import Admin
from millstream.client.delivery import RecordFuture, RecordsFuture
from millstream.client.models import (
    DEFAULT_URL,
    HeadersIn,
    ProducerRecord,
    RecordMetadata,
)
from millstream.client.transport import Transport, sleep_backoff
from millstream.records import COMPRESSION_NAMES, Headers

log = logging.getLogger("millstream.client.producer")

Acks = Literal["all", "1", "0"]


@dataclass(frozen=True, slots=True)
class _TopicMeta:
    partitions: int
    max_batch_bytes: int
    fetched: float


class Producer:
    """Sends records to topics; ``async with Producer(url) as producer: ...``.

    - ``send()`` returns at once (it awaits only when ``buffer_bytes`` are waiting to be sent,
      or on the first record for a topic, to learn its partitions); ``await`` the returned
      :class:`RecordFuture` for the record's offset. ``send_many()`` takes an iterable and has
      no per-record future at all.
    - ``acks``: ``"all"`` (default) answers once the records are durable, ``"1"`` once written,
      ``"0"`` does not wait: futures resolve at once with offset -1; failures still surface
      from :meth:`flush`.
    - :meth:`flush` waits for every record sent so far and raises the first delivery error
      seen since the previous flush; :meth:`close` flushes.
    """

    def __init__(
        self,
        url: str | Transport = DEFAULT_URL,
        *,
        acks: Acks = "all",
        linger_ms: float = 5.0,
        batch_size: int = 256 * 1024,
        max_request_bytes: int = 4 * 1024 * 1024,
        buffer_bytes: int = 64 * 1024 * 1024,
        compression: str = "none",
        retries: int = 10,
        retry_backoff_ms: float = 100.0,
        retry_backoff_max_ms: float = 1000.0,
        request_timeout_ms: float = 30_000.0,
        metadata_max_age_ms: float = 300_000.0,
    ) -> None:
        if acks not in ("all", "1", "0"):
            raise ValueError(f"acks must be 'all', '1' or '0', not {acks!r}")
        if compression not in COMPRESSION_NAMES:
            raise ValueError(f"compression must be one of {', '.join(COMPRESSION_NAMES)}")
        self._admin = Admin(url)
        self._transport = self._admin.transport
        self._acks: Acks = acks
        self._linger_s = linger_ms / 1000
        self._batch_size = batch_size
        self._compression = COMPRESSION_NAMES[compression]
        self._max_request_bytes = max_request_bytes
        self._buffer_bytes = buffer_bytes
        self._retries = retries
        self._backoff_s = (retry_backoff_ms / 1000, retry_backoff_max_ms / 1000)
        self._timeout_s = request_timeout_ms / 1000
        self._metadata_max_age_s = metadata_max_age_ms / 1000
        self._topics: dict[str, _TopicMeta] = {}
        self._lookups: dict[str, asyncio.Task[_TopicMeta]] = {}
        self._acc: RecordAccumulator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()
        self._must_yield = False
        self._flushing = 0
        self._error: errors.MillstreamError | None = None
        self._closed = False

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- the per-record path ---------------------------------------------------------------

    async def send(
        self,
        topic: str,
        value: bytes | str | None,
        key: bytes | str | None = None,
        headers: HeadersIn = (),
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> RecordFuture:
        """Queue one record; the returned future resolves to its :class:`RecordMetadata`."""
        meta = self._topics.get(topic) or await self._metadata(topic)
        acc = self._acc or self._start()
        raw_value = value.encode() if isinstance(value, str) else value
        raw_key = key.encode() if isinstance(key, str) else key
        raw_headers = _headers(headers) if headers else ()
        try:
            batch, index = acc.append(
                topic, meta.partitions, meta.max_batch_bytes,
                raw_value, raw_key, raw_headers, partition, timestamp,
            )  # fmt: skip
        except errors.UnknownPartition:
            meta = await self._metadata(topic, refresh=True)  # the topic may have grown
            batch, index = acc.append(
                topic, meta.partitions, meta.max_batch_bytes,
                raw_value, raw_key, raw_headers, partition, timestamp,
            )  # fmt: skip
        if self._must_yield:
            await self._make_room()
        future = None if self._acks == "0" else batch.future
        return RecordFuture(topic, batch.partition, future, index)

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | str | None,
        key: bytes | str | None = None,
        headers: HeadersIn = (),
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> RecordMetadata:
        """Send one record and wait for its acknowledgement (lingering is cut short)."""
        future = await self.send(topic, value, key, headers, partition, timestamp)
        queue = self._queue_of(topic, future.partition)
        if queue is not None and not queue.in_flight:
            self._send_now(queue)
        return await future

    async def send_many(
        self, topic: str, records: Iterable[bytes | str | ProducerRecord | None]
    ) -> RecordsFuture:
        """Queue many records (values, or :class:`ProducerRecord`s for keys and the rest).

        No future is made per record; await the result for every record's metadata, or just
        :meth:`flush`.
        """
        meta = self._topics.get(topic) or await self._metadata(topic)
        acc = self._acc or self._start()
        append = acc.append
        segments: list[list[Any]] = []
        last: ProducerBatch | None = None
        segment: list[Any] = []
        for record in records:
            if isinstance(record, ProducerRecord):
                raw, raw_key, raw_headers, partition, timestamp = record
                key = raw_key.encode() if isinstance(raw_key, str) else raw_key
                headers = _headers(raw_headers) if raw_headers else ()
            else:
                raw, key, headers, partition, timestamp = record, None, (), None, None
            value = raw.encode() if isinstance(raw, str) else raw
            try:
                batch, index = append(
                    topic, meta.partitions, meta.max_batch_bytes,
                    value, key, headers, partition, timestamp,
                )  # fmt: skip
            except errors.UnknownPartition:
                meta = await self._metadata(topic, refresh=True)  # the topic may have grown
                batch, index = append(
                    topic, meta.partitions, meta.max_batch_bytes,
                    value, key, headers, partition, timestamp,
                )  # fmt: skip
            if batch is last:
                segment[2] += 1
            else:
                segment = [batch, index, 1]
                segments.append(segment)
                last = batch
            if self._must_yield:
                await self._make_room()
        return RecordsFuture(topic, segments, wait=self._acks != "0")

    async def _make_room(self) -> None:
        # Let the sender start the request for the batch that just filled up, and hold the
        # caller while the unsent bytes are above the budget.
        self._must_yield = False
        await asyncio.sleep(0)
        acc = self._acc
        while acc is not None and acc.pending_bytes >= self._buffer_bytes:
            self._room.clear()
            await self._room.wait()

    # --- metadata --------------------------------------------------------------------------

    async def partitions_for(self, topic: str) -> int:
        """The topic's partition count, as this producer knows it."""
        return (self._topics.get(topic) or await self._metadata(topic)).partitions

    async def _metadata(self, topic: str, *, refresh: bool = False) -> _TopicMeta:
        if self._closed:
            raise errors.MillstreamError("the producer is closed")
        meta = self._topics.get(topic)
        if meta is not None and not refresh:
            return meta
        lookup = self._lookups.get(topic)
        if lookup is None:
            lookup = asyncio.ensure_future(self._fetch_metadata(topic))
            self._lookups[topic] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(topic, None))
        return await asyncio.shield(lookup)

    async def _fetch_metadata(self, topic: str) -> _TopicMeta:
        described = await self._admin.topic_metadata(topic)
        limit = described.config.get("max.message.bytes", self._batch_size)
        meta = _TopicMeta(described.partition_count, int(limit), time.monotonic())
        self._topics[topic] = meta
        return meta

    def _refresh_if_stale(self, topic: str) -> None:
        meta = self._topics.get(topic)
        if meta is None or time.monotonic() - meta.fetched < self._metadata_max_age_s:
            return
        if topic not in self._lookups and not self._closed:
            task = asyncio.ensure_future(self._metadata(topic, refresh=True))
            # A failed background refresh is harmless: the next send retries the lookup.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    # --- the sender ------------------------------------------------------------------------

    def _start(self) -> RecordAccumulator:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._acc = RecordAccumulator(
            batch_size=self._batch_size,
            compression=self._compression,
            new_future=loop.create_future,
            clock=loop.time,
            on_batch_opened=self._batch_opened,
            on_batch_full=self._batch_full,
        )
        return self._acc

    def _queue_of(self, topic: str, partition: int) -> PartitionQueue | None:
        acc = self._acc
        if acc is None:
            return None
        return next((q for q in acc.queues() if (q.topic, q.partition) == (topic, partition)), None)

    def _batch_opened(self, queue: PartitionQueue) -> None:
        if not queue.in_flight and queue.timer is None and self._loop is not None:
            queue.timer = self._loop.call_later(self._linger_s, self._linger_expired, queue)

    def _batch_full(self, queue: PartitionQueue, _batch: ProducerBatch) -> None:
        self._must_yield = True
        if not queue.in_flight:
            self._send_now(queue)

    def _linger_expired(self, queue: PartitionQueue) -> None:
        queue.timer = None
        if not queue.in_flight and queue.batches:
            self._send_now(queue)

    def _send_now(self, queue: PartitionQueue) -> None:
        if queue.timer is not None:
            queue.timer.cancel()
            queue.timer = None
        assert self._acc is not None and self._loop is not None
        batches = self._acc.take(queue, self._max_request_bytes)
        if not batches:
            return
        queue.in_flight = True
        task = self._loop.create_task(self._send(queue, batches))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, queue: PartitionQueue, batches: list[ProducerBatch]) -> None:
        try:
            base, _last = await self._post(queue, batches)
            for batch in batches:
                if not batch.future.done():
                    batch.future.set_result(base)
                base += batch.record_count
        except asyncio.CancelledError:
            self._fail(queue, batches, errors.MillstreamError("the producer was closed"))
            raise
        except Exception as exc:
            error = exc if isinstance(exc, errors.MillstreamError) else _unexpected(exc)
            self._error = self._error or error
            self._fail(queue, batches, error)
        finally:
            queue.in_flight = False
            assert self._acc is not None
            self._acc.release(batches)
            if self._acc.pending_bytes < self._buffer_bytes:
                self._room.set()
            if not self._closed:
                self._refresh_if_stale(queue.topic)
                self._send_more(queue)

    def _fail(
        self, queue: PartitionQueue, batches: list[ProducerBatch], error: errors.MillstreamError
    ) -> None:
        count = sum(b.record_count for b in batches)
        log.error("dropped %d record(s) for %s/%d: %s", count, queue.topic, queue.partition, error)
        for batch in batches:
            if not batch.future.done():
                batch.future.set_exception(error)
                batch.future.exception()  # flush() reports it: never "unretrieved"

    def _send_more(self, queue: PartitionQueue) -> None:
        assert self._acc is not None and self._loop is not None
        oldest = self._acc.oldest(queue)
        if oldest is None:
            return
        due = oldest + self._linger_s - self._loop.time()
        if self._flushing or queue.has_full_batch() or due <= 0:
            self._send_now(queue)
        elif queue.timer is None:
            queue.timer = self._loop.call_later(due, self._linger_expired, queue)

    async def _post(self, queue: PartitionQueue, batches: list[ProducerBatch]) -> tuple[int, int]:
        body = batches[0].data if len(batches) == 1 else b"".join(b.data for b in batches)
        # acks=0 still needs an HTTP answer; "1" is the cheapest the broker gives.
        acks = "1" if self._acks == "0" else self._acks
        attempt = 0
        while True:
            try:
                return await self._transport.post_batches(
                    queue.topic, queue.partition, body, acks=acks, timeout_s=self._timeout_s
                )
            except errors.MillstreamError as exc:
                if isinstance(exc, errors.NotFound):
                    self._topics.pop(queue.topic, None)  # look the topic up afresh next time
                attempt += 1
                if not exc.retriable or attempt > self._retries:
                    raise
                log.warning(
                    "produce to %s/%d failed (%s), retry %d of %d",
                    queue.topic,
                    queue.partition,
                    exc,
                    attempt,
                    self._retries,
                )
                await sleep_backoff(attempt, *self._backoff_s)

    # --- flush and close -------------------------------------------------------------------

    async def flush(self) -> None:
        """Send everything queued now and wait for it; raise the first error since last flush."""
        acc = self._acc
        if acc is not None:
            self._flushing += 1
            try:
                waiting: list[asyncio.Future[Any]] = [
                    b.future for q in acc.queues() for b in q.batches
                ]
                waiting += self._tasks
                for queue in acc.queues():
                    if queue.batches and not queue.in_flight:
                        self._send_now(queue)
                if waiting:
                    await asyncio.wait(waiting)
            finally:
                self._flushing -= 1
        error, self._error = self._error, None
        if error is not None:
            raise error

    async def close(self) -> None:
        """Flush, then release the connection; raises what flush raises, closed either way."""
        if self._closed:
            return
        try:
            await self.flush()
        finally:
            self._closed = True
            self._topics.clear()  # so that a late send() fails in _metadata()
            if self._acc is not None:
                for queue in self._acc.queues():
                    if queue.timer is not None:
                        queue.timer.cancel()
                self._acc.abort(errors.MillstreamError("the producer was closed"))
            for task in list(self._tasks):
                task.cancel()
            await self._admin.close()


def _headers(headers: HeadersIn) -> Headers:
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in headers]


def _unexpected(exc: BaseException) -> errors.MillstreamError:
    error = errors.MillstreamError(f"unexpected client error: {exc!r}")
    error.__cause__ = exc
    return error
