"""Rebalancing a Cluster's partitions: which partitions move where, and how far along it is.

The pure half of the rebalance the Cluster's handlers drive (docs/cluster.md, "Driving a
rebalance"). No I/O, no clock. The rules:

- **One placement rule.** The target of every topic is :func:`~.placement.place` over the
  brokers that stay (``range(brokers)``): on scale-out that is a balanced placement moving as
  few partitions as balance allows, on scale-in every partition placed on a leaving broker
  (the highest ordinals) goes to one that stays, and an on-demand rebalance is the same on the
  current brokers.
- **The plan is kept.** Once planned, the moves are recorded in the Cluster's status
  (``status.rebalance.moves``) and followed until each completes or is cancelled: the
  placement is not recomputed half-way (a partly moved topic could plan differently).
- **Progress comes from the receivers.** A move's state, bytes copied and error are what the
  receiving broker's ``GET /v1/admin/moves`` reports (:func:`progress`).
- **No pod that holds partitions goes.** The StatefulSet keeps every broker that a move still
  reads from or writes to, and every leaving broker until it was seen drained
  (:func:`replicas_during`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from millstream.operator.placement import Placement, place, topic_offset

# Set (to any new value) on a Cluster to ask for a rebalance over its current brokers.
REBALANCE_ANNOTATION: Final = "millstream.io/rebalance"
# Set (to any new value) on a Cluster to cancel the moves of the rebalance under way.
CANCEL_ANNOTATION: Final = "millstream.io/cancel-rebalance"

Phase = Literal["Idle", "Moving", "Draining", "ScalingDown", "Failed"]
MoveState = Literal["pending", "copying", "in_sync", "switching", "completed", "failed"]
_DONE: Final = frozenset({"completed"})
_STATES: Final[Mapping[str, MoveState]] = {
    s: s for s in ("copying", "in_sync", "switching", "completed", "failed")
}
# Once the switch was pushed the receiver owns the partition: it cannot be cancelled.
_SWITCHED: Final = frozenset({"switching", "completed"})


@dataclass(frozen=True, slots=True, order=True)
class PlannedMove:
    """One partition of one topic going from broker ``source`` to broker ``target``."""

    topic: str
    partition: int
    source: int
    target: int


def target_placements(
    placements: Mapping[str, Mapping[int, int]], brokers: int
) -> dict[str, Placement]:
    """Every topic's placement over ``range(brokers)`` (see the module's rules); ``placements``
    maps topic names to their current placement (partition -> broker)."""
    ring = range(brokers)
    return {
        name: place(len(current), ring, current, offset=topic_offset(name))
        for name, current in sorted(placements.items())
    }


def plan_moves(placements: Mapping[str, Mapping[int, int]], brokers: int) -> list[PlannedMove]:
    """The moves that take ``placements`` to :func:`target_placements`, sorted."""
    wanted = target_placements(placements, brokers)
    return sorted(
        PlannedMove(name, partition, current[partition], broker)
        for name, current in placements.items()
        for partition, broker in wanted[name].items()
        if current[partition] != broker
    )


def leaving(placements: Iterable[Mapping[int, int]], brokers: int) -> list[int]:
    """Brokers past ``brokers`` that some placement still puts partitions on."""
    return sorted({b for p in placements for b in p.values() if b >= brokers})


@dataclass(frozen=True, slots=True)
class Request:
    """Why a rebalance is wanted now, from the Cluster and the status the last pass wrote."""

    brokers: int  # spec.brokers
    balanced_for: int | None  # status.rebalance.brokers: the count the last plan was for
    requested: str | None  # the rebalance annotation's value
    handled: str | None  # status.rebalance.request: the last value acted on


def wanted(request: Request, placements: Iterable[Mapping[int, int]]) -> bool:
    """Whether to plan a rebalance: partitions sit on leaving brokers (scale-in), the broker
    count grew since the last plan (scale-out), or a new on-demand request came."""
    if leaving(placements, request.brokers):
        return True
    if request.balanced_for is not None and request.brokers > request.balanced_for:
        return True
    return request.requested is not None and request.requested != request.handled


# --- the moves' progress, from the receivers' reports ----------------------------------------


@dataclass(frozen=True, slots=True)
class MoveProgress:
    """A planned move as its receiver reports it (``report`` None: not started there)."""

    move: PlannedMove
    state: MoveState
    bytes_copied: int = 0
    lag: int | None = None
    error: str | None = None
    retries: int = 0  # how many times the operator started it again after a failure
    throttle: int | None = None  # the receiver's pace for it now (bytes/s), when reported

    def to_status(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "topic": self.move.topic,
            "partition": self.move.partition,
            "source": self.move.source,
            "target": self.move.target,
            "state": self.state,
            "bytesCopied": self.bytes_copied,
            "retries": self.retries,
        }
        if self.lag is not None:
            row["lag"] = self.lag
        if self.error:
            row["error"] = self.error
        return row


def move_progress(
    move: PlannedMove, report: Mapping[str, Any] | None, previous: Mapping[str, Any] | None
) -> MoveProgress:
    """The progress of ``move`` from its receiver's report (``GET /v1/admin/moves/{t}/{p}``;
    None: the receiver has no such move, or did not answer) and the row the last pass wrote
    (which keeps what a receiver that restarted forgot: the bytes copied, retries)."""
    previous = previous or {}
    before_state = str(previous.get("state") or "pending")
    retries = int(previous.get("retries") or 0)
    before_bytes = int(previous.get("bytesCopied") or 0)
    if report is None:
        # A completed move the receiver forgot stays completed; nothing else is known.
        state: MoveState = "completed" if before_state == "completed" else "pending"
        return MoveProgress(move, state, before_bytes, None, previous.get("error") or None, retries)
    reported = str(report.get("state") or "copying")
    state = _STATES.get(reported, "copying")
    copied = max(int(report.get("bytes_copied") or 0), before_bytes)
    lag = report.get("lag")
    error = report.get("error")
    throttle = report.get("throttle_bytes_per_s")
    return MoveProgress(
        move,
        state,
        copied,
        int(lag) if isinstance(lag, int) else None,
        str(error) if error else None,
        retries,
        int(throttle) if isinstance(throttle, int) else None,
    )


def throttle_shares(
    moves: Sequence[MoveProgress], per_broker: int | None
) -> dict[PlannedMove, int | None]:
    """Each unfinished copy's pace: ``spec.rebalance.throttleBytesPerSecond`` is what one
    receiving broker may copy in all (as Kafka's replication throttle is per broker), split
    evenly between the copies onto it that run or are about to (at least 1 byte/s each).
    Switching moves copy their last bytes unthrottled and take no share."""
    copying = [m.move for m in moves if m.state in ("pending", "copying", "failed")]
    if per_broker is None:
        return dict.fromkeys(copying)
    onto = Counter(move.target for move in copying)
    return {move: max(1, per_broker // onto[move.target]) for move in copying}


@dataclass(frozen=True, slots=True)
class Progress:
    phase: Phase
    moves: tuple[MoveProgress, ...] = ()
    brokers: int | None = None
    request: str | None = None
    message: str | None = None

    @property
    def moved(self) -> int:
        return sum(m.state in _DONE for m in self.moves)

    @property
    def bytes_copied(self) -> int:
        return sum(m.bytes_copied for m in self.moves)

    def to_status(self) -> dict[str, Any]:
        """``status.rebalance`` of the Cluster."""
        status: dict[str, Any] = {
            "phase": self.phase,
            "movesCompleted": self.moved,
            "movesTotal": len(self.moves),
            "bytesCopied": self.bytes_copied,
            "moves": [m.to_status() for m in self.moves],
        }
        if self.brokers is not None:
            status["brokers"] = self.brokers
        if self.request is not None:
            status["request"] = self.request
        if self.message:
            status["message"] = self.message
        return status


def phase(moves: Sequence[MoveProgress], *, brokers: int, running: int, drained: bool) -> Phase:
    """The rebalance phase: Failed while a move is failed, Moving or (when brokers past
    ``brokers`` still run) Draining while moves are unfinished, ScalingDown once they are done
    and brokers still have to go, else Idle. ``running``: the brokers the StatefulSet runs."""
    if any(m.state == "failed" for m in moves):
        return "Failed"
    unfinished = any(m.state not in _DONE for m in moves)
    if unfinished:
        return "Draining" if running > brokers else "Moving"
    if running > brokers and not drained:
        return "Draining"
    if running > brokers:
        return "ScalingDown"
    return "Idle"


def planned_from_status(rebalance: Mapping[str, Any] | None) -> list[PlannedMove]:
    """The moves a previous pass recorded in ``status.rebalance.moves``; malformed rows are
    skipped."""
    moves = []
    for row in (rebalance or {}).get("moves") or ():
        try:
            moves.append(
                PlannedMove(
                    str(row["topic"]),
                    int(row["partition"]),
                    int(row["source"]),
                    int(row["target"]),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return moves


def rows_by_move(rebalance: Mapping[str, Any] | None) -> dict[PlannedMove, Mapping[str, Any]]:
    rows = {}
    for row in (rebalance or {}).get("moves") or ():
        moves = planned_from_status({"moves": [row]})
        if moves:
            rows[moves[0]] = row
    return rows


def unfinished(moves: Iterable[MoveProgress]) -> list[MoveProgress]:
    return [m for m in moves if m.state not in _DONE]


def cancellable(progress: MoveProgress) -> bool:
    """A move not switched yet can be cancelled: the source never stopped serving."""
    return progress.state not in _SWITCHED


# --- what the StatefulSet keeps, and what to switch -------------------------------------------


def replicas_during(
    brokers: int,
    placements: Iterable[Mapping[int, int]],
    moves: Iterable[MoveProgress],
    *,
    running: int,
    drained: Iterable[int] = (),
) -> int:
    """How many brokers the StatefulSet runs: ``brokers``, but never fewer than one past any
    broker a placement names, any unfinished move reads from or writes to, and any running
    broker past ``brokers`` not seen drained (``drained``: leaving brokers whose
    ``GET /v1/admin/partitions`` listed nothing served or received)."""
    keep = [brokers]
    keep += [b + 1 for b in leaving(placements, brokers)]
    for m in unfinished(moves):
        keep += [m.move.source + 1, m.move.target + 1]
    gone = set(drained)
    keep += [b + 1 for b in range(brokers, running) if b not in gone]
    return max(keep)


def is_drained(partitions: Mapping[str, Any] | None) -> bool:
    """Whether a broker's ``GET /v1/admin/partitions`` lists nothing served or received (a
    retired copy may go with the pod)."""
    if partitions is None:
        return False
    rows = partitions.get("partitions") or ()
    return all(isinstance(r, Mapping) and r.get("role") == "retired" for r in rows)


@dataclass(frozen=True, slots=True)
class Switch:
    """One topic push that switches the in-sync partitions of a topic to their receivers."""

    topic: str
    placement: Placement
    epoch: int
    moves: tuple[PlannedMove, ...] = field(default=())


def switches(
    moves: Iterable[MoveProgress],
    placements: Mapping[str, Mapping[int, int]],
    epochs: Mapping[str, int | None],
) -> list[Switch]:
    """The topic pushes for every in-sync move whose partition is still placed on its source
    (several partitions of a topic switch in one push, at the topic's epoch + 1)."""
    by_topic: dict[str, list[PlannedMove]] = {}
    for m in moves:
        current = placements.get(m.move.topic, {})
        if m.state == "in_sync" and current.get(m.move.partition) == m.move.source:
            by_topic.setdefault(m.move.topic, []).append(m.move)
    result = []
    for topic, switched in sorted(by_topic.items()):
        placement = dict(placements[topic])
        for move in switched:
            placement[move.partition] = move.target
        result.append(Switch(topic, placement, (epochs.get(topic) or 0) + 1, tuple(switched)))
    return result
