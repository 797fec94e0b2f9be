"""Moving a partition between brokers, as values: the moves onto this broker, the copies it
keeps of partitions that moved away, and the rules by which pushes and copies change them.

Used by :mod:`~millstream.broker.cluster.node` (which persists the result with the metadata and
applies it to the logs) and :mod:`~millstream.broker.cluster.mover` (which copies). Pure: no
I/O, no clock, so the state machine is tested by hand.

Kafka's partition reassignment with one replica. The operator starts a move on the receiving
broker; the receiver copies the partition's log from its current broker (the *source*) while
producers keep writing there. The operator then pushes the topic with the partition placed on
the receiver and a higher epoch. That push is the switch: the source stops taking writes (the
push, or the receiver's *fence* call, whichever reaches it first), the receiver copies the
remaining tail up to the source's final log end and only then serves the partition. The
source keeps its copy, read-only (*retired*), until the receiver has the tail and releases it.

A move, stored on the receiver::

                    push places the partition here
        copying ──────────────────────────────────────▶ switching ──── tail copied ───▶ completed
         │  ▲  ◀──── push places it back on the source ────┘
         │  └───────── started again ──────────┐
         └── error retrying cannot fix ──▶ failed
        cancel (copying, failed): the move and its copy are dropped; switching cannot be

``in_sync`` is not stored: it is a copying move whose copy reached the source's high
watermark at the last fetch (the mover's progress says so). A move is held here (its log is
not served) until it completes. A partition that a push moves away from this broker becomes
*retired* here whether or not a move exists, so that no push order can delete the only copy
of acknowledged records; the retired copy goes when released.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Final

from millstream import errors
from millstream.broker.cluster.metadata import ClusterMetadata, TopicPlacement

PartitionKey = tuple[str, int]  # topic, partition

# Completed moves are kept for the operator to read, up to this many (the oldest go first).
MAX_COMPLETED: Final = 100


class MoveState(StrEnum):
    COPYING = "copying"
    SWITCHING = "switching"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Move:
    """A move of one partition onto this broker, from the broker ``source``."""

    topic: str
    partition: int
    source: int
    state: MoveState = MoveState.COPYING
    throttle_bytes_per_s: int | None = None  # None: as fast as the disks and network go
    created_ms: int = 0
    epoch: int | None = None  # the topic epoch of the push that switched it
    final_offset: int | None = None  # the source's log end once it stopped taking writes
    error: str | None = None  # why it failed
    completed_ms: int | None = None
    source_released: bool = False  # the source dropped its retired copy

    @property
    def key(self) -> PartitionKey:
        return (self.topic, self.partition)

    @property
    def held(self) -> bool:
        """Whether the copy is held (not served) here."""
        return self.state is not MoveState.COMPLETED


@dataclass(frozen=True, slots=True)
class Transfers:
    """What this broker holds besides the partitions it serves."""

    moves: Mapping[PartitionKey, Move] = field(default_factory=dict)
    retired: frozenset[PartitionKey] = frozenset()

    def moving(self, topic: str, partition: int) -> bool:
        """Whether the partition is placed here but its copy is not complete yet."""
        move = self.moves.get((topic, partition))
        return move is not None and move.state is MoveState.SWITCHING

    def with_move(self, move: Move) -> Transfers:
        return replace(self, moves={**self.moves, move.key: move})

    def without_move(self, key: PartitionKey) -> Transfers:
        return replace(self, moves={k: m for k, m in self.moves.items() if k != key})

    def without_topic(self, name: str) -> Transfers:
        return Transfers(
            {k: m for k, m in self.moves.items() if k[0] != name},
            frozenset(k for k in self.retired if k[0] != name),
        )


def placement_here(
    transfers: Transfers, topic: TopicPlacement, broker_id: int | None
) -> tuple[frozenset[int], frozenset[int]]:
    """The partitions of ``topic`` this broker serves, and those it holds without serving."""
    moving = {p for (t, p), m in transfers.moves.items() if t == topic.name and m.held}
    retired = {p for t, p in transfers.retired if t == topic.name}
    hosted = topic.hosted_by(broker_id) - moving
    return hosted, frozenset((moving | retired) - hosted)


def start_move(
    transfers: Transfers,
    metadata: ClusterMetadata | None,
    broker_id: int,
    request: Move,
) -> Transfers:
    """The transfers with ``request`` (a copying move) started, or the same move with the
    request's throttle if it already runs. The source is the partition's broker now; a
    request naming another is refused, as is a move of a partition served or retired here."""
    placed = _placed(metadata, request.topic, request.partition)
    owner = placed.placement[request.partition]
    key = request.key
    if owner == broker_id:
        raise errors.MoveConflict(
            f"partition {request.partition} of {request.topic!r} is already placed on broker "
            f"{broker_id}, this one"
        )
    if request.source != owner:
        raise errors.MoveConflict(
            f"partition {request.partition} of {request.topic!r} is served by broker {owner}, "
            f"not by broker {request.source}"
        )
    if key in transfers.retired:
        raise errors.MoveConflict(
            f"this broker still keeps the copy of {request.topic}/{request.partition} it served "
            "before; once the move that took it away has completed, release it "
            "(DELETE /v1/admin/partitions/...) and start again"
        )
    current = transfers.moves.get(key)
    if current is not None and current.state is MoveState.COPYING and current.source == owner:
        if request.throttle_bytes_per_s == current.throttle_bytes_per_s:
            return transfers
        return transfers.with_move(
            replace(current, throttle_bytes_per_s=request.throttle_bytes_per_s)
        )
    # New, or a failed or completed one started again (a completed move of a partition now
    # served elsewhere: it moved away since, and its copy here was released).
    return _prune(transfers.with_move(replace(request, state=MoveState.COPYING)))


def after_push(
    transfers: Transfers,
    old: TopicPlacement | None,
    new: TopicPlacement,
    broker_id: int | None,
) -> Transfers:
    """The transfers after a topic push (already checked against the metadata).

    - A moving partition placed here switches (the push must carry an epoch: the source is
      fenced with it); a switching one placed back on its source copies again; a moving one
      placed on a third broker fails.
    - A partition placed here before and elsewhere now is retired here.
    - A retired partition placed here again is served again (the push took back a move).
    """
    moves = dict(transfers.moves)
    retired = set(transfers.retired)
    for p, owner in enumerate(new.placement):
        key = (new.name, p)
        move = moves.get(key)
        was_here = old is not None and p < old.partitions and old.placement[p] == broker_id
        if owner == broker_id:
            retired.discard(key)
            if move is not None and move.held:
                previous = old.placement[p] if old is not None and p < old.partitions else None
                if move.state is MoveState.SWITCHING or (
                    move.state is MoveState.COPYING and previous == move.source
                ):
                    moves[key] = _switch(move, new)
                elif move.state is not MoveState.FAILED or move.error is None:
                    # Copied from a broker that no longer owned the partition: switching would
                    # serve its stale copy and lose what the real owner acknowledged since.
                    error = (
                        f"placed here while the copy came from broker {move.source}, not from "
                        f"the previous owner {previous}: cancel the move and start it again"
                    )
                    moves[key] = replace(move, state=MoveState.FAILED, error=error)
        elif move is not None and move.held:
            if owner == move.source and move.state is MoveState.SWITCHING:
                moves[key] = replace(move, state=MoveState.COPYING, final_offset=None)
            elif owner != move.source and move.state is not MoveState.FAILED:
                error = f"the partition was placed on broker {owner}, not the one copied from"
                moves[key] = replace(move, state=MoveState.FAILED, error=error)
        elif was_here:
            retired.add(key)
    return Transfers(moves, frozenset(retired))


def _switch(move: Move, new: TopicPlacement) -> Move:
    if new.epoch is None:
        raise errors.InvalidPlacement(
            f"partition {move.partition} of {move.topic!r} is being copied onto this broker: "
            "a push that places it here switches it and must carry a topic epoch, with which "
            "its source is fenced"
        )
    if move.state is MoveState.SWITCHING:
        # The same switch pushed again, perhaps at a later epoch: fence with that one.
        return replace(move, epoch=max(new.epoch, move.epoch or 0))
    return replace(move, state=MoveState.SWITCHING, epoch=new.epoch, error=None)


def fence(
    metadata: ClusterMetadata | None,
    transfers: Transfers,
    broker_id: int,
    key: PartitionKey,
    epoch: int,
    owner: int,
) -> tuple[ClusterMetadata, Transfers]:
    """The metadata and transfers after the receiver of a move fenced this broker: the
    partition placed on ``owner`` at topic epoch ``epoch`` and retired here. Idempotent.
    Raises StaleEpoch for an epoch older than the topic's, MoveConflict if the partition is
    neither served nor retired here, InvalidPlacement for an owner the cluster does not list."""
    topic, partition = key
    placed = _placed(metadata, topic, partition)
    assert metadata is not None
    if owner == broker_id or metadata.broker(owner) is None:
        raise errors.InvalidPlacement(f"broker {owner} cannot take over from this broker")
    if placed.epoch is not None and epoch < placed.epoch:
        raise errors.StaleEpoch(
            f"topic {topic!r}: fence at epoch {epoch} is older than the broker's {placed.epoch}"
        )
    current = placed.placement[partition]
    if current == owner and key in transfers.retired:
        return metadata, transfers
    if current != broker_id or transfers.moving(topic, partition):
        raise errors.MoveConflict(
            f"partition {partition} of {topic!r} is placed on broker {current} and this broker "
            "keeps no copy of it to hand over"
        )
    placement = tuple(owner if p == partition else b for p, b in enumerate(placed.placement))
    fenced = replace(placed, placement=placement, epoch=epoch)
    metadata = replace(metadata, topics={**metadata.topics, topic: fenced})
    return metadata, replace(transfers, retired=transfers.retired | {key})


def cancel(transfers: Transfers, key: PartitionKey) -> Transfers:
    """The transfers without the move (its copy is then dropped, unless it completed and is
    served). A switching move cannot be cancelled: its source already stopped taking writes
    for it; push the partition back to its source instead."""
    move = transfers.moves.get(key)
    if move is None:
        raise errors.UnknownMove(f"no move of {key[0]}/{key[1]} onto this broker")
    if move.state is MoveState.SWITCHING:
        raise errors.MoveConflict(
            f"the move of {key[0]}/{key[1]} is switching: its source no longer takes writes. "
            "To take it back, push the partition placed on its source with a higher epoch"
        )
    return transfers.without_move(key)


def release(transfers: Transfers, key: PartitionKey) -> Transfers:
    """The transfers without the retired copy of ``key``; UnknownPartition if there is none."""
    if key not in transfers.retired:
        raise errors.UnknownPartition(f"this broker keeps no retired copy of {key[0]}/{key[1]}")
    return replace(transfers, retired=transfers.retired - {key})


def _placed(metadata: ClusterMetadata | None, topic: str, partition: int) -> TopicPlacement:
    if metadata is None:
        raise errors.InvalidPlacement("this broker is not part of a cluster: push the cluster")
    placed = metadata.topics.get(topic)
    if placed is None:
        raise errors.UnknownTopic(f"topic {topic!r} is not placed in the cluster")
    if not 0 <= partition < placed.partitions:
        raise errors.UnknownPartition(
            f"topic {topic!r} has partitions 0 to {placed.partitions - 1}, not {partition}"
        )
    return placed


def _prune(transfers: Transfers) -> Transfers:
    done = sorted(
        (m for m in transfers.moves.values() if m.state is MoveState.COMPLETED),
        key=lambda m: m.completed_ms or 0,
    )
    if len(done) <= MAX_COMPLETED:
        return transfers
    dropped = {m.key for m in done[: len(done) - MAX_COMPLETED]}
    return replace(transfers, moves={k: m for k, m in transfers.moves.items() if k not in dropped})
