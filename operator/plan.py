"""What a Topic's reconcile and the drift check do, decided from what they read: the pure
half of the Topic handlers (:mod:`.topics`) and of the Cluster's drift check (:mod:`.clusters`;
the Cluster's own decisions are :mod:`.cluster_plan`'s).

The handlers read the resources and ask the brokers, call these functions, then apply what
they answer. No I/O and no clock, so the unit tests drive every decision by hand. The rules:

- **Partitions never move here.** A push that places a partition on another broker
  switches it there without its data (docs/cluster.md): only a rebalance (:mod:`.rebalance`)
  moves partitions, copying first, and :func:`grow_placement` keeps every placed partition
  where the Topic's status (which the rebalance writes) has it and only places new ones. For
  a topic the operator placed itself that is exactly :func:`~.placement.place` (growing a
  balanced topic moves nothing); an adopted topic may stay unbalanced.
- **Adoption.** A topic the brokers already hold under the name of a new Topic resource (one a
  Topic with deletionPolicy Retain left behind, or one a standalone broker created before it
  joined the cluster) keeps its placement, partitions and topic id. Standalone copies that
  hold no record are spread like a new topic instead (:func:`standalone_topic`).
- **Epochs carry over.** A Topic whose status has no epoch takes the highest one the brokers
  hold for its topic (an adopted topic that moved before): the next switch pushes one above
  it, which the brokers take, where epoch 1 would be refused as stale forever.
- **One Topic per topic.** When several Topic resources name the same topic on the same
  Cluster, the one already placed, else the oldest, manages it; the others are refused. The
  Cluster's internal Topic (:mod:`.internal_topic`) always manages its own.
- **The group-offsets Topic is a Topic.** It is placed, grown and moved like any other, except
  that a spec changing its partition count, name or the settings that keep its offsets pushes
  nothing, and those settings are pushed as fixed whatever the spec says
  (:mod:`.internal_topic`).
- **The status is the metadata store.** The drift check pushes what the Topics' status records,
  never a new decision, and only for Topics whose status describes their current spec.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from millstream.client.broker_metadata import BrokerMetadata, PlacedTopic
from millstream.operator import internal_topic
from millstream.operator.placement import Placement, broker_loads, place, topic_offset
from millstream.operator.specs import SpecError, TopicSpec, parse_topic
from millstream.operator.status import (
    Problem,
    placement_from_status,
    unsupported_changes,
)

# Set on a Topic when the operator first places it: the Cluster it lives on, so that a later
# change of spec.cluster is seen (the status schema has no room for it).
PLACED_ON_ANNOTATION: Final = "millstream.io/placed-on-cluster"
# Changes that leave nothing to push: the topic stays as it is on the brokers.
_BLOCKING: Final = frozenset({"TopicNameChange", "ClusterChange"}) | internal_topic.BLOCKING


@dataclass(frozen=True, slots=True)
class TopicTarget:
    """A topic as every broker of its cluster should hold it: what one push carries."""

    name: str
    placement: Mapping[int, int]
    config: Mapping[str, int]
    topic_id: str
    # The topic epoch the push carries: the Topic's status.epoch, set by a rebalance's switch,
    # else the brokers' (see the module; None until a partition moved).
    epoch: int | None = None

    @property
    def partitions(self) -> int:
        return len(self.placement)


@dataclass(frozen=True, slots=True)
class TopicPlan:
    """``target`` is None when the spec asks for nothing that can be pushed."""

    target: TopicTarget | None
    unsupported: tuple[Problem, ...] = ()
    adopted: bool = False


# --- placement -------------------------------------------------------------------------------


def grow_placement(
    partitions: int, brokers: Sequence[int], current: Mapping[int, int], *, offset: int
) -> Placement:
    """:func:`~.placement.place`, except that no placed partition moves (see the module).

    When ``place`` would move some (an adopted, unbalanced topic; a partition on a broker
    that is no longer among ``brokers``), placed partitions stay and each new one goes to the
    least loaded of ``brokers``, ties broken by the topic's rotation.
    """
    proposed = place(partitions, brokers, current, offset=offset)
    if all(current.get(p, b) == b for p, b in proposed.items()):
        return proposed
    ring = sorted(brokers)
    loads = broker_loads({p: b for p, b in current.items() if b in set(ring)}, ring)
    placement = dict(current)
    for partition in range(partitions):
        if partition in placement:
            continue
        start = (partition + offset) % len(ring)
        rotation = [ring[(start + step) % len(ring)] for step in range(len(ring))]
        broker = min(rotation, key=lambda b: loads[b])  # min keeps the first of equals
        placement[partition] = broker
        loads[broker] += 1
    return dict(sorted(placement.items()))


def existing_topic(name: str, views: Iterable[BrokerMetadata | None]) -> PlacedTopic | None:
    """The topic as the brokers' metadata has it. When the copies disagree, the one with the
    highest epoch (a switch pushed to some brokers only; no epoch is lowest), then the most
    partitions (a grow pushed to some only). Its placement and epoch are taken together: an
    older placement pushed at the newer epoch would be refused as stale by the brokers that
    took the switch, and would record the placement from before it."""
    copies = [v.topics[name] for v in views if v is not None and name in v.topics]
    if not copies:
        return None
    return max(copies, key=lambda t: (t.epoch is not None, t.epoch or 0, t.partitions))


def standalone_topic(name: str, described: Mapping[int, Any]) -> PlacedTopic | None:
    """A topic that a broker created while standalone and holds whole, unplaced: from each
    broker's ``GET /v1/topics/{name}`` (None where it has no such topic). The broker holding
    most partitions keeps them all (among equals, one holding records, then the lowest id),
    unless its copy holds no record: then there is nothing to keep in place, and the topic is
    spread as a new one would be over the brokers holding an empty copy of that size. Every
    broker of a new cluster creates the group-offsets topic while standalone: one broker would
    otherwise coordinate every group."""
    copies: dict[int, tuple[int, bool]] = {}  # broker -> (partitions, empty)
    for broker, answer in described.items():
        try:
            rows = answer["partitions"] if answer is not None else []
        except (KeyError, TypeError):
            continue
        whole = all(
            isinstance(r, Mapping) and "broker" not in r and r.get("latest_offset") is not None
            for r in rows
        )
        if rows and whole:
            copies[broker] = (len(rows), all(r["latest_offset"] == 0 for r in rows))
    if not copies:
        return None
    # Most partitions first (a push may not shrink a copy), then one holding records.
    broker = min(copies, key=lambda b: (-copies[b][0], copies[b][1], b))
    count, empty = copies[broker]
    if not empty:
        return PlacedTopic(name, count, dict.fromkeys(range(count), broker))
    spread = [b for b, copy in copies.items() if copy == (count, True)]
    return PlacedTopic(name, count, place(count, spread, offset=topic_offset(name)))


def plan_topic(
    spec: TopicSpec,
    status: Mapping[str, Any] | None,
    *,
    placed_on: str | None,
    brokers: Sequence[int],
    existing: PlacedTopic | None,
) -> TopicPlan:
    """What to push for a Topic: ``brokers`` are those new partitions may go to, ``existing``
    the topic as the brokers hold it already (None: they do not), ``placed_on`` the Cluster
    the Topic was first placed on (its annotation). Raises ValueError for a malformed
    ``status.placement``."""
    status = status or {}
    current: dict[int, int] = placement_from_status(status)
    adopted = not current and existing is not None
    if adopted:
        assert existing is not None
        current = dict(existing.placement)
    held = max(int(status.get("partitions") or 0), len(current))
    unsupported = internal_topic.problems(spec)
    unsupported += unsupported_changes(spec, {**status, "partitions": held})
    if placed_on is not None and placed_on != spec.cluster:
        unsupported.append(
            Problem(
                "ClusterChange",
                f"the topic lives on Cluster {placed_on!r} and cannot move to {spec.cluster!r}",
            )
        )
    if any(p.reason in _BLOCKING for p in unsupported):
        return TopicPlan(None, tuple(unsupported))
    name = str(status.get("topicName") or spec.topic_name)
    placement = grow_placement(
        max(spec.partitions, held), brokers, current, offset=topic_offset(name)
    )
    topic_id = status.get("topicId") or (existing.topic_id if existing else None) or spec.meta.uid
    epoch = status_epoch(status)
    if epoch is None and existing is not None:
        epoch = existing.epoch
    config = internal_topic.pushed_config(spec)
    target = TopicTarget(name, placement, config, str(topic_id), epoch)
    return TopicPlan(target, tuple(unsupported), adopted)


def status_epoch(status: Mapping[str, Any]) -> int | None:
    epoch = status.get("epoch")
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None


# --- which Topic manages a topic ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Claim:
    uid: str
    cluster: str
    topic: str
    placed: bool
    created: str
    internal: bool


def _claim(body: Mapping[str, Any]) -> _Claim | None:
    try:
        spec = parse_topic(body)
    except SpecError:
        return None
    status = body.get("status") or {}
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return _Claim(
        uid=spec.meta.uid,
        cluster=str(annotations.get(PLACED_ON_ANNOTATION) or spec.cluster),
        topic=str(status.get("topicName") or spec.topic_name),
        placed=bool(status.get("placement")),
        created=str((body.get("metadata") or {}).get("creationTimestamp") or ""),
        internal=spec.internal,
    )


def topic_taken(body: Mapping[str, Any], topics: Iterable[Mapping[str, Any]]) -> Problem | None:
    """Why ``body`` may not manage its topic: another Topic of ``topics`` (the namespace's)
    names the same topic on the same Cluster and is the Cluster's internal Topic, or was
    placed, or created, first."""
    mine = _claim(body)
    if mine is None:
        return None
    rivals = [
        c
        for c in map(_claim, topics)
        if c is not None and (c.cluster, c.topic) == (mine.cluster, mine.topic)
    ]
    owner = min([*rivals, mine], key=lambda c: (not c.internal, not c.placed, c.created, c.uid))
    if owner.uid == mine.uid:
        return None
    name = next(
        (t["metadata"]["name"] for t in topics if t["metadata"].get("uid") == owner.uid), "?"
    )
    return Problem(
        "TopicNameTaken",
        f"Topic {name!r} already manages topic {mine.topic!r} on Cluster {mine.cluster!r}",
    )


# --- what the Topics hold --------------------------------------------------------------------


def placements_on(cluster: str, topics: Iterable[Mapping[str, Any]]) -> list[dict[int, int]]:
    """The placements that the Topics' status records for topics on ``cluster``."""
    found = []
    for body in topics:
        claim = _claim(body)
        if claim is None or claim.cluster != cluster:
            continue
        try:
            found.append(placement_from_status(body.get("status")))
        except ValueError:
            continue
    return found


# --- drift -------------------------------------------------------------------------------------


def drift_targets(cluster: str, topics: Iterable[Mapping[str, Any]]) -> list[TopicTarget]:
    """What the brokers of ``cluster`` should hold, from the status of the Topics placed on
    it. Topics being deleted, not placed yet, or whose status does not describe their spec
    yet (their own handler is at work) are left out."""
    all_topics = list(topics)
    targets = []
    for body in all_topics:
        metadata = body.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        if metadata.get("deletionTimestamp") or annotations.get(PLACED_ON_ANNOTATION) != cluster:
            continue
        try:
            spec = parse_topic(body)
            placement = placement_from_status(body.get("status"))
        except (SpecError, ValueError):
            continue
        status = body.get("status") or {}
        settled = status.get("observedGeneration") == spec.meta.generation
        if not placement or not settled or not status.get("topicId"):
            continue
        if topic_taken(body, all_topics) is not None:
            continue
        name = str(status.get("topicName") or spec.topic_name)
        config = internal_topic.pushed_config(spec)
        targets.append(
            TopicTarget(name, placement, config, str(status["topicId"]), status_epoch(status))
        )
    return sorted(targets, key=lambda t: t.name)


def in_sync(held: PlacedTopic | None, target: TopicTarget) -> bool:
    """Whether a broker holds the topic as pushed. The metadata does not list a topic's
    settings, so a change of settings alone is not seen."""
    return (
        held is not None
        and held.partitions == target.partitions
        and dict(held.placement) == dict(target.placement)
        and held.topic_id == target.topic_id
    )


def topic_pushes(
    views: Mapping[int, BrokerMetadata | None], targets: Sequence[TopicTarget]
) -> dict[int, list[TopicTarget]]:
    """For each broker holding the cluster's metadata, the topics it does not hold as their
    target says (deleted or changed behind the operator's back, or never pushed)."""
    pushes = {}
    for broker, view in sorted(views.items()):
        if view is None or not view.managed:
            continue
        missing = [t for t in targets if not in_sync(view.topics.get(t.name), t)]
        if missing:
            pushes[broker] = missing
    return pushes
