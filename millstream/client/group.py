"""A member of a consumer group: join, sync, heartbeats, leave, and the leader's assignment.

Used by :mod:`~millstream.client.coordinator`, the consumer's side of a group, which is this
member's :class:`RebalanceListener`. The protocol is Kafka's classic group protocol over the
broker's HTTP API (:mod:`~millstream.client.group_api`, docs/consumer-groups.md):

- A rebalance is a join (the broker answers once every member has joined, naming the
  generation, the protocol and the leader) and a sync (the leader hands in everyone's
  assignment, computed here with the chosen assignor from the topics' partition counts and the
  members' decoded subscriptions; every member gets its own part).
- Joins and syncs run in a background task, so that a cooperative member keeps reading what it
  owns meanwhile; but what a rebalance changes is applied by :meth:`GroupMember.maintain`, which
  the consumer calls at every poll. So the listener's callbacks (commit, then give partitions
  up) run between two polls, after the application has handled what the last poll returned:
  that is what makes auto commit at-least-once. A member that does not poll within the
  rebalance timeout is dropped from the rebalance, as in Kafka.
- Heartbeats run in another background task, every ``heartbeat_interval_ms`` (at most a third
  of the session), except while a join or sync is outstanding (the broker counts those as
  signs of life). ``rebalance_in_progress`` asks for a rejoin at the next poll;
  ``unknown_member`` and ``illegal_generation`` mean the broker gave our partitions away: they
  are *lost*, handed back without a commit, and the member joins again.
- Eager protocols (``range``, ``roundrobin``) give every partition up before rejoining.
  ``cooperative-sticky`` keeps them, sends them as owned partitions in its subscription, gives up
  only what the new assignment drops, and then rejoins at once so that the next generation hands
  those partitions to their new owner (the assignor withholds them for one generation). As in
  Kafka, a member keeps its partitions across a join only if every assignor it offers is
  cooperative: the group may pick any protocol all members offer, and an eager one hands
  partitions out at once, so keeping them then could let two members of one generation read
  the same partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from millstream import errors
from millstream.client.admin import Admin
from millstream.client.assignors import Assignor, assignor_for
from millstream.client.group_api import GroupApi, Joined, JoinedMember
from millstream.client.models import TopicPartition
from millstream.client.transport import sleep_backoff
from millstream.consumer_protocol import (
    PROTOCOL_TYPE,
    Subscription,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)

log = logging.getLogger("millstream.client.group")

Partitions = frozenset[TopicPartition]
# How often the leader looks for new partitions of the subscribed topics (and new topics).
_METADATA_MAX_AGE_S = 10.0


class RebalanceListener(Protocol):
    async def partitions_revoked(self, partitions: Partitions, *, lost: bool) -> None:
        """Give ``partitions`` up (committing first unless ``lost``)."""

    async def partitions_assigned(self, partitions: Partitions) -> None:
        """Start reading ``partitions`` (called after every rebalance, maybe with none)."""


@dataclass(frozen=True, slots=True)
class MemberSettings:
    client_id: str
    assignors: tuple[str, ...]
    session_timeout_ms: int
    rebalance_timeout_ms: int
    heartbeat_interval_ms: int
    retry_backoff_s: tuple[float, float] = (0.1, 1.0)
    # Static membership (Kafka's group.instance.id): a restart with the same one takes this
    # member's place without a rebalance; such a member does not leave the group on close.
    group_instance_id: str | None = None


@dataclass(frozen=True, slots=True)
class _Synced:
    generation: int
    protocol: str
    partitions: Partitions


class _Fenced(Exception):
    """The broker no longer counts this member in the generation its partitions are from."""


class GroupMember:
    """One consumer's membership of ``group_id``. ``wake`` is called whenever the member needs
    the next :meth:`maintain` soon (a finished join, a rebalance to join)."""

    def __init__(
        self,
        admin: Admin,
        group_id: str,
        settings: MemberSettings,
        wake: Callable[[], None],
    ) -> None:
        self._admin = admin
        self._api = GroupApi(admin.transport, group_id, PROTOCOL_TYPE)
        self.group_id = group_id
        self._settings = settings
        self._assignors: dict[str, Assignor] = {n: assignor_for(n) for n in settings.assignors}
        self._wake = wake
        self.topics: tuple[str, ...] = ()
        self.member_id = ""
        self.generation = -1  # the generation of ``assignment``
        self.assignment: Partitions = frozenset()
        self.protocol: str | None = None
        self._joined_generation = -1  # the broker's generation as this member last joined it
        self._rejoin = False
        self._last_poll = time.monotonic()
        self._fenced: errors.MillstreamError | None = None
        # Another process took this static member's place: every poll raises it from now on.
        self._replaced: errors.FencedInstanceId | None = None
        self._join_task: asyncio.Task[_Synced] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        # As the leader last assigned them: the topics subscribed and their partition counts.
        self._watched: tuple[list[str], dict[str, int]] | None = None

    # --- what the consumer calls ---------------------------------------------------------

    def subscribe(self, topics: Sequence[str]) -> None:
        if tuple(topics) != self.topics or self._joined_generation < 0:
            self.topics = tuple(topics)
            self.request_rejoin()

    def request_rejoin(self) -> None:
        self._rejoin = True
        self._wake()

    def commit_identity(self) -> tuple[str, int] | None:
        """The member id and generation a commit must carry (None outside a generation)."""
        if not self.member_id or self._joined_generation < 0:
            return None
        return self.member_id, self._joined_generation

    def fenced(self, error: errors.MillstreamError, identity: tuple[str, int] | None) -> None:
        """A request made as ``identity`` was refused because the broker has moved on: rejoin,
        and hand back what this member holds as lost if the broker says it is no longer ours.
        Nothing to do if the member has joined again since, or is joining."""
        if isinstance(error, errors.FencedInstanceId):
            self._replaced = error
            self._wake()
            return
        if identity != self.commit_identity() or self._joining():
            return
        if isinstance(error, errors.RebalanceInProgress):
            self.request_rejoin()
        elif isinstance(error, errors.UnknownMember | errors.IllegalGeneration):
            self._fenced = error
            self.request_rejoin()

    async def maintain(self, listener: RebalanceListener) -> None:
        """Called at every poll: apply a finished rebalance, hand back lost partitions, start
        a rejoin when one is due. Raises what made a join fail for good (it is retried at the
        next poll)."""
        self._last_poll = time.monotonic()
        if self._replaced is not None:
            raise self._replaced
        if self._heartbeat_task is None:
            self._heartbeat_task = asyncio.ensure_future(self._heartbeats())
        if self._join_task is not None and self._join_task.done():
            task, self._join_task = self._join_task, None
            await self._finish_join(task, listener)
        if self._fenced is not None and self._join_task is None:
            await self._drop_lost(listener)
        if self._rejoin and self._join_task is None and self.topics:
            await self._start_join(listener)

    async def close(self, listener: RebalanceListener) -> None:
        """Give every partition up (committing first) and leave the group."""
        for task in (self._join_task, self._heartbeat_task):
            if task is not None:
                task.cancel()
                # A finished join may hold any error (fenced: _fenced says so); closing goes on.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._join_task = self._heartbeat_task = None
        try:
            if self.assignment:
                lost = self._fenced is not None or self._replaced is not None
                await listener.partitions_revoked(self.assignment, lost=lost)
        finally:
            self.assignment = frozenset()
            # A static member stays in the group: its next process takes its place as it was.
            leaving = self._settings.group_instance_id is None and self._replaced is None
            if self.member_id and leaving:
                try:
                    await self._api.leave(self.member_id)
                except errors.MillstreamError as exc:
                    log.info(
                        "group %s: leave failed (%s); the session will expire", self.group_id, exc
                    )
            self.member_id, self._joined_generation = "", -1

    # --- applying rebalances (in the poll) -------------------------------------------------

    async def _start_join(self, listener: RebalanceListener) -> None:
        # Eager: nobody may get a partition in the next generation while we still read it, and
        # the commit before giving it up must reach the broker while our generation is current.
        revoked = frozenset() if self._cooperative() else self.assignment
        self.assignment -= revoked
        try:
            if revoked:
                await listener.partitions_revoked(revoked, lost=False)
        finally:
            # Only now: a heartbeat refused while the revoke ran asks for the rejoin this is.
            self._rejoin = False
            self._join_task = asyncio.ensure_future(self._join_and_sync())
            self._join_task.add_done_callback(lambda _: self._wake())

    async def _finish_join(self, task: asyncio.Task[_Synced], listener: RebalanceListener) -> None:
        try:
            synced = task.result()
        except _Fenced:
            return  # maintain() hands the partitions back as lost, then joins again
        except errors.FencedInstanceId as exc:
            self._replaced = exc
            raise
        except Exception:
            self._rejoin = True  # raised to this poll; the next one tries again
            raise
        revoked = self.assignment - synced.partitions
        added = synced.partitions - self.assignment
        self.protocol = synced.protocol
        try:
            if revoked:
                self.assignment -= revoked
                await listener.partitions_revoked(revoked, lost=False)
        finally:
            self.generation = synced.generation
            self.assignment |= added
            log.info(
                "group %s: generation %d, member %s: %d partition(s), +%d -%d",
                *(self.group_id, synced.generation, self.member_id, len(self.assignment)),
                *(len(added), len(revoked)),
            )
            if revoked and self._cooperative():
                self.request_rejoin()  # so the next generation gives them to their new owner
            await listener.partitions_assigned(added)

    async def _drop_lost(self, listener: RebalanceListener) -> None:
        error, self._fenced = self._fenced, None
        lost, self.assignment = self.assignment, frozenset()
        self.generation = self._joined_generation = -1
        if isinstance(error, errors.UnknownMember):
            self.member_id = ""
        if lost:
            log.warning("group %s: %d partition(s) lost (%s)", self.group_id, len(lost), error)
            await listener.partitions_revoked(lost, lost=True)
        self.request_rejoin()

    def _joining(self) -> bool:
        return self._join_task is not None and not self._join_task.done()

    def _cooperative(self) -> bool:
        """Whether this member keeps its partitions while it rejoins: only if every assignor
        it offers is cooperative (as in Kafka). The group may switch to any protocol it
        offers, and an eager one hands out partitions at once, so one eager assignor among
        ours means giving everything up before each join."""
        return all(a.rebalance_protocol == "cooperative" for a in self._assignors.values())

    # --- joining (in the background) -------------------------------------------------------

    async def _join_and_sync(self) -> _Synced:
        attempt = 0
        while True:
            try:
                return await self._join_once()
            except (errors.UnknownMember, errors.IllegalGeneration) as exc:
                if self.assignment:
                    self._fenced = exc
                    raise _Fenced from None
                if isinstance(exc, errors.UnknownMember):
                    self.member_id = ""
            except errors.RebalanceInProgress:
                pass  # a new rebalance began before the sync: join it
            except errors.MillstreamError as exc:
                if not exc.retriable:
                    raise
                attempt += 1
                log.warning("group %s: join failed (%s), retrying", self.group_id, exc)
                await sleep_backoff(attempt, *self._settings.retry_backoff_s)

    async def _join_once(self) -> _Synced:
        settings = self._settings
        metadata = encode_subscription(
            Subscription(
                self.topics,
                owned=tuple(sorted(self.assignment)) if self._cooperative() else (),
                generation=self.generation,
            )
        )
        joined = await self._api.join(
            self.member_id,
            settings.client_id,
            [(name, metadata) for name in self._assignors],
            session_timeout_ms=settings.session_timeout_ms,
            rebalance_timeout_ms=settings.rebalance_timeout_ms,
            group_instance_id=settings.group_instance_id,
        )
        self.member_id, self._joined_generation = joined.member_id, joined.generation
        self._watched = None
        assignments = await self._leader_assignments(joined) if joined.is_leader else None
        data = await self._api.sync(
            joined.member_id,
            joined.generation,
            assignments,
            rebalance_timeout_ms=settings.rebalance_timeout_ms,
        )
        mine = frozenset(TopicPartition(t, p) for t, p in decode_assignment(data)) if data else None
        return _Synced(joined.generation, joined.protocol, mine or frozenset())

    async def _leader_assignments(self, joined: Joined) -> dict[str, bytes]:
        assignor = self._assignors.get(joined.protocol) or assignor_for(joined.protocol)
        subscriptions = {m.member_id: _subscription_of(m) for m in joined.members}
        topics = sorted({t for s in subscriptions.values() for t in s.topics})
        counts = await self._count_partitions(topics)
        self._watched = (topics, counts)
        plan = assignor.assign(counts, subscriptions)
        return {m: encode_assignment(plan.get(m, ())) for m in subscriptions}

    async def _count_partitions(self, topics: Sequence[str]) -> dict[str, int]:
        async def count(topic: str) -> int | None:
            try:
                # Any broker knows the count; describe_topic would ask every partition's owner.
                return (await self._admin.topic_metadata(topic)).partition_count
            except errors.UnknownTopic:
                return None  # not created yet: assigned once it is

        found = await asyncio.gather(*(count(t) for t in topics))
        return {t: n for t, n in zip(topics, found, strict=True) if n is not None}

    # --- heartbeats (in the background) ----------------------------------------------------

    async def _heartbeats(self) -> None:
        settings = self._settings
        interval_s = min(settings.heartbeat_interval_ms, settings.session_timeout_ms / 3) / 1000
        next_check = time.monotonic() + _METADATA_MAX_AGE_S
        failures = 0
        while True:
            # After a failure, try again sooner: the session may be running out.
            await asyncio.sleep(min(interval_s, 0.1 * 2**failures) if failures else interval_s)
            identity = self.commit_identity()
            if identity is None or self._joining():
                continue  # no generation to speak for, or a join or sync stands for us
            if time.monotonic() - self._last_poll > settings.rebalance_timeout_ms / 1000:
                await self._leave_stalled(identity)
                continue
            try:
                await self._api.heartbeat(*identity)
                failures = 0
            except errors.GroupConflict as exc:
                self.fenced(exc, identity)
            except errors.MillstreamError as exc:
                failures += 1
                log.warning("group %s: heartbeat failed (%s)", self.group_id, exc)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + _METADATA_MAX_AGE_S
                await self._check_partitions()

    async def _leave_stalled(self, identity: tuple[str, int]) -> None:
        """The application has not polled for a rebalance timeout (Kafka's max.poll.interval):
        heartbeats alone would keep its partitions stalled for ever. Leave, so the others take
        them; the next poll hands them back as lost and joins again."""
        log.warning(
            "group %s: no poll for %.1f s, more than the rebalance timeout: leaving the group",
            self.group_id,
            time.monotonic() - self._last_poll,
        )
        self._fenced = errors.UnknownMember("left the group: the application stopped polling")
        self.member_id, self._joined_generation = "", -1
        try:
            await self._api.leave(identity[0])
        except errors.MillstreamError as exc:
            log.info("group %s: leave failed (%s); the session will expire", self.group_id, exc)

    async def _check_partitions(self) -> None:
        """The leader rebalances when a subscribed topic appears or gains partitions, as
        Kafka's does on a metadata change."""
        if self._watched is None:
            return
        topics, counts = self._watched
        try:
            now = await self._count_partitions(topics)
        except errors.MillstreamError:
            return  # the next check will tell
        if now != counts and self._watched == (topics, counts):
            log.info("group %s: partitions changed, rebalancing", self.group_id)
            self._watched = None
            self.request_rejoin()


def _subscription_of(member: JoinedMember) -> Subscription:
    try:
        return decode_subscription(member.metadata)
    except errors.InvalidRequest as exc:
        # Another client's bug: that member gets nothing rather than the group nothing.
        log.warning("member %s sent an unreadable subscription (%s)", member.member_id, exc)
        return Subscription(())
