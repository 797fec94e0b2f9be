"""The asyncio consumer: reads assigned partitions from positions the caller controls.

Used by applications, by :mod:`~millstream.client.sync` and by ``millstream consume``. Each
assigned partition has its own fetch task (:mod:`~millstream.client.fetcher`), so partitions
are fetched concurrently and ahead of :meth:`Consumer.poll`, which hands out what they
buffered.

Positions follow Kafka's consumer: ``position(tp)`` is the offset of the next record ``poll``
returns. A partition without a position starts from ``auto_offset_reset``; ``seek_to_*`` set
a reset that is resolved (one offset lookup) when the partition is next fetched. Either the
caller assigns partitions (``assign``) or, with a ``group_id``, subscribes to topics and the
group shares their partitions out (``subscribe``); everything group-aware, commits included,
is delegated to :mod:`~millstream.client.coordinator`, which :meth:`Consumer.poll` gives a
turn before it collects records.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING

from millstream import errors
from millstream.client.admin import Admin, NewOffsets, OffsetSpec
from millstream.client.fetcher import Fetcher, OffsetReset
from millstream.client.models import DEFAULT_URL, ConsumerRecord, GroupMetadata, TopicPartition
from millstream.client.partition_state import PartitionState
from millstream.client.transport import Transport
from millstream.waits import wait_event

if TYPE_CHECKING:
    from millstream.client.coordinator import ConsumerCoordinator, RebalanceCallback

log = logging.getLogger("millstream.client.consumer")


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
    - ``group_id``: the consumer group whose offsets ``commit`` and ``committed`` use, and
      which ``subscribe`` joins. ``enable_auto_commit``: commit positions every
      ``auto_commit_interval_ms`` (at a poll), before partitions are given up and on close.
      ``session_timeout_ms``: how long the group waits for a silent member before it shares
      its partitions out; heartbeats go every ``heartbeat_interval_ms``;
      ``rebalance_timeout_ms`` (default: the session timeout) is how long a rebalance waits
      for the members to rejoin, so a member must poll at least that often. ``assignors``:
      the assignment strategies this member supports, preferred first (the default,
      cooperative-sticky alone, rebalances incrementally; a list with an eager assignor in it
      makes this member give up all its partitions at every rebalance).
    - ``group_instance_id``: static membership (Kafka's ``group.instance.id``): give each
      process of a fleet its own stable id (a StatefulSet pod's name). A process that
      restarts with it within the session timeout takes its old place and partitions, no
      rebalance; on close it does not leave the group. If another process joins with the
      same id, this one's polls raise ``FencedInstanceId``: it must stop.
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
        group_id: str | None = None,
        client_id: str | None = None,
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5_000,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        rebalance_timeout_ms: int | None = None,
        assignors: Sequence[str] = ("cooperative-sticky",),
        group_instance_id: str | None = None,
    ) -> None:
        if auto_offset_reset not in ("earliest", "latest", "none"):
            raise ValueError(
                f"auto_offset_reset must be earliest, latest or none, not {auto_offset_reset!r}"
            )
        self._admin = Admin(url, timeout_s=request_timeout_ms / 1000)
        self._wait_ms = fetch_max_wait_ms
        self._max_poll_records = max_poll_records
        self._backoff_s = (retry_backoff_ms / 1000, retry_backoff_max_ms / 1000)
        self._states: dict[TopicPartition, PartitionState] = {}
        self._data = asyncio.Event()  # set when a fetch task has records or an error for poll
        self._fetcher = Fetcher(
            self._admin,
            reset=auto_offset_reset,
            fetch_max_bytes=fetch_max_bytes,
            wait_ms=fetch_max_wait_ms,
            stream=stream,
            backoff_s=self._backoff_s,
            wake=self._data.set,
        )
        self._rotation = 0
        self._closed = False
        self._group: ConsumerCoordinator | None = None
        if group_id is not None:
            # Imported only for a group: it loads kafka-python's protocol classes (0.1 s).
            from millstream.client import coordinator as c

            member = c.MemberSettings(
                client_id or f"millstream-consumer-{os.getpid()}",
                tuple(assignors),
                session_timeout_ms,
                rebalance_timeout_ms or session_timeout_ms,
                heartbeat_interval_ms,
                self._backoff_s,
                group_instance_id,
            )
            settings = c.GroupSettings(
                group_id, member, enable_auto_commit, auto_commit_interval_ms
            )
            self._group = c.ConsumerCoordinator(self, self._admin, settings)

    async def __aenter__(self) -> Consumer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- assignment and positions ----------------------------------------------------------

    def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Read exactly these partitions; those already assigned keep their positions."""
        if self._group is not None and self._group.subscribed:
            raise errors.InvalidRequest("a subscribed consumer's partitions come from its group")
        self._set_assignment(partitions)

    def _set_assignment(self, partitions: Iterable[tuple[str, int]]) -> None:
        wanted = {TopicPartition(str(t), int(p)) for t, p in partitions}
        for tp, state in list(self._states.items()):
            if tp not in wanted:
                state.move_to(None, None)
                del self._states[tp]
        for tp in wanted:
            self._states.setdefault(tp, PartitionState(tp, None))

    def assignment(self) -> set[TopicPartition]:
        return set(self._states)

    def _state(self, tp: tuple[str, int]) -> PartitionState:
        state = self._states.get(TopicPartition(*tp))
        if state is None:
            raise errors.InvalidRequest(f"partition {tp[0]}/{tp[1]} is not assigned")
        return state

    def _targets(self, tps: tuple[tuple[str, int], ...]) -> list[PartitionState]:
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
            await self._fetcher.resolve(state)
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

    # --- groups ----------------------------------------------------------------------------

    def subscribe(
        self,
        topics: Iterable[str],
        *,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
    ) -> None:
        """Read the partitions the group gives this member of ``topics`` (joined at the next
        poll). ``on_revoke(partitions)`` runs before partitions are given up (after the auto
        commit), ``on_assign(partitions)`` once new ones are assigned, both within a poll;
        either may be a coroutine function."""
        self._coordinator().subscribe(topics, on_assign, on_revoke)

    async def commit(self, offsets: NewOffsets | None = None) -> None:
        """Commit ``offsets`` (the next offset to read, per partition) to the group; by default
        the positions of every assigned partition, i.e. everything poll() returned so far."""
        await self._coordinator().commit(offsets)

    async def committed(self, tp: tuple[str, int]) -> int | None:
        """The group's committed offset for ``tp``, or None."""
        return await self._coordinator().committed(tp)

    def group_metadata(self) -> GroupMetadata | None:
        """The group, generation and member id of this consumer (None without a group_id)."""
        return None if self._group is None else self._group.group_metadata()

    def _coordinator(self) -> ConsumerCoordinator:
        if self._group is None:
            raise errors.InvalidRequest("the consumer has no group_id")
        return self._group

    def _positions(self) -> dict[TopicPartition, int]:
        # What a commit commits: the offset after the last record handed out, per partition.
        return {tp: s.position for tp, s in self._states.items() if s.position is not None}

    def _wake(self) -> None:
        self._data.set()  # the group needs a turn: a waiting poll returns to give it one

    # --- fetching --------------------------------------------------------------------------

    def _ensure_fetching(self) -> None:
        for state in self._states.values():
            if state.task is None and state.error is None:
                self._fetcher.start(state)

    # --- polling ---------------------------------------------------------------------------

    async def poll(
        self, timeout_ms: float = 1000, max_records: int | None = None
    ) -> list[ConsumerRecord]:
        """Records fetched so far, waiting up to ``timeout_ms`` for some; in offset order within
        each partition. A partition whose fetch failed for good (its topic was deleted...)
        raises that error here, and is fetched again on the next poll."""
        if self._closed:
            raise errors.MillstreamError("the consumer is closed")
        deadline = time.monotonic() + timeout_ms / 1000
        limit = max_records or self._max_poll_records
        while True:
            if self._group is not None:
                await self._group.before_poll()
            self._ensure_fetching()
            records = self._collect(limit)
            if records:
                return records
            self._raise_errors()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            self._data.clear()
            await wait_event(self._data, remaining)

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
        try:
            if self._group is not None:
                await self._group.close()
        finally:
            await self._stop_fetching()

    async def _stop_fetching(self) -> None:
        tasks = [s.task for s in self._states.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._admin.close()
