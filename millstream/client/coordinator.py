"""The consumer's side of its group: subscription, commits, callbacks, starting offsets.

Used by :class:`~millstream.client.consumer.Consumer` when it is given a ``group_id``; it
delegates ``subscribe``, ``commit`` and ``committed`` here and calls :meth:`before_poll` at
every poll and :meth:`close` when it closes. Membership itself (join, sync, heartbeats) is
:class:`~millstream.client.group.GroupMember`'s, for which this class is the rebalance
listener: it turns the partitions a rebalance gives and takes into the consumer's assignment.

Delivery is at-least-once by default. What a commit commits is the consumer's *positions*:
the offset after the last record :meth:`Consumer.poll` returned, per partition. Auto commit
sends them at a poll once ``auto_commit_interval_ms`` has passed, before the poll returns
anything new, so only records the application was given by an earlier poll (and has handled,
since it asks for more) are committed; and again before partitions are given up and on close.
A consumer that dies between two commits has its records read again by the next owner, from
the last commit. A newly assigned partition starts at the group's committed offset, or where
``auto_offset_reset`` says when the group has none.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from millstream import errors
from millstream.client.admin import Admin, NewOffsets
from millstream.client.assignors import assignor_for
from millstream.client.group import GroupMember, MemberSettings, Partitions

__all__ = ["ConsumerCoordinator", "GroupSettings", "MemberSettings", "RebalanceCallback"]
from millstream.client.models import GroupMetadata, OffsetAndMetadata, TopicPartition
from millstream.client.transport import sleep_backoff

if TYPE_CHECKING:
    from millstream.client.consumer import Consumer

log = logging.getLogger("millstream.client.coordinator")

# A rebalance callback takes the set of partitions; it may be a plain function or async.
RebalanceCallback = Callable[[set[TopicPartition]], Awaitable[Any] | None]


@dataclass(frozen=True, slots=True)
class GroupSettings:
    group_id: str
    member: MemberSettings
    enable_auto_commit: bool
    auto_commit_interval_ms: int

    def __post_init__(self) -> None:
        if not self.member.assignors:
            raise ValueError("give at least one assignor")
        for name in self.member.assignors:
            assignor_for(name)  # raises ValueError for an unknown name, before any join


class ConsumerCoordinator:
    def __init__(self, consumer: Consumer, admin: Admin, settings: GroupSettings) -> None:
        self._consumer = consumer
        self._admin = admin
        self.group_id = settings.group_id
        self._settings = settings
        self._auto_commit = settings.enable_auto_commit
        self._interval_s = settings.auto_commit_interval_ms / 1000
        self._next_commit = time.monotonic() + self._interval_s
        self._member: GroupMember | None = None
        self._on_assign: RebalanceCallback | None = None
        self._on_revoke: RebalanceCallback | None = None
        # What this consumer last committed, so an auto commit skips unchanged positions.
        self._committed: dict[TopicPartition, int] = {}

    @property
    def subscribed(self) -> bool:
        return self._member is not None

    def subscribe(
        self,
        topics: Iterable[str],
        on_assign: RebalanceCallback | None,
        on_revoke: RebalanceCallback | None,
    ) -> None:
        names = list(
            dict.fromkeys(str(t) for t in ([topics] if isinstance(topics, str) else topics))
        )
        if not names:
            raise errors.InvalidRequest("subscribe to at least one topic")
        if self._member is None and self._consumer.assignment():
            raise errors.InvalidRequest("the consumer has assigned partitions: assign([]) first")
        if self._member is None:
            settings = self._settings.member
            self._member = GroupMember(self._admin, self.group_id, settings, self._consumer._wake)
        self._on_assign, self._on_revoke = on_assign, on_revoke
        self._member.subscribe(names)

    def group_metadata(self) -> GroupMetadata:
        member = self._member
        if member is None:
            return GroupMetadata(self.group_id, -1, "")
        return GroupMetadata(self.group_id, member.generation, member.member_id)

    async def before_poll(self) -> None:
        """Auto commit when due, then whatever the membership needs (a rebalance to apply or
        to start), so that both happen between two polls."""
        if self._auto_commit and time.monotonic() >= self._next_commit:
            await self._commit_positions()
        if self._member is not None:
            await self._member.maintain(self)

    async def close(self) -> None:
        if self._member is not None:
            await self._member.close(self)  # gives everything up, committing first
        elif self._auto_commit:
            await self._commit_positions()

    # --- commits -----------------------------------------------------------------------------

    async def commit(self, offsets: NewOffsets | None = None) -> None:
        """Commit ``offsets`` (the next offset to read, per partition), or every position."""
        if offsets is None:
            chosen = self._consumer._positions()
        else:
            chosen = {TopicPartition(str(t), int(p)): int(o) for (t, p), o in offsets.items()}
        if chosen:
            await self._send_commit(chosen)

    async def committed(self, tp: tuple[str, int]) -> int | None:
        """The group's committed offset for ``tp`` (None if it has none)."""
        found = await self._admin.committed_offsets(self.group_id, [tp[0]])
        committed = found.get(TopicPartition(str(tp[0]), int(tp[1])))
        return None if committed is None else committed.offset

    async def _send_commit(self, offsets: dict[TopicPartition, int]) -> None:
        identity = self._member.commit_identity() if self._member is not None else None
        member_id, generation = identity if identity is not None else (None, None)
        try:
            await self._admin.commit_offsets(
                self.group_id, offsets, member_id=member_id, generation=generation
            )
        except errors.GroupConflict as exc:
            if self._member is not None:
                self._member.fenced(exc, identity)
            raise
        self._committed.update(offsets)

    async def _commit_positions(self, only: Partitions | None = None) -> None:
        """Auto commit: positions that changed since the last commit. A failure is logged, not
        raised: the records are read again, which at-least-once allows."""
        self._next_commit = time.monotonic() + self._interval_s
        positions = self._consumer._positions()
        changed = {
            tp: offset
            for tp, offset in positions.items()
            if self._committed.get(tp) != offset and (only is None or tp in only)
        }
        if not changed:
            return
        try:
            await self._send_commit(changed)
        except errors.MillstreamError as exc:
            log.warning("group %s: auto commit failed (%s)", self.group_id, exc)

    # --- the rebalance listener ----------------------------------------------------------

    async def partitions_revoked(self, partitions: Partitions, *, lost: bool) -> None:
        try:
            if self._auto_commit and not lost:
                await self._commit_positions(partitions)
            if self._on_revoke is not None:
                await _call(self._on_revoke, set(partitions))
        finally:
            for tp in partitions:
                self._committed.pop(tp, None)
            self._consumer._set_assignment(self._consumer.assignment() - partitions)

    async def partitions_assigned(self, partitions: Partitions) -> None:
        committed = await self._committed_for(partitions)
        self._consumer._set_assignment(self._consumer.assignment() | partitions)
        for tp, offset in committed.items():
            self._consumer.seek(tp, offset.offset)
            self._committed[tp] = offset.offset
        if self._on_assign is not None:
            await _call(self._on_assign, set(partitions))

    async def _committed_for(
        self, partitions: Partitions
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        if not partitions:
            return {}
        topics = sorted({tp.topic for tp in partitions})
        attempt = 0
        while True:
            # Retried while the broker is unreachable: a partition must not start elsewhere
            # than at its committed offset, and nothing else can progress meanwhile.
            try:
                found = await self._admin.committed_offsets(self.group_id, topics)
                return {tp: offset for tp, offset in found.items() if tp in partitions}
            except errors.MillstreamError as exc:
                if not exc.retriable:
                    raise
                attempt += 1
                log.warning("group %s: cannot fetch committed offsets (%s)", self.group_id, exc)
                await sleep_backoff(attempt, *self._settings.member.retry_backoff_s)


async def _call(callback: RebalanceCallback, partitions: set[TopicPartition]) -> None:
    result = callback(partitions)
    if inspect.isawaitable(result):
        await result
