"""What the operator writes into the status of Clusters, Topics and ConsumerGroups.

The kopf handlers observe (the StatefulSet's counts, what the brokers answered), call the
functions here with the parsed spec, the observation, the previous status and the time, and
patch the result into the resource's status subresource. Pure functions: the clock is an
argument, so tests drive transitions by hand.

Conditions follow the Kubernetes conventions: one entry per ``type``, ``status`` "True",
"False" or "Unknown", a CamelCase ``reason`` programs can match, a ``message`` for people, the
``observedGeneration`` it describes, and a ``lastTransitionTime`` that moves only when the
status changes (:func:`merge_conditions`), so that recomputing an unchanged status writes
nothing new.

A Topic's ``status.placement`` is the cluster's metadata store (DESIGN.md): it is kept when the
brokers cannot be reached, never cleared by a transient failure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from millstream.operator.resources import bootstrap_url
from millstream.operator.specs import ClusterSpec, ConsumerGroupSpec, TopicSpec

Status = dict[str, Any]
ConditionStatus = Literal["True", "False", "Unknown"]

READY: Final = "Ready"
NOT_SUPPORTED: Final = "NotSupported"
OFFSET_RESET_APPLIED: Final = "OffsetResetApplied"


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: ConditionStatus
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Problem:
    """Why something could not be done: a condition's reason and message."""

    reason: str
    message: str


def rfc3339(moment: datetime) -> str:
    """A Kubernetes timestamp (UTC, whole seconds)."""
    if moment.tzinfo is None:
        raise ValueError("a status time must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def merge_conditions(
    previous: Sequence[Mapping[str, Any]] | None,
    updates: Iterable[Condition],
    *,
    generation: int,
    now: datetime,
    drop: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """``updates`` written over ``previous``; conditions of other types are kept, except those
    named in ``drop``. A condition whose status did not change keeps its transition time."""
    before = {c["type"]: c for c in previous or () if isinstance(c, Mapping) and "type" in c}
    merged = []
    for update in updates:
        old = before.pop(update.type, None)
        since = None
        if old is not None and old.get("status") == update.status:
            since = old.get("lastTransitionTime")
        merged.append(
            {
                "type": update.type,
                "status": update.status,
                "reason": update.reason,
                "message": update.message,
                "observedGeneration": generation,
                "lastTransitionTime": since or rfc3339(now),
            }
        )
    dropped = set(drop)
    merged += [dict(c) for kind, c in before.items() if kind not in dropped]
    return merged


def condition(status: Mapping[str, Any] | None, kind: str) -> Mapping[str, Any] | None:
    """The condition of this type in a status, if any."""
    for entry in (status or {}).get("conditions") or ():
        if entry.get("type") == kind:
            found: Mapping[str, Any] = entry
            return found
    return None


# Clusters


@dataclass(frozen=True, slots=True)
class ClusterObservation:
    """The StatefulSet's view of the brokers: pods that exist, and pods that are ready."""

    brokers: int
    ready_brokers: int


def cluster_status(
    spec: ClusterSpec,
    observed: ClusterObservation,
    previous: Mapping[str, Any] | None,
    *,
    now: datetime,
    problem: Problem | None = None,
) -> Status:
    """Ready once every broker asked for exists and is ready; ``problem`` (a failure to apply
    the Cluster's objects) makes it not Ready whatever the pods say."""
    wanted = spec.brokers
    if problem is not None:
        ready = Condition(READY, "False", problem.reason, problem.message)
    elif observed.brokers != wanted:
        ready = Condition(
            READY,
            "False",
            "Scaling",
            f"{observed.brokers} brokers, scaling to {wanted}; {observed.ready_brokers} ready",
        )
    elif observed.ready_brokers < wanted:
        ready = Condition(
            READY, "False", "BrokersNotReady", f"{observed.ready_brokers} of {wanted} brokers ready"
        )
    else:
        ready = Condition(READY, "True", "BrokersReady", f"{wanted} of {wanted} brokers ready")
    generation = spec.meta.generation
    return {
        "observedGeneration": generation,
        "brokers": observed.brokers,
        "readyBrokers": observed.ready_brokers,
        "bootstrap": bootstrap_url(spec.meta.name, spec.meta.namespace),
        "conditions": merge_conditions(
            (previous or {}).get("conditions"), [ready], generation=generation, now=now
        ),
    }


# Topics


def placement_from_status(status: Mapping[str, Any] | None) -> dict[int, int]:
    """The placement a Topic's status records (partition -> serving broker); empty if none."""
    placement = {}
    for entry in (status or {}).get("placement") or ():
        partition, replicas = entry.get("partition"), entry.get("replicas")
        if not isinstance(partition, int) or not replicas or not isinstance(replicas[0], int):
            raise ValueError(f"status.placement has a malformed entry: {entry!r}")
        placement[partition] = replicas[0]
    return placement


def unsupported_changes(spec: TopicSpec, previous: Mapping[str, Any] | None) -> list[Problem]:
    """What the spec asks that cannot be done, as far as the previous status tells.

    A change of ``spec.cluster`` cannot be seen from status: the handler adds that one from the
    old and new bodies.
    """
    problems = []
    if spec.replication_factor > 1:
        problems.append(
            Problem(
                "ReplicationNotSupported",
                f"replicationFactor {spec.replication_factor} asked; only 1 is served until "
                "replication lands, so each partition has one copy",
            )
        )
    existing = (previous or {}).get("partitions") or 0
    if spec.partitions < existing:
        problems.append(
            Problem(
                "PartitionDecrease",
                f"partitions cannot decrease: {existing} exist, {spec.partitions} asked; "
                f"the topic keeps {existing}",
            )
        )
    served_name = (previous or {}).get("topicName")
    if served_name is not None and served_name != spec.topic_name:
        problems.append(
            Problem(
                "TopicNameChange",
                f"the topic is {served_name!r} on the brokers and cannot be renamed to "
                f"{spec.topic_name!r}",
            )
        )
    return problems


def topic_status(
    spec: TopicSpec,
    previous: Mapping[str, Any] | None,
    *,
    now: datetime,
    placement: Mapping[int, int] | None = None,
    topic_id: str | None = None,
    unsupported: Sequence[Problem] = (),
    problem: Problem | None = None,
    epoch: int | None = None,
) -> Status:
    """A Topic's status after a reconcile.

    ``placement`` is what the brokers now serve (None: nothing was applied this time, and the
    previous placement stands); ``unsupported`` what the spec asks that is not done
    (:func:`unsupported_changes`); ``problem`` why the placement could not be applied (no such
    Cluster, brokers unreachable).
    """
    before = previous or {}
    status: Status = {"observedGeneration": spec.meta.generation}
    status["topicName"] = before.get("topicName", spec.topic_name)
    if placement is not None:
        status["partitions"] = len(placement)
        status["placement"] = [
            {"partition": p, "replicas": [broker]} for p, broker in sorted(placement.items())
        ]
    else:
        for key in ("partitions", "placement"):
            if key in before:
                status[key] = before[key]
    if topic_id is not None or "topicId" in before:
        status["topicId"] = topic_id if topic_id is not None else before["topicId"]
    if epoch is not None or "epoch" in before:
        # The topic epoch a rebalance's switch set (or the brokers' one, taken on adoption):
        # kept, only ever raised by a switch.
        status["epoch"] = epoch if epoch is not None else before["epoch"]
    applied = status.get("partitions", 0)
    updates = [_topic_ready(spec, applied, unsupported, problem)]
    if unsupported:
        message = "; ".join(p.message for p in unsupported)
        updates.append(Condition(NOT_SUPPORTED, "True", unsupported[0].reason, message))
    status["conditions"] = merge_conditions(
        before.get("conditions"),
        updates,
        generation=spec.meta.generation,
        now=now,
        drop=() if unsupported else (NOT_SUPPORTED,),
    )
    return status


def _topic_ready(
    spec: TopicSpec, applied: int, unsupported: Sequence[Problem], problem: Problem | None
) -> Condition:
    if problem is not None:
        return Condition(READY, "False", problem.reason, problem.message)
    if unsupported:
        return Condition(READY, "False", NOT_SUPPORTED, "; ".join(p.message for p in unsupported))
    if applied < spec.partitions:
        return Condition(
            READY, "False", "Placing", f"{applied} of {spec.partitions} partitions placed"
        )
    return Condition(READY, "True", "Placed", f"{applied} partitions placed and served")


# Consumer groups


def group_status(
    spec: ConsumerGroupSpec,
    described: Mapping[str, Any] | None,
    previous: Mapping[str, Any] | None,
    *,
    now: datetime,
) -> Status:
    """A group's status from the broker's description (``GET /v1/groups/{group}``, see
    docs/consumer-groups.md); None when the broker does not know the group (404
    ``unknown_group``): no member joined and no offset was committed yet."""
    before = previous or {}
    status: Status = {**before, "observedGeneration": spec.meta.generation}
    topics: list[dict[str, Any]] = []
    if described is None:
        state, members, lag = "Empty", 0, 0
        ready = Condition(
            READY, "True", "NotCreatedYet", "no member has joined and no offset is committed yet"
        )
    else:
        state = str(described.get("state", "Unknown"))
        members = len(described.get("members") or ())
        lag, topics, complete = _lag(described.get("offsets") or ())
        if not complete and "lag" in before:
            # A broker did not say where its partitions end: keep the last known lag rather
            # than report the missing part as no lag.
            lag, topics = before["lag"], before.get("topics", [])
        ready = Condition(READY, "True", "Described", f"{state}, {members} members, lag {lag}")
    status.update(
        state=state, members=members, lag=lag, topics=topics, lastRefreshTime=rfc3339(now)
    )
    status["conditions"] = merge_conditions(
        before.get("conditions"), [ready], generation=spec.meta.generation, now=now
    )
    return status


def group_status_unavailable(
    spec: ConsumerGroupSpec,
    problem: Problem,
    previous: Mapping[str, Any] | None,
    *,
    now: datetime,
) -> Status:
    """The cluster could not be asked: state Unknown; members and lag stay as last seen, and
    ``lastRefreshTime`` says when that was."""
    before = previous or {}
    status: Status = {**before, "observedGeneration": spec.meta.generation, "state": "Unknown"}
    ready = Condition(READY, "False", problem.reason, problem.message)
    status["conditions"] = merge_conditions(
        before.get("conditions"), [ready], generation=spec.meta.generation, now=now
    )
    return status


def _lag(offsets: Iterable[Mapping[str, Any]]) -> tuple[int, list[dict[str, Any]], bool]:
    """Total and per-topic lag over the partitions with a committed offset, and whether every
    one of them was known (a broker that did not answer leaves its partitions' lag unknown)."""
    by_topic: dict[str, int] = {}
    complete = True
    for entry in offsets:
        lag = entry.get("lag")
        if lag is None:
            # No commit for this partition: no lag to speak of. A commit without a known log
            # end: the lag is unknown.
            complete = complete and entry.get("committed") is None
            continue
        # A log truncated below a commit would make it negative; status lag is never below 0.
        topic = str(entry["topic"])
        by_topic[topic] = by_topic.get(topic, 0) + max(0, int(lag))
    topics = [{"topic": topic, "lag": lag} for topic, lag in sorted(by_topic.items())]
    return sum(by_topic.values()), topics, complete


def offset_reset_due(spec: ConsumerGroupSpec, status: Mapping[str, Any] | None) -> bool:
    """Whether the spec's offset reset still has to be applied: once per generation."""
    if spec.offset_reset is None:
        return False
    applied = ((status or {}).get("offsetReset") or {}).get("generation")
    return bool(applied != spec.meta.generation)


def offset_reset_applied(
    spec: ConsumerGroupSpec,
    offsets: Iterable[Mapping[str, Any]],
    previous: Mapping[str, Any] | None,
    *,
    now: datetime,
) -> Status:
    """Record a reset the broker applied; ``offsets`` as it answered them."""
    before = previous or {}
    left = [
        {"topic": o["topic"], "partition": o["partition"], "offset": o["offset"]} for o in offsets
    ]
    applied = Condition(
        OFFSET_RESET_APPLIED, "True", "Applied", f"{len(left)} partition offsets set"
    )
    return {
        **before,
        "offsetReset": {
            "generation": spec.meta.generation,
            "appliedTime": rfc3339(now),
            "offsets": left,
        },
        "conditions": merge_conditions(
            before.get("conditions"), [applied], generation=spec.meta.generation, now=now
        ),
    }


def offset_reset_refused(
    spec: ConsumerGroupSpec,
    problem: Problem,
    previous: Mapping[str, Any] | None,
    *,
    now: datetime,
) -> Status:
    """Record a reset the broker refused (``GroupNotEmpty`` while members are live); it stays
    due and is tried again at the next refresh."""
    before = previous or {}
    refused = Condition(OFFSET_RESET_APPLIED, "False", problem.reason, problem.message)
    return {
        **before,
        "conditions": merge_conditions(
            before.get("conditions"), [refused], generation=spec.meta.generation, now=now
        ),
    }


@dataclass(frozen=True, slots=True)
class RefreshSchedule:
    """How often a group's status is refreshed from the brokers: every ``interval``, sooner
    when something is pending (a new spec, a reset to apply), but never more often than every
    ``min_interval``, so that a burst of events cannot turn into a burst of broker calls and
    status writes."""

    interval: timedelta = timedelta(seconds=30)
    min_interval: timedelta = timedelta(seconds=5)

    def __post_init__(self) -> None:
        if not timedelta(0) < self.min_interval <= self.interval:
            raise ValueError("need 0 < min_interval <= interval")

    def delay(self, last_refresh: datetime | None, now: datetime, *, pending: bool) -> float:
        """Seconds until the next refresh is due; 0 when it is due now."""
        if last_refresh is None:
            return 0.0
        if now < last_refresh:
            return 0.0  # the clock went back: waiting for it to catch up could take long
        wait = self.min_interval if pending else self.interval
        return max(0.0, (wait - (now - last_refresh)).total_seconds())

    def due(self, last_refresh: datetime | None, now: datetime, *, pending: bool) -> bool:
        return self.delay(last_refresh, now, pending=pending) == 0.0


def last_refresh(status: Mapping[str, Any] | None) -> datetime | None:
    text = (status or {}).get("lastRefreshTime")
    return parse_rfc3339(text) if isinstance(text, str) else None


def group_refresh_pending(spec: ConsumerGroupSpec, status: Mapping[str, Any] | None) -> bool:
    """Whether a refresh should come before the regular interval: a spec the status does not
    describe yet, or a reset not tried yet. A refused reset is tried again at the regular
    interval only: stopping the group's consumers can take a while."""
    generation = spec.meta.generation
    if (status or {}).get("observedGeneration") != generation:
        return True
    tried = condition(status, OFFSET_RESET_APPLIED)
    return offset_reset_due(spec, status) and (
        tried is None or tried.get("observedGeneration") != generation
    )
