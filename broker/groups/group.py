"""One consumer group's membership: the state machine of Kafka's classic group protocol.

Owned by :class:`~millstream.broker.groups.coordinator.GroupCoordinator`, which feeds it the
members' calls (join, sync, heartbeat, leave) and the passage of time (``tick``), and which
serves the HTTP API from it (later, the Kafka wire protocol too: the calls here are JoinGroup,
SyncGroup, Heartbeat and LeaveGroup, with their semantics and error cases). No I/O and no
clock of its own: every call takes ``now`` in seconds on a monotonic clock, so tests drive
time by hand. Join and sync answer with futures that a later call (or ``tick``) resolves.

States and the rebalance barrier::

    Empty ──join──▶ PreparingRebalance ──all known members rejoined, or the rebalance
      ▲                  ▲      │        timeout passed (stragglers are removed)──┐
      │ last member      │      ▼                                                  │
      └── leaves ──── (join, leave, ◀── Stable ◀── leader's sync ── CompletingRebalance
                       expiry)

A generation ends when a rebalance starts: from then on, syncs and heartbeats of the ended
generation are answered ``rebalance_in_progress`` or ``illegal_generation``, and the next
generation's assignment is handed out only after every member that stays has rejoined. So two
members of one generation never hold the same partition, given an assignment that gives each
partition to one member (the leader's job). Members are evicted when they send nothing for
their session timeout; a member waiting in a join or sync is alive by definition.

Protocol metadata and assignments are opaque bytes here (for the ``consumer`` protocol type,
Kafka's ConsumerProtocol encodings; see :mod:`millstream.consumer_protocol`).

Not thread-safe: used on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import enum
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from millstream import errors
from millstream.consumer_protocol import PROTOCOL_TYPE, decode_subscription

_REPLACED_KEPT = 100  # replaced static member ids remembered per group


def _same_subscription(before: JoinRequest, after: JoinRequest) -> bool:
    """Whether a static member's new process asks for what its old one did: the same
    protocols and, for the consumer protocol, the same topics (what it owned, and when, are
    bound to differ: a new process owns nothing)."""
    if [n for n, _ in before.protocols] != [n for n, _ in after.protocols]:
        return False
    if after.protocol_type != PROTOCOL_TYPE:
        return before.protocols == after.protocols
    try:
        return all(
            set(decode_subscription(a).topics) == set(decode_subscription(b).topics)
            for (_, a), (_, b) in zip(before.protocols, after.protocols, strict=True)
        )
    except errors.MillstreamError:
        return before.protocols == after.protocols


class GroupState(enum.StrEnum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


@dataclass(frozen=True, slots=True)
class JoinRequest:
    member_id: str  # "" for a new member
    client_id: str
    client_host: str
    session_timeout_s: float
    rebalance_timeout_s: float
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]  # (name, metadata), in the member's preference
    # Static membership (Kafka's group.instance.id, KIP-345): a process that restarts with
    # the same instance id takes its old member's place, without a rebalance.
    group_instance_id: str | None = None


@dataclass(frozen=True, slots=True)
class JoinedMember:
    member_id: str
    client_id: str
    metadata: bytes


@dataclass(frozen=True, slots=True)
class JoinResult:
    member_id: str
    generation: int
    protocol_type: str
    protocol: str
    leader: str
    members: tuple[JoinedMember, ...]  # for the leader only: everyone's metadata


@dataclass(frozen=True, slots=True)
class SyncResult:
    protocol_type: str
    protocol: str
    assignment: bytes


@dataclass(slots=True)
class Member:
    member_id: str
    request: JoinRequest
    last_heard: float
    assignment: bytes = b""
    joining: asyncio.Future[JoinResult] | None = None
    syncing: asyncio.Future[SyncResult] | None = None
    joined: bool = False  # has had a join answer, so it knows its member id

    def metadata_for(self, protocol: str) -> bytes:
        return dict(self.request.protocols)[protocol]

    @property
    def waiting(self) -> bool:
        return self.joining is not None or self.syncing is not None

    def expired(self, now: float) -> bool:
        return not self.waiting and now - self.last_heard > self.request.session_timeout_s


@dataclass(slots=True)
class Group:
    group_id: str
    generation: int = 0
    # How long a rebalance out of Empty waits for more members (Kafka's
    # group.initial.rebalance.delay.ms), so that a fleet starting together joins in one round.
    initial_rebalance_delay_s: float = 0.0
    state: GroupState = GroupState.EMPTY
    protocol_type: str | None = None
    protocol: str | None = None
    leader: str | None = None
    members: dict[str, Member] = field(default_factory=dict)
    rebalances: int = 0  # started since this broker began, for metrics
    # Member ids a restarted static member took the place of (the latest few): their calls
    # are answered fenced_instance_id, so the old process stops instead of rejoining.
    replaced: dict[str, str] = field(default_factory=dict)
    _join_deadline: float = 0.0  # stragglers are dropped from the rebalance after this
    _join_not_before: float = 0.0  # the initial delay
    _sync_deadline: float = 0.0  # the leader's assignment is due by then

    # --- the members' calls ---------------------------------------------------------------

    def join(self, request: JoinRequest, now: float) -> asyncio.Future[JoinResult]:
        self._check_alive()
        if request.member_id in self.replaced:
            raise self._fenced_error(request.member_id)
        if self.members and request.protocol_type != self.protocol_type:
            raise errors.InconsistentGroupProtocol(
                f"group {self.group_id!r} uses protocol type {self.protocol_type!r}, "
                f"not {request.protocol_type!r}"
            )
        static = None
        if not request.member_id and request.group_instance_id is not None:
            static = self._static_member(request.group_instance_id)
        skip = request.member_id if static is None else static.member_id
        if self.members and not self._supported_by_all(request, skip=skip):
            raise errors.InconsistentGroupProtocol(
                f"none of {[name for name, _ in request.protocols]} is supported by every "
                f"member of group {self.group_id!r}"
            )
        if static is not None:
            # A static member's new process: a Stable group with nothing changed carries on,
            # unless it was the leader, whose plan the new process never saw (it rebalances,
            # so that it watches what it assigned, as any leader rejoining does).
            unchanged = static.member_id != self.leader and _same_subscription(
                static.request, request
            )
            member = self._take_place(static, request, now)
        else:
            known = request.member_id in self.members
            member = self._member_for(request, now)
            unchanged = known and self._unchanged(member, request)
        if member.joining is not None:  # a retried join replaces the one still waiting
            member.joining.set_exception(errors.RebalanceInProgress("replaced by a newer join"))
        future: asyncio.Future[JoinResult] = asyncio.get_running_loop().create_future()
        member.joining = future
        if unchanged and self.state is GroupState.STABLE:
            # A follower rejoining with what it had: nothing to rebalance (as Kafka does).
            member.joining = None
            member.request = request  # its timeouts may have changed
            future.set_result(self._join_result(member))
            return future
        member.request = request
        if self.state is not GroupState.PREPARING_REBALANCE:
            self._prepare_rebalance(now)
        self.tick(now)
        return future

    def sync(
        self,
        member_id: str,
        generation: int,
        assignments: Mapping[str, bytes] | None,
        now: float,
    ) -> asyncio.Future[SyncResult]:
        member = self._current_member(member_id, generation, now)
        future: asyncio.Future[SyncResult] = asyncio.get_running_loop().create_future()
        if self.state is GroupState.STABLE:
            future.set_result(self._sync_result(member))
            return future
        # CompletingRebalance: wait for the leader's assignment (or bring it).
        if member.syncing is not None:
            member.syncing.set_exception(errors.RebalanceInProgress("replaced by a newer sync"))
        member.syncing = future
        if member_id == self.leader and assignments is not None:
            for other in self.members.values():
                other.assignment = assignments.get(other.member_id, b"")
            self.state = GroupState.STABLE
            for other in self.members.values():
                if other.syncing is not None:
                    other.syncing.set_result(self._sync_result(other))
                    other.syncing = None
                    other.last_heard = now
        return future

    def heartbeat(self, member_id: str, generation: int, now: float) -> None:
        self._current_member(member_id, generation, now)

    def leave(self, member_id: str, now: float) -> None:
        self._check_alive()
        if member_id in self.replaced:
            raise self._fenced_error(member_id)
        if member_id not in self.members:
            raise errors.UnknownMember(f"{member_id!r} is not a member of {self.group_id!r}")
        self._remove(member_id, errors.UnknownMember("the member left the group"), now)
        self.tick(now)  # the others may all have rejoined already

    def abandon_join(self, future: asyncio.Future[JoinResult], now: float) -> None:
        """The caller gave up waiting for ``future``. A member that never had a join answer
        cannot know its id, so it is removed: it would otherwise linger and be assigned
        partitions it never reads (the client rejoins as a new member)."""
        for member in list(self.members.values()):
            if member.joining is future and not member.joined:
                self._remove(member.member_id, errors.RebalanceInProgress("join abandoned"), now)
                self.tick(now)
                return

    def check_commit(self, member_id: str, generation: int, now: float) -> None:
        """Fencing for an offset commit: only the current generation's members may commit, or
        anyone (member id "", generation -1) while the group has no members."""
        self._check_alive()
        if not member_id and generation < 0:
            if self.members:
                raise errors.UnknownMember(
                    f"group {self.group_id!r} has members: commit as one of them"
                )
            return
        self._current_member(member_id, generation, now, committing=True)

    # --- time -----------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Evict members whose session expired and finish a join phase that can finish."""
        for member in [m for m in self.members.values() if m.expired(now)]:
            self._remove(
                member.member_id,
                errors.UnknownMember("the member's session timed out"),
                now,
            )
        if self.state is GroupState.PREPARING_REBALANCE:
            all_joined = all(m.joining is not None for m in self.members.values())
            if (all_joined and now >= self._join_not_before) or now >= self._join_deadline:
                self._complete_join(now)
        elif self.state is GroupState.COMPLETING_REBALANCE and now >= self._sync_deadline:
            # The leader's assignment never came (a leader that heartbeats but does not sync):
            # drop whoever has not synced and start over, rather than wait for ever.
            for member in [m for m in self.members.values() if m.syncing is None]:
                self._remove(member.member_id, errors.UnknownMember("no sync in time"), now)
            if self.state is GroupState.COMPLETING_REBALANCE:
                self._prepare_rebalance(now)

    def next_deadline(self, now: float) -> float | None:
        """When ``tick`` next has something to do (None: only a call can change anything)."""
        times = [
            m.last_heard + m.request.session_timeout_s
            for m in self.members.values()
            if not m.waiting
        ]
        if self.state is GroupState.COMPLETING_REBALANCE:
            times.append(self._sync_deadline)
        if self.state is GroupState.PREPARING_REBALANCE:
            times.append(self._join_deadline)
            if self._join_not_before > now:
                times.append(self._join_not_before)
        return min(times, default=None)

    # --- administration -------------------------------------------------------------------

    def abandon(self, reason: errors.MillstreamError) -> None:
        """This broker no longer coordinates the group: fail every pending answer."""
        for member in self.members.values():
            for future in (member.joining, member.syncing):
                if future is not None and not future.done():
                    future.set_exception(reason)

    def mark_dead(self) -> None:
        """The group was deleted: every later call on this object is refused."""
        if self.members:
            raise errors.GroupNotEmpty(f"group {self.group_id!r} has live members")
        self.state = GroupState.DEAD

    def assignments(self) -> dict[str, bytes]:
        """Each member's assignment in the current generation (Stable only)."""
        if self.state is not GroupState.STABLE:
            return {}
        return {m.member_id: m.assignment for m in self.members.values()}

    # --- inside ---------------------------------------------------------------------------

    def _static_member(self, instance_id: str) -> Member | None:
        return next(
            (m for m in self.members.values() if m.request.group_instance_id == instance_id),
            None,
        )

    def _take_place(self, old: Member, request: JoinRequest, now: float) -> Member:
        """A static member's new process takes the old member's place under a new member id
        (the old id is fenced), with its assignment: in a Stable group that it carries on
        in, it is handed that at its sync."""
        for pending in (old.joining, old.syncing):
            if pending is not None and not pending.done():
                pending.set_exception(self._fenced_error(old.member_id))
        del self.members[old.member_id]
        self.replaced[old.member_id] = request.group_instance_id or ""
        while len(self.replaced) > _REPLACED_KEPT:
            del self.replaced[next(iter(self.replaced))]
        member_id = f"{request.client_id or 'member'}-{uuid.uuid4()}"
        member = Member(member_id, request, now, old.assignment, joined=True)
        self.members[member_id] = member
        if self.leader == old.member_id:
            self.leader = member_id
        return member

    def _fenced_error(self, member_id: str) -> errors.FencedInstanceId:
        return errors.FencedInstanceId(
            f"{member_id!r} of group {self.group_id!r} was replaced by a new process with its "
            f"group instance id {self.replaced.get(member_id, '')!r}; this one must stop"
        )

    def _member_for(self, request: JoinRequest, now: float) -> Member:
        if request.member_id:
            member = self.members.get(request.member_id)
            if member is None:
                raise errors.UnknownMember(
                    f"{request.member_id!r} is not a member of group {self.group_id!r}; "
                    "join again without a member id"
                )
            member.last_heard = now
            return member
        if not self.members:
            self.protocol_type = request.protocol_type  # the first member sets the type
        prefix = request.client_id or "member"
        member_id = f"{prefix}-{uuid.uuid4()}"
        member = Member(member_id, request, now)
        self.members[member_id] = member
        return member

    def _unchanged(self, member: Member, request: JoinRequest) -> bool:
        return member.member_id != self.leader and member.request.protocols == request.protocols

    def _supported_by_all(self, request: JoinRequest, skip: str) -> bool:
        names = {name for name, _ in request.protocols}
        for member in self.members.values():
            if member.member_id != skip:
                names &= {name for name, _ in member.request.protocols}
        return bool(names)

    def _current_member(
        self, member_id: str, generation: int, now: float, committing: bool = False
    ) -> Member:
        self._check_alive()
        member = self.members.get(member_id)
        if member is None:
            if member_id in self.replaced:
                raise self._fenced_error(member_id)
            raise errors.UnknownMember(
                f"{member_id!r} is not a member of group {self.group_id!r}; join again"
            )
        if generation != self.generation:
            raise errors.IllegalGeneration(
                f"generation {generation} has ended; group {self.group_id!r} is at "
                f"{self.generation}: join again"
            )
        member.last_heard = now
        # A commit is welcome while the group prepares a rebalance: members commit what they
        # processed before they give partitions up. Not before the new assignment is out.
        if self.state is GroupState.PREPARING_REBALANCE and not committing:
            raise errors.RebalanceInProgress(f"group {self.group_id!r} is rebalancing: rejoin")
        if self.state is GroupState.COMPLETING_REBALANCE and committing:
            raise errors.RebalanceInProgress(f"group {self.group_id!r} is rebalancing")
        return member

    def _check_alive(self) -> None:
        if self.state is GroupState.DEAD:
            raise errors.UnknownMember(f"group {self.group_id!r} was deleted; join again")

    def _prepare_rebalance(self, now: float) -> None:
        rebalance_from_empty = self.state is GroupState.EMPTY
        self.state = GroupState.PREPARING_REBALANCE
        self.rebalances += 1
        timeout = max(m.request.rebalance_timeout_s for m in self.members.values())
        self._join_deadline = now + timeout
        delay = self.initial_rebalance_delay_s if rebalance_from_empty else 0.0
        self._join_not_before = now + min(delay, timeout)
        # The ended generation's syncs cannot complete any more.
        for member in self.members.values():
            if member.syncing is not None:
                member.syncing.set_exception(
                    errors.RebalanceInProgress(f"group {self.group_id!r} is rebalancing: rejoin")
                )
                member.syncing = None

    def _complete_join(self, now: float) -> None:
        for member in [m for m in self.members.values() if m.joining is None]:
            # It did not rejoin in time: it is out, as if its session had expired.
            del self.members[member.member_id]
        self.generation += 1
        if not self.members:
            self._become_empty()
            return
        self.protocol = self._elect_protocol()
        if self.leader not in self.members:
            self.leader = next(iter(self.members))  # the longest-standing member
        self.state = GroupState.COMPLETING_REBALANCE
        self._sync_deadline = now + max(
            m.request.rebalance_timeout_s for m in self.members.values()
        )
        for member in self.members.values():
            member.assignment = b""
            member.last_heard = now
            member.joined = True
            if member.joining is not None:
                member.joining.set_result(self._join_result(member))
                member.joining = None

    def _elect_protocol(self) -> str:
        # Every member votes for the protocol it prefers among those all of them support; the
        # most votes win, ties go to the protocol that comes first for the leader-to-be.
        candidates = set.intersection(
            *({name for name, _ in m.request.protocols} for m in self.members.values())
        )
        votes: dict[str, int] = dict.fromkeys(candidates, 0)
        for member in self.members.values():
            favourite = next(name for name, _ in member.request.protocols if name in candidates)
            votes[favourite] += 1
        order = [name for name, _ in next(iter(self.members.values())).request.protocols]
        return max(sorted(candidates, key=order.index), key=lambda name: votes[name])

    def _remove(self, member_id: str, reason: errors.MillstreamError, now: float) -> None:
        member = self.members.pop(member_id)
        for future in (member.joining, member.syncing):
            if future is not None and not future.done():
                future.set_exception(reason)
        if self.leader == member_id:
            self.leader = None
        if self.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            if self.members:
                self._prepare_rebalance(now)
            else:
                self.generation += 1
                self._become_empty()
        elif self.state is GroupState.PREPARING_REBALANCE and not self.members:
            self.generation += 1
            self._become_empty()

    def _become_empty(self) -> None:
        self.state = GroupState.EMPTY
        self.protocol = self.leader = None
        self.protocol_type = None

    def _join_result(self, member: Member) -> JoinResult:
        assert self.protocol is not None and self.protocol_type is not None
        everyone: Sequence[JoinedMember] = ()
        if member.member_id == self.leader:
            everyone = [
                JoinedMember(m.member_id, m.request.client_id, m.metadata_for(self.protocol))
                for m in self.members.values()
            ]
        return JoinResult(
            member.member_id,
            self.generation,
            self.protocol_type,
            self.protocol,
            self.leader or "",
            tuple(everyone),
        )

    def _sync_result(self, member: Member) -> SyncResult:
        assert self.protocol is not None and self.protocol_type is not None
        return SyncResult(self.protocol_type, self.protocol, member.assignment)
