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
members find the new coordinator, which has every committed offset and the generation, and
rejoin there. :meth:`GroupCoordinator.placement_changed` makes the clock task look at once.

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
from typing import Any, Final, Literal, TypeVar

from millstream import errors
from millstream.broker.groups.group import (
    Group,
    GroupState,
    JoinRequest,
    JoinResult,
    SyncResult,
)
from millstream.broker.groups.offset_partitions import OffsetPartitions
from millstream.broker.groups.offsets import CommittedOffset, OffsetStore
from millstream.broker.storage.log_manager import LogManager
from millstream.consumer_protocol import PROTOCOL_TYPE, decode_assignment
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
ResetTarget = Literal["earliest", "latest", "timestamp", "offsets"]


@dataclass(frozen=True, slots=True)
class GroupSettings:
    min_session_timeout_ms: int = 1_000
    max_session_timeout_ms: int = 300_000
    max_rebalance_timeout_ms: int = 300_000
    initial_rebalance_delay_ms: int = 0
    # The first rebalance of a group this broker takes over (its offsets partition moved here,
    # or the broker restarted) waits this long, so that every member that was consuming has
    # heard (its heartbeat fails) and rejoins into the same generation rather than a later one.
    takeover_rebalance_delay_ms: int = 3_000


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
        self._partitions = OffsetPartitions(logs, self._resign)
        self._groups: dict[str, Group] = {}
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
        """Stop the clock; the logs are the log manager's to close."""
        if self._clock is not None:
            self._clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock
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
                    group.tick(now)
                    self._forget_if_unused(group)
                except Exception:  # one group's bug must not stop every group's clock
                    logger.exception("group %s: tick failed", group.group_id)
            deadlines = [g.next_deadline(now) for g in self._groups.values()]
            due = min((d for d in deadlines if d is not None), default=now + 60.0)
            self._changed.clear()
            await wait_event(self._changed, max(0.0, due - now) + 0.005)

    # --- membership -----------------------------------------------------------------------

    async def join(self, group_id: str, request: JoinRequest) -> JoinResult:
        self._check_timeouts(request)
        group = self._group(group_id, create=True)
        if self._store(group_id).take_over(group_id):
            # Taken over (see GroupSettings): only a join spends it, whoever came first.
            takeover_s = self.settings.takeover_rebalance_delay_ms / 1000
            group.initial_rebalance_delay_s = max(group.initial_rebalance_delay_s, takeover_s)
        future = group.join(request, time.monotonic())
        self._changed.set()
        try:
            result = await self._answer(group, future)
        except errors.RebalanceInProgress:
            group.abandon_join(future, time.monotonic())
            raise
        # Generations outlive restarts and moves, so a member of an ended one stays fenced.
        # One write per generation, whichever member's answer gets here first.
        await _written(self._store(group_id).record_generation(group_id, result.generation))
        return result

    async def sync(
        self,
        group_id: str,
        member_id: str,
        generation: int,
        assignments: Mapping[str, bytes] | None,
    ) -> SyncResult:
        group = self._group(group_id)
        future = group.sync(member_id, generation, assignments, time.monotonic())
        self._changed.set()
        return await self._answer(group, future)

    def heartbeat(self, group_id: str, member_id: str, generation: int) -> None:
        self._group(group_id).heartbeat(member_id, generation, time.monotonic())

    def leave(self, group_id: str, member_id: str) -> None:
        group = self._group(group_id)
        group.leave(member_id, time.monotonic())
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

    def _check_timeouts(self, request: JoinRequest) -> None:
        s = self.settings
        session_ms = request.session_timeout_s * 1000
        if not s.min_session_timeout_ms <= session_ms <= s.max_session_timeout_ms:
            raise errors.InvalidSessionTimeout(
                f"session_timeout_ms must be between {s.min_session_timeout_ms} and "
                f"{s.max_session_timeout_ms}, got {session_ms:.0f}"
            )
        rebalance_ms = request.rebalance_timeout_s * 1000
        if not 1 <= rebalance_ms <= s.max_rebalance_timeout_ms:
            raise errors.InvalidSessionTimeout(
                f"rebalance_timeout_ms must be between 1 and {s.max_rebalance_timeout_ms}, "
                f"got {rebalance_ms:.0f}"
            )

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
        to: ResetTarget,
        *,
        topics: Iterable[str] | None = None,
        timestamp_ms: int | None = None,
        offsets: Iterable[OffsetEntry] = (),
        dry_run: bool = False,
    ) -> list[OffsetEntry]:
        """Move a group's committed offsets (refused while it has members); the new ones."""
        store = self._store(group_id)
        group = self._groups.get(group_id)
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
            plan = [
                self._reset_target(t, p, to, timestamp_ms)
                for t, p in self._targets(group_id, topics)
            ]
        if not dry_run and plan:
            entries = [(e.topic, e.partition, e.offset, "") for e in plan]
            await _written(store.commit(group_id, entries))
        return plan

    def _targets(self, group_id: str, topics: Iterable[str] | None) -> list[tuple[str, int]]:
        if topics is None:
            topics = sorted({t for t, _ in self._store(group_id).committed(group_id)})
            if not topics:
                raise errors.InvalidRequest(
                    f"group {group_id!r} has no committed offsets: name the topics to reset"
                )
        return [(t, p) for t in topics for p in range(self._logs.topic(t).partitions)]

    def _reset_target(
        self, topic: str, partition: int, to: ResetTarget, timestamp_ms: int | None
    ) -> OffsetEntry:
        log = self._logs.log(topic, partition)
        if to == "earliest":
            offset = log.log_start_offset
        elif to == "latest":
            offset = log.high_watermark
        elif to == "timestamp":
            if timestamp_ms is None:
                raise errors.InvalidRequest('a reset to a time needs "timestamp" (epoch ms)')
            offset = log.offset_for_timestamp(timestamp_ms)
        else:
            raise errors.InvalidRequest(
                f'"to" must be earliest, latest, timestamp or offsets, got {to!r}'
            )
        return OffsetEntry(topic, partition, offset)

    # --- administration -------------------------------------------------------------------

    def group_ids(self) -> list[str]:
        """The groups coordinated here."""
        stored = {g for store in self._partitions.stores() for g in store.groups()}
        return sorted(set(self._groups) | stored)

    def describe(self, group_id: str) -> dict[str, Any]:
        store = self._store(group_id)
        if group_id not in self._groups and group_id not in store.groups():
            raise errors.UnknownGroup(f"no group {group_id!r}")
        group = self._groups.get(group_id) or Group(group_id, store.generation(group_id))
        owners, members = {}, []
        decoded = group.protocol_type == PROTOCOL_TYPE
        assignments = group.assignments()
        for member in group.members.values():
            request = member.request
            assignment = None
            if decoded and member.member_id in assignments:
                assignment = _decode(assignments[member.member_id])
                for tp in assignment:
                    owners[tp] = member.member_id
            members.append(
                {
                    "member_id": member.member_id,
                    "client_id": request.client_id,
                    "client_host": request.client_host,
                    "session_timeout_ms": round(request.session_timeout_s * 1000),
                    "assignment": None if assignment is None else _by_topic(assignment),
                }
            )
        offsets = self.lag(group_id, owners)
        known = [o["lag"] for o in offsets if o["lag"] is not None]
        return {
            "group": group_id,
            "state": str(group.state),
            "protocol_type": group.protocol_type,
            "protocol": group.protocol,
            "generation": group.generation,
            "leader": group.leader,
            "members": members,
            "offsets": offsets,
            "lag": sum(known) if known else None,
        }

    def summary(self, group_id: str) -> dict[str, Any]:
        group = self._groups.get(group_id)
        if group is None:
            return {"group": group_id, "state": "Empty", "protocol_type": None, "members": 0}
        return {
            "group": group_id,
            "state": str(group.state),
            "protocol_type": group.protocol_type,
            "members": len(group.members),
        }

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
        group = self._groups.get(group_id)
        if group is None and group_id not in store.groups():
            raise errors.UnknownGroup(f"no group {group_id!r}")
        if group is not None:
            group.mark_dead()  # refused while members are live
            del self._groups[group_id]
        await _written(store.delete_group(group_id))

    def lag(
        self, group_id: str, owners: Mapping[tuple[str, int], str] | None = None
    ) -> list[dict[str, Any]]:
        """Per partition committed or owned: committed offset, log end, lag, owner."""
        owners = owners or {}
        committed = self._store(group_id).committed(group_id)
        rows = []
        for topic, partition in sorted(set(committed) | set(owners)):
            entry = committed.get((topic, partition))
            try:
                end: int | None = self._logs.log(topic, partition).high_watermark
            except errors.NotFound:
                end = None  # the topic was deleted since
            lag = None
            if entry is not None and end is not None:
                lag = max(0, end - entry.offset)
            rows.append(
                {
                    "topic": topic,
                    "partition": partition,
                    "committed": None if entry is None else entry.offset,
                    "log_end_offset": end,
                    "lag": lag,
                    "member_id": owners.get((topic, partition)),
                }
            )
        return rows

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
        group = self._groups.get(group_id)
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


def _decode(assignment: bytes) -> list[tuple[str, int]]:
    try:
        return decode_assignment(assignment) if assignment else []
    except errors.MillstreamError:
        return []  # the leader's own format; nothing the broker can show


def _by_topic(partitions: Iterable[tuple[str, int]]) -> list[dict[str, Any]]:
    topics: dict[str, list[int]] = {}
    for topic, partition in partitions:
        topics.setdefault(topic, []).append(partition)
    return [{"topic": t, "partitions": sorted(ps)} for t, ps in sorted(topics.items())]
