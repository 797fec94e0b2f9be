"""Blocking wrappers of the async clients, for plain scripts: ``with SyncProducer(url) as p:``.

Used by applications that do not run an event loop. Each wrapper owns one event loop in a
daemon thread and runs the async client there; calls from the caller's thread are handed over
with ``run_coroutine_threadsafe``. That hand-over costs tens of microseconds, far too much per
record, so :meth:`SyncProducer.send` does not make it: it appends the record to a list under a
lock and wakes the loop once per burst; the loop thread then feeds the whole list to the async
producer. Records keep their order because a single pump drains the list. The wrappers are
thread-safe to the extent that any number of threads may call ``send``; consumers are meant
for one thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from millstream import errors
from millstream.client.admin import (
    Admin,
    ConfigValues,
    NewOffsets,
    OffsetsIn,
    OffsetSpec,
    ResetTo,
)
from millstream.client.consumer import Consumer
from millstream.client.delivery import RecordFuture, RecordsFuture
from millstream.client.models import (
    DEFAULT_URL,
    ConsumerRecord,
    GroupDescription,
    GroupMetadata,
    GroupSummary,
    HeadersIn,
    OffsetAndMetadata,
    ProducerRecord,
    RecordMetadata,
    TopicDescription,
    TopicPartition,
    TopicSummary,
)
from millstream.client.producer import Producer

if TYPE_CHECKING:
    from millstream.client.coordinator import RebalanceCallback

T = TypeVar("T")


class LoopThread:
    """An asyncio event loop running in a daemon thread, taking work from other threads."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (cancelled if ``timeout`` passes)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a sync client cannot be called from its own event loop thread")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise errors.RequestTimedOut(f"no result within {timeout}s") from None

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a plain function on the loop thread (client state belongs to that thread).
        Called from that thread (a rebalance callback calling ``consumer.seek``), it just runs."""
        if threading.current_thread() is self._thread:
            return fn(*args)

        async def wrapper() -> T:
            return fn(*args)

        return self.run(wrapper())

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class SyncAdmin:
    """Blocking :class:`~millstream.client.admin.Admin`."""

    def __init__(self, url: str = DEFAULT_URL, *, timeout_s: float = 30.0) -> None:
        self._thread = LoopThread("millstream-admin")
        self._admin = Admin(url, timeout_s=timeout_s)

    def __enter__(self) -> SyncAdmin:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._thread.run(self._admin.close())
        finally:
            self._thread.stop()

    def create_topic(
        self, name: str, partitions: int = 1, config: ConfigValues | None = None
    ) -> TopicDescription:
        return self._thread.run(self._admin.create_topic(name, partitions, config))

    def list_topics(self) -> list[TopicSummary]:
        return self._thread.run(self._admin.list_topics())

    def describe_topic(self, name: str) -> TopicDescription:
        return self._thread.run(self._admin.describe_topic(name))

    def alter_topic(
        self, name: str, *, partitions: int | None = None, config: ConfigValues | None = None
    ) -> TopicDescription:
        return self._thread.run(self._admin.alter_topic(name, partitions=partitions, config=config))

    def delete_topic(self, name: str) -> None:
        self._thread.run(self._admin.delete_topic(name))

    def offset_for(self, topic: str, partition: int, at: OffsetSpec) -> int:
        return self._thread.run(self._admin.offset_for(topic, partition, at))

    def list_groups(self) -> list[GroupSummary]:
        return self._thread.run(self._admin.list_groups())

    def describe_group(self, group: str) -> GroupDescription:
        return self._thread.run(self._admin.describe_group(group))

    def delete_group(self, group: str) -> None:
        self._thread.run(self._admin.delete_group(group))

    def committed_offsets(
        self, group: str, topics: Iterable[str] | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        return self._thread.run(self._admin.committed_offsets(group, topics))

    def commit_offsets(
        self,
        group: str,
        offsets: OffsetsIn,
        *,
        member_id: str | None = None,
        generation: int | None = None,
    ) -> None:
        call = self._admin.commit_offsets(
            group, offsets, member_id=member_id, generation=generation
        )
        self._thread.run(call)

    def reset_offsets(
        self,
        group: str,
        to: ResetTo,
        topics: Iterable[str] | None = None,
        timestamp: int | None = None,
        offsets: NewOffsets | None = None,
        dry_run: bool = False,
    ) -> dict[TopicPartition, int]:
        call = self._admin.reset_offsets(group, to, topics, timestamp, offsets, dry_run)
        return self._thread.run(call)


class SyncRecordFuture:
    """Where one record sent by :meth:`SyncProducer.send` landed: :meth:`get` blocks for it."""

    __slots__ = ("_error", "_inner", "_owner")

    def __init__(self, owner: SyncProducer) -> None:
        self._owner = owner
        self._inner: RecordFuture | None = None  # set by the pump on the loop thread
        self._error: errors.MillstreamError | None = None

    def get(self, timeout: float | None = None) -> RecordMetadata:
        return self._owner._thread.run(self._result(), timeout)

    async def _result(self) -> RecordMetadata:
        await self._owner._pump()
        if self._error is not None:
            raise self._error
        assert self._inner is not None
        return await self._inner


class SyncRecordsFuture:
    """Where each record of one :meth:`SyncProducer.send_many` call landed."""

    def __init__(self, owner: SyncProducer, parts: list[RecordsFuture]) -> None:
        self._owner = owner
        self._parts = parts

    def get(self, timeout: float | None = None) -> list[RecordMetadata]:
        return self._owner._thread.run(self._results(), timeout)

    async def _results(self) -> list[RecordMetadata]:
        results: list[RecordMetadata] = []
        for part in self._parts:
            results += await part
        return results


_Pending = tuple[
    str, bytes | str | None, bytes | str | None, HeadersIn, int | None, int | None, SyncRecordFuture
]


class SyncProducer:
    """Blocking :class:`~millstream.client.producer.Producer`; takes the same options.

    :meth:`send` returns at once (it blocks only when ``max_pending`` records are waiting to be
    handed over); :meth:`flush` and :meth:`close` block until everything sent is acknowledged
    and raise the first delivery error.
    """

    def __init__(
        self, url: str = DEFAULT_URL, *, max_pending: int = 100_000, **options: Any
    ) -> None:
        self._thread = LoopThread("millstream-producer")
        self._producer = Producer(url, **options)
        self._max_pending = max_pending
        self._cond = threading.Condition()
        self._pending: list[_Pending] = []
        self._scheduled = False
        self._pump_lock: asyncio.Lock | None = None
        self._error: errors.MillstreamError | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def __enter__(self) -> SyncProducer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(
        self,
        topic: str,
        value: bytes | str | None,
        key: bytes | str | None = None,
        headers: HeadersIn = (),
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> SyncRecordFuture:
        future = SyncRecordFuture(self)
        with self._cond:
            while len(self._pending) >= self._max_pending:
                self._cond.wait()
            self._pending.append((topic, value, key, headers, partition, timestamp, future))
            wake, self._scheduled = not self._scheduled, True
        if wake:
            self._thread.loop.call_soon_threadsafe(self._start_pump)
        return future

    def send_many(
        self, topic: str, records: Iterable[bytes | str | ProducerRecord | None]
    ) -> SyncRecordsFuture:
        """Send many records; blocks while they are handed over (not until acknowledged)."""
        parts = []
        it = iter(records)
        while chunk := list(itertools.islice(it, 16_384)):
            parts.append(self._thread.run(self._send_chunk(topic, chunk)))
        return SyncRecordsFuture(self, parts)

    async def _send_chunk(self, topic: str, chunk: list[Any]) -> RecordsFuture:
        await self._pump()  # records sent one by one before this call go first
        return await self._producer.send_many(topic, chunk)

    def _start_pump(self) -> None:
        task = asyncio.ensure_future(self._pump())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pump(self) -> None:
        if self._pump_lock is None:
            self._pump_lock = asyncio.Lock()
        async with self._pump_lock:
            while True:
                with self._cond:
                    items, self._pending = self._pending, []
                    self._scheduled = False
                    self._cond.notify_all()
                if not items:
                    return
                await self._hand_over(items)

    async def _hand_over(self, items: list[_Pending]) -> None:
        send = self._producer.send
        for topic, value, key, headers, partition, timestamp, future in items:
            try:
                future._inner = await send(topic, value, key, headers, partition, timestamp)
            except errors.MillstreamError as exc:
                future._error = exc
                self._error = self._error or exc

    def flush(self, timeout: float | None = None) -> None:
        self._thread.run(self._flush(), timeout)

    async def _flush(self) -> None:
        await self._pump()
        error, self._error = self._error, None
        await self._producer.flush()
        if error is not None:
            raise error

    def close(self, timeout: float | None = None) -> None:
        try:
            self._thread.run(self._close(), timeout)
        finally:
            self._thread.stop()

    async def _close(self) -> None:
        try:
            await self._flush()
        finally:
            await self._producer.close()


class SyncConsumer:
    """Blocking :class:`~millstream.client.consumer.Consumer`; takes the same options.

    Iterating over it follows the log: ``for record in consumer: ...`` never ends by itself.
    Rebalance callbacks run on the client's own loop thread, within a ``poll``; from there they
    may call the consumer's non-blocking methods (``seek``, ``assignment``...), but not
    ``poll``, ``position`` or ``commit``.
    """

    def __init__(self, url: str = DEFAULT_URL, **options: Any) -> None:
        self._thread = LoopThread("millstream-consumer")
        self._consumer = Consumer(url, **options)

    def __enter__(self) -> SyncConsumer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._thread.run(self._consumer.close())
        finally:
            self._thread.stop()

    def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        self._thread.call(self._consumer.assign, list(partitions))

    def assignment(self) -> set[TopicPartition]:
        return self._thread.call(self._consumer.assignment)

    def subscribe(
        self,
        topics: Iterable[str],
        *,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
    ) -> None:
        topics = [topics] if isinstance(topics, str) else list(topics)
        self._thread.call(
            lambda: self._consumer.subscribe(topics, on_assign=on_assign, on_revoke=on_revoke)
        )

    def commit(self, offsets: NewOffsets | None = None) -> None:
        self._thread.run(self._consumer.commit(offsets))

    def committed(self, tp: tuple[str, int]) -> int | None:
        return self._thread.run(self._consumer.committed(tp))

    def group_metadata(self) -> GroupMetadata | None:
        return self._thread.call(self._consumer.group_metadata)

    def seek(self, tp: tuple[str, int], offset: int) -> None:
        self._thread.call(self._consumer.seek, tp, offset)

    def seek_to_beginning(self, *tps: tuple[str, int]) -> None:
        self._thread.call(self._consumer.seek_to_beginning, *tps)

    def seek_to_end(self, *tps: tuple[str, int]) -> None:
        self._thread.call(self._consumer.seek_to_end, *tps)

    def seek_to_timestamp(self, timestamp_ms: int, *tps: tuple[str, int]) -> None:
        self._thread.call(self._consumer.seek_to_timestamp, timestamp_ms, *tps)

    def position(self, tp: tuple[str, int]) -> int:
        return self._thread.run(self._consumer.position(tp))

    def highwater(self, tp: tuple[str, int]) -> int | None:
        return self._thread.call(self._consumer.highwater, tp)

    def beginning_offsets(self, tps: Iterable[tuple[str, int]]) -> dict[TopicPartition, int]:
        return self._thread.run(self._consumer.beginning_offsets(list(tps)))

    def end_offsets(self, tps: Iterable[tuple[str, int]]) -> dict[TopicPartition, int]:
        return self._thread.run(self._consumer.end_offsets(list(tps)))

    def poll(
        self, timeout_ms: float = 1000, max_records: int | None = None
    ) -> list[ConsumerRecord]:
        return self._thread.run(self._consumer.poll(timeout_ms, max_records))

    def __iter__(self) -> Iterator[ConsumerRecord]:
        while True:
            yield from self.poll()
