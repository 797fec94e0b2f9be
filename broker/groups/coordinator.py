"""The group coordinator: the consumer groups this broker coordinates, their offsets and clocks.

Created by the server next to the log manager and used by the HTTP routes in
``broker/http/groups.py`` (and later by the Kafka wire protocol's group APIs). It owns the
:class:`~millstream.broker.groups.group.Group` state machines, feeds them time (one task that
sleeps until the next session expiry or join deadline of any group), fences offset commits
through them, and keeps committed offsets in an
:class:`~millstream.broker.groups.offsets.OffsetStore` per partition of the group-offsets
topic (:mod:`millstream.internal_topics`). Offsets are checked against the topics of the
:class:`~millstream.broker.storage.log_manager.LogManager`, which also gives lag.

A group belongs to one partition of the group-offsets topic
(:func:`~millstream.internal_topics.group_offsets_partition`), and this broker coordinates it
while the log manager serves that partition here. When the partition comes here (at start, or
a move completes) its store is replayed; when it goes (moved away, or deleted) the groups of
that partition are given up: their pending answers fail with ``not_coordinator``, and their
members find the new coordinator, which has every committed offset and the generation. It
also has the membership of a Stable group (:mod:`.membership`, stored when a generation's
assignment is complete, cleared when a rebalance begins or the group empties), restored as
soon as the partition is loaded, so those members carry on in their generation; the members
of a group taken over in the middle of a rebalance rejoin.
:meth:`GroupCoordinator.placement_changed` makes the clock task look at once.

A standalone broker creates the group-offsets topic itself (:func:`ensure_offsets_topic`); in
a cluster the operator places it, and until then groups are ``coordinator_not_available``.

A group exists while it has members or committed offsets; ``Empty`` groups without offsets
are forgotten.

Not thread-safe: used on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from millstream import errors
from millstream.broker.groups import membership, resets, views
from millstream.broker.groups.group import (
    Group,
    GroupState,
    JoinRequest,
    JoinResult,
    SyncResult,
)
from millstream.broker.groups.offset_partitions import OffsetPartitions
from millstream.broker.groups.offsets import CommittedOffset, OffsetStore
from millstream.broker.groups.settings import GroupSettings
from millstream.broker.storage.log_manager import LogManager
from millstream.internal_topics import (
    GROUP_OFFSETS_CONFIG,
    GROUP_OFFSETS_PARTITIONS,
    GROUP_OFFSETS_TOPIC,
    group_offsets_partition,
)
from millstream.waits import wait_event

logger = logging.getLogger(__name__)

_GROUP_ID: Final = re.compile(r"[a-zA-Z0-9._-]{1,249}")
# A member's join or sync is answered within its rebalance timeout; this much more is allowed
# before the answer is given up (the member then rejoins), as Kafka clients do.
_ANSWER_MARGIN_S: Final = 5.0

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class OffsetEntry:
    topic: str
    partition: int
    offset: int
    metadata: str = ""


def check_group_id(group_id: str) -> None:
    if not _GROUP_ID.fullmatch(group_id):
        raise errors.InvalidGroupId(
            f"group id must be 1-249 characters of a-z, A-Z, 0-9, '.', '_' or '-', got {group_id!r}"
        )


def ensure_offsets_topic(logs: LogManager) -> None:
    """Create the group-offsets topic on a standalone broker (every partition hosted here)."""
    if GROUP_OFFSETS_TOPIC not in logs.topic_names():
        logs.create_topic(GROUP_OFFSETS_TOPIC, GROUP_OFFSETS_PARTITIONS, GROUP_OFFSETS_CONFIG)


class GroupCoordinator:
    def __init__(self, logs: LogManager, settings: GroupSettings | None = None) -> None:
        """Replays the group-offsets partitions served here (blocking: before serving)."""
        self.settings = settings or GroupSettings()
        self._logs = logs
        self._partitions = OffsetPartitions(logs, self._resign, self._restore_all)
        self._groups: dict[str, Group] = {}
        self._unreadable: set[tuple[str, int]] = set()  # stored memberships that did not parse
        self._changed = asyncio.Event()
        self._clock: asyncio.Task[None] | None = None
        self._partitions.follow(at_once=True)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._clock = asyncio.get_running_loop().create_task(self._run_clock())

    async def adopt_legacy_offsets(self, directory: Path) -> None:
        """Adopt the offsets kept before the group-offsets topic (see :mod:`.offset_partitions`)."""
        await self._partitions.adopt_legacy(directory)

    async def close(self) -> None:
        """Stop the clock and let the groups' records being written finish (whoever asked
        for them hears how); the logs are the log manager's to close."""
        if self._clock is not None:
            self._clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock
        for store in self._partitions.stores():
            await store.settle()
        await self._partitions.close()

    async def maintain(self) -> None:
        """Housekeeping: compact each offsets partition when it is mostly dead records."""
        for store in self._partitions.stores():
            if store.needs_compaction() and not store.log.closed and not store.log.sealed:
                await store.compact()

    def placement_changed(self) -> None:
        """Partitions may have come or gone: look at once (the cluster node calls this)."""
        self._changed.set()

    async def _run_clock(self) -> None:
        while True:
            try:
                self._partitions.follow()
            except Exception:  # never stop the clock; the next tick tries again
                logger.exception("group offsets: following the placement failed")
            now = time.monotonic()
            for group in list(self._groups.values()):
                try:
                    before = (group.state, group.generation)
                    group.tick(now)
                    if (group.state, group.generation) != before:
                        self._note_change(group)
                    self._forget_if_unused(group)
                except Exception:  # one group's bug must not stop every group's clock
                    logger.exception("group %s: tick failed", group.group_id)
            deadlines = [g.next_deadline(now) for g in self._groups.values()]
            due = min((d for d in deadlines if d is not None), default=now + 60.0)
            self._changed.clear()
            await wait_event(self._changed, max(0.0, due - now) + 0.005)

    # --- membership -----------------------------------------------------------------------

    async def join(self, group_id: str, request: JoinRequest) -> JoinResult:
        self.settings.check_timeouts(request)
        group = self._group(group_id, create=True)
        if self._store(group_id).take_over(group_id):
            # Taken over (see GroupSettings): only a join spends it, whoever came first.
            takeover_s = self.settings.takeover_rebalance_delay_ms / 1000
            group.initial_rebalance_delay_s = max(group.initial_rebalance_delay_s, takeover_s)
        future = group.join(request, time.monotonic())
        self._note_change(group)
        self._changed.set()
        try:
            result = await self._answer(group, future)
        except errors.RebalanceInProgress:
            group.abandon_join(future, time.monotonic())
            self._note_change(group)
            raise
        # Generations outlive restarts and moves, so a member of an ended one stays fenced.
        # One write per generation, shared by its members' answers: none is given before it
        # is durable (or a coordinator taking over could hand the same number out again).
        await _written(self._store(group_id).record_generation(group_id, result.generation))
        # A static member's new process took its place in the generation: store who is in it.
        took_place = request.group_instance_id is not None and not request.member_id
        if (
            took_place
            and group.state is GroupState.STABLE
            and group.generation == result.generation
        ):
            await self._remember(group)
        return result

    async def sync(
        self,
        group_id: str,
        member_id: str,
        generation: int,
        assignments: Mapping[str, bytes] | None,
    ) -> SyncResult:
        group = self._group(group_id)
        was_stable = group.state is GroupState.STABLE
        future = group.sync(member_id, generation, assignments, time.monotonic())
        # Only the leader's sync turns the group Stable: its answer stores the membership
        # (the others' are answered as they were, rather than each building it again).
        turned_stable = not was_stable and group.state is GroupState.STABLE
        self._changed.set()
        result = await self._answer(group, future)
        if turned_stable and group.generation == generation:
            await self._remember(group)
        return result

    def heartbeat(self, group_id: str, member_id: str, generation: int) -> None:
        self._group(group_id).heartbeat(member_id, generation, time.monotonic())

    def leave(self, group_id: str, member_id: str) -> None:
        group = self._group(group_id)
        group.leave(member_id, time.monotonic())
        self._note_change(group)
        self._changed.set()

    async def _answer(self, group: Group, future: asyncio.Future[T]) -> T:
        members = group.members.values()
        limit = max((m.request.rebalance_timeout_s for m in members), default=0.0)
        try:
            return await asyncio.wait_for(asyncio.shield(future), limit + _ANSWER_MARGIN_S)
        except TimeoutError:
            raise errors.RebalanceInProgress(
                f"group {group.group_id!r} did not complete its rebalance in time; rejoin"
            ) from None

    # --- offsets --------------------------------------------------------------------------

    async def commit(
        self, group_id: str, member_id: str, generation: int, entries: Iterable[OffsetEntry]
    ) -> None:
        entries = list(entries)
        if not entries:
            raise errors.InvalidRequest("no offsets to commit")
        for entry in entries:
            # Unknown topic or partition: 404. Hosted here or by another broker of the cluster.
            self._logs.check_partition(entry.topic, entry.partition)
        group = self._group(group_id, create=True)
        group.check_commit(member_id, generation, time.monotonic())
        await _written(
            self._store(group_id).commit(
                group_id, [(e.topic, e.partition, e.offset, e.metadata) for e in entries]
            )
        )

    def committed(
        self, group_id: str, topics: Iterable[str] | None = None
    ) -> dict[tuple[str, int], CommittedOffset]:
        wanted = None if topics is None else set(topics)
        return {
            tp: entry
            for tp, entry in self._store(group_id).committed(group_id).items()
            if wanted is None or tp[0] in wanted
        }

    async def reset_offsets(
        self,
        group_id: str,
        to: resets.ResetTarget,
        *,
        topics: Iterable[str] | None = None,
        timestamp_ms: int | None = None,
        offsets: Iterable[OffsetEntry] = (),
        dry_run: bool = False,
    ) -> list[OffsetEntry]:
        """Move a group's committed offsets (refused while it has members); the new ones."""
        store = self._store(group_id)
        group = self._held(group_id)
        if group is not None and group.members:
            raise errors.GroupNotEmpty(
                f"group {group_id!r} has {len(group.members)} live member(s): stop them first"
            )
        if to == "offsets":
            plan = list(offsets)
            if not plan:
                raise errors.InvalidRequest('"offsets" must list the offsets to reset to')
            for entry in plan:
                self._logs.check_partition(entry.topic, entry.partition)
        else:
            committed = store.committed(group_id)
            plan = [
                OffsetEntry(t, p, resets.offset_at(self._logs.log(t, p), to, timestamp_ms))
                for t, p in resets.reset_partitions(
                    self._logs, group_id, (t for t, _ in committed), topics
                )
            ]
        if not dry_run and plan:
            entries = [(e.topic, e.partition, e.offset, "") for e in plan]
            await _written(store.commit(group_id, entries))
        return plan

    # --- administration -------------------------------------------------------------------

    def group_ids(self) -> list[str]:
        """The groups coordinated here."""
        stored = {g for store in self._partitions.stores() for g in store.groups()}
        return sorted(set(self._groups) | stored)

    def describe(self, group_id: str) -> dict[str, Any]:
        store = self._store(group_id)
        if group_id not in self._groups and group_id not in store.groups():
            raise errors.UnknownGroup(f"no group {group_id!r}")
        group = self._held(group_id) or Group(group_id, store.generation(group_id))
        return views.describe(group, store.committed(group_id), self._logs)

    def summary(self, group_id: str) -> dict[str, Any]:
        try:
            group = self._held(group_id)
        except errors.MillstreamError:  # its partition is leaving or loading
            group = self._groups.get(group_id)
        return views.summary(group_id, group)

    def rebalances(self) -> dict[str, int]:
        return {g.group_id: g.rebalances for g in self._groups.values()}

    async def forget_topic(self, topic: str) -> None:
        """A deleted topic's committed offsets go too, or a new topic of the same name would
        start from them (as Kafka drops them). Each broker drops them from the partitions it
        serves."""
        for store in self._partitions.stores():
            await store.forget_topic(topic)

    async def delete(self, group_id: str) -> None:
        store = self._store(group_id)
        group = self._held(group_id)
        if group is None and group_id not in store.groups():
            raise errors.UnknownGroup(f"no group {group_id!r}")
        if group is not None:
            group.mark_dead()  # refused while members are live
            del self._groups[group_id]
        await _written(store.delete_group(group_id))

    def lag(self, group_id: str) -> list[dict[str, Any]]:
        """Per partition committed: committed offset, log end, lag (:func:`.views.lag`)."""
        return views.lag(self._store(group_id).committed(group_id), self._logs)

    # --- inside ---------------------------------------------------------------------------

    def _store(self, group_id: str) -> OffsetStore:
        check_group_id(group_id)
        return self._partitions.store_for(group_id)

    def _resign(self, partition: int, partitions: int) -> None:
        """The partition left: give up its groups (their members find the new coordinator)."""
        gone = errors.NotCoordinator(
            f"partition {partition} of {GROUP_OFFSETS_TOPIC} left this broker: find the "
            "group's coordinator again"
        )
        for group_id, group in list(self._groups.items()):
            if not partitions or group_offsets_partition(group_id, partitions) == partition:
                group.abandon(gone)
                del self._groups[group_id]

    def _group(self, group_id: str, create: bool = False) -> Group:
        store = self._store(group_id)
        group = self._held(group_id)
        if group is None:
            if not create and group_id not in store.groups():
                raise errors.UnknownMember(f"group {group_id!r} has no members; join it first")
            group = Group(
                group_id,
                generation=store.generation(group_id),
                initial_rebalance_delay_s=self.settings.initial_rebalance_delay_ms / 1000,
            )
            self._groups[group_id] = group
        return group

    def _held(self, group_id: str) -> Group | None:
        """The group as this broker has it: in memory, or else restored from its stored
        membership (the group was Stable when another coordinator, or this broker before a
        restart, last had it). None: it has no members here."""
        group = self._groups.get(group_id)
        if group is not None:
            return group
        store = self._store(group_id)
        stored = store.membership(group_id)
        generation = store.generation(group_id)
        if stored is None or (group_id, generation) in self._unreadable:
            return None
        try:
            group = membership.restore(
                group_id,
                generation,
                stored,
                time.monotonic(),
                initial_rebalance_delay_s=self.settings.initial_rebalance_delay_ms / 1000,
            )
        except (ValueError, KeyError, TypeError) as exc:
            self._unreadable.add((group_id, generation))
            logger.error(
                "group %s: stored membership unreadable (%s); members rejoin", group_id, exc
            )
            return None
        store.take_over(group_id)  # carried on: its first rebalance has nobody to wait for
        logger.info(
            "group %s: taken over in generation %d with %d member(s)",
            *(group_id, group.generation, len(group.members)),
        )
        self._groups[group_id] = group
        self._changed.set()  # the clock now times its members' sessions
        return group

    def _restore_all(self, store: OffsetStore) -> None:
        """A partition came (at start, or a move completed): its Stable groups are back at
        once, so their members' sessions run from now and one that went meanwhile is evicted
        a session timeout later, not whenever the group is next asked for."""
        for group_id in store.groups():
            if group_id not in self._groups and store.membership(group_id) is not None:
                try:
                    self._held(group_id)
                except errors.MillstreamError as exc:  # not this store's group after all
                    logger.error("group %s: not restored (%s)", group_id, exc.message)

    async def _remember(self, group: Group) -> None:
        """Store the membership of a group that just turned Stable. Best effort, as the
        members are answered either way: without it, a coordinator that takes the group over
        has them rejoin."""
        store = self._store(group.group_id)
        try:
            await store.record_membership(
                group.group_id, group.generation, membership.snapshot(group)
            )
        except errors.MillstreamError as exc:
            logger.warning("group %s: membership not stored (%s)", group.group_id, exc.message)

    def _note_change(self, group: Group) -> None:
        """Keep the group's stored record in step once it is not Stable: a rebalance began
        (the stored membership is not the group any more) or it emptied (a newer generation,
        no members). The store takes it into account at once, so nobody is restored from the
        record it replaces; it is written in the background (the clock never waits on the
        disk). A group whose partition is leaving cannot be written: the next coordinator
        restores its last Stable membership, and evicts whoever left meanwhile once their
        session times out."""
        if group.state is GroupState.STABLE:
            return
        try:
            store = self._store(group.group_id)
        except errors.MillstreamError:
            return
        write = store.end_membership(group.group_id, group.generation)

        def written(done: asyncio.Future[None]) -> None:
            failure = None if done.cancelled() else done.exception()
            if failure is not None:
                logger.warning("group %s: not stored (%s)", group.group_id, failure)

        write.add_done_callback(written)

    def _forget_if_unused(self, group: Group) -> None:
        if group.state is GroupState.EMPTY and not group.members:
            del self._groups[group.group_id]


async def _written(write: Awaitable[None]) -> None:
    """Await a write to an offsets partition. One sealed meanwhile (it is moving to another
    broker) refuses it as not served; to the group's members that means not coordinated."""
    try:
        await write
    except errors.NotLeader as exc:
        raise errors.NotCoordinator(f"{exc.message}: find the group's coordinator again") from None
