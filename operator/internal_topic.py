"""The Topic each Cluster keeps for its consumer groups' committed offsets.

Committed offsets live in the topic ``__group_offsets`` (:mod:`millstream.internal_topics`,
Kafka's ``__consumer_offsets``): the broker serving a group's partition of it coordinates the
group. The operator declares that topic as an ordinary Topic resource, ``<cluster>-group-offsets``
(:func:`internal_topic`), so that the Topic handler places and pushes it and the rebalancer moves
its partitions like any other, and a group's offsets follow its partition when brokers come and
go. The Cluster's reconcile and drift check create it when it is missing (:func:`presence`), so a
deleted one comes back, adopting the topic the brokers still hold.

What sets it apart from a user's Topic, checked here for :mod:`.plan` and :mod:`.topics`:

- It alone may name a reserved topic (:func:`.specs.is_internal_topic`); any other Topic that
  does is refused (:func:`check_reserved_name`).
- Its partition count is fixed: a group's partition is a hash of its id modulo the count, so
  another count would send every group to a partition without its offsets. A spec asking for
  another count, or another topic name, is refused and nothing is pushed (:func:`problems`).
- So are the settings that keep the offsets (:data:`FIXED_CONFIG`: no retention, so that the
  brokers never delete a group's latest commit; ``flush.ms`` 0, so that a commit is on disk
  before it is acknowledged, whatever the Cluster's ``topicDefaults`` say). A spec that changes
  or removes one is refused like a partition count; ``segment.bytes`` may be tuned. Whatever
  the spec says, the settings pushed for the topic keep them (:func:`pushed_config`).
- Deleting it never deletes the topic from the brokers, whatever its ``deletionPolicy`` says: the
  resource is created with Retain, and a Delete put there is reported and not followed.
- It is owned by its Cluster, so Kubernetes deletes it with the Cluster.

Pure functions: the caller creates the manifest (a 409 means it exists) and writes the problems
into the Topic's status.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final, Literal

from millstream.internal_topics import (
    GROUP_OFFSETS_CONFIG,
    GROUP_OFFSETS_PARTITIONS,
    GROUP_OFFSETS_TOPIC,
    is_internal,
)
from millstream.operator.resources import Manifest, labels, owner_reference
from millstream.operator.specs import (
    API_VERSION,
    INTERNAL_LABEL,
    ClusterSpec,
    SpecError,
    TopicSpec,
    internal_topic_name,
    is_internal_topic,
)
from millstream.operator.status import Problem, Status, topic_status

Presence = Literal["missing", "present", "taken"]
# Reasons of the problems that leave nothing to push (:data:`.plan._BLOCKING`).
PARTITIONS_FIXED: Final = "InternalPartitionsFixed"
NAME_FIXED: Final = "InternalTopicNameFixed"
CONFIG_FIXED: Final = "InternalConfigFixed"
BLOCKING: Final = frozenset({PARTITIONS_FIXED, NAME_FIXED, CONFIG_FIXED})
# Of the settings the topic is created with, those that only tune it; every other one (and
# any added to GROUP_OFFSETS_CONFIG later) keeps the offsets and cannot change.
_TUNABLE: Final = frozenset({"segment.bytes"})
FIXED_CONFIG: Final[Mapping[str, int]] = MappingProxyType(
    {k: v for k, v in GROUP_OFFSETS_CONFIG.items() if k not in _TUNABLE}
)


def internal_topic(spec: ClusterSpec) -> Manifest:
    """The Topic holding the Cluster's committed group offsets, owned by the Cluster."""
    cluster = spec.meta.name
    return {
        "apiVersion": API_VERSION,
        "kind": "Topic",
        "metadata": {
            "name": internal_topic_name(cluster),
            "namespace": spec.meta.namespace,
            "labels": {
                **labels(cluster),
                # A Topic, not a part of the brokers (the component of the Cluster's objects).
                "app.kubernetes.io/component": "group-offsets",
                INTERNAL_LABEL: "true",
            },
            "ownerReferences": [owner_reference(spec.meta)],
        },
        "spec": {
            "cluster": cluster,
            "topicName": GROUP_OFFSETS_TOPIC,
            "partitions": GROUP_OFFSETS_PARTITIONS,
            "config": dict(GROUP_OFFSETS_CONFIG),
            # Deleting the resource (by hand, or with the Cluster) keeps the offsets.
            "deletionPolicy": "Retain",
        },
    }


def presence(cluster: str, topics: Iterable[Mapping[str, Any]]) -> Presence:
    """Whether the namespace's Topics (``topics``) hold the Cluster's internal Topic: "missing"
    (to create), "present" (one being deleted counts: it is created again once gone), or
    "taken" by a Topic of its name without the internal label (a user's, left alone)."""
    name = internal_topic_name(cluster)
    for topic in topics:
        metadata = topic.get("metadata") or {}
        if metadata.get("name") == name:
            labels = metadata.get("labels") or {}
            return "present" if is_internal_topic(name, labels, cluster) else "taken"
    return "missing"


def check_reserved_name(spec: TopicSpec) -> None:
    """Raise :class:`~.specs.SpecError` for a Topic that names a reserved topic and is not its
    Cluster's internal Topic.

    Apart from :func:`~.specs.parse_topic` on purpose: a Topic refused here still parses, so a
    topic it placed before its name was changed to a reserved one stays counted where
    partitions are placed, moved and drained, rather than forgotten with its data.
    """
    if is_internal(spec.topic_name) and not spec.internal:
        raise SpecError(
            "spec.topicName",
            f"{spec.topic_name!r} is reserved: names beginning with '__' are the cluster's own "
            f"topics ({GROUP_OFFSETS_TOPIC} is Topic {internal_topic_name(spec.cluster)!r}, "
            "which the operator keeps)",
        )


def refused_status(
    spec: TopicSpec, previous: Mapping[str, Any] | None, error: SpecError, *, now: datetime
) -> Status:
    """The status of a Topic :func:`check_reserved_name` refused: not Ready, saying why. Unlike
    other refusals it records no ``topicName`` it did not have: none is on the brokers, and a
    recorded reserved name would turn the rename that fixes the Topic into a TopicNameChange."""
    status = topic_status(spec, previous, now=now, problem=Problem("ReservedTopicName", str(error)))
    if "topicName" not in (previous or {}):
        del status["topicName"]
    return status


def problems(spec: TopicSpec) -> list[Problem]:
    """What the internal Topic's spec asks that is not done (none for any other Topic)."""
    if not spec.internal:
        return []
    found = []
    if spec.topic_name != GROUP_OFFSETS_TOPIC:
        found.append(
            Problem(
                NAME_FIXED,
                f"the internal Topic holds {GROUP_OFFSETS_TOPIC!r} and cannot serve "
                f"{spec.topic_name!r}",
            )
        )
    if spec.partitions != GROUP_OFFSETS_PARTITIONS:
        found.append(
            Problem(
                PARTITIONS_FIXED,
                f"{GROUP_OFFSETS_TOPIC} has {GROUP_OFFSETS_PARTITIONS} partitions for good: "
                "each group's partition is a hash of its id modulo that count, so "
                f"{spec.partitions} would lose every group's committed offsets; nothing changed",
            )
        )
    changed = [
        f"{k}={spec.config[k]}" if k in spec.config else f"{k} unset"
        for k, v in FIXED_CONFIG.items()
        if spec.config.get(k) != v
    ]
    if changed:
        kept = ", ".join(f"{k}={v}" for k, v in FIXED_CONFIG.items())
        found.append(
            Problem(
                CONFIG_FIXED,
                f"{GROUP_OFFSETS_TOPIC} keeps {kept} for good: others would let the brokers "
                "delete committed offsets or acknowledge commits before they are on disk; "
                f"{', '.join(changed)} refused, nothing changed",
            )
        )
    if spec.deletion_policy == "Delete":
        found.append(
            Problem(
                "InternalTopicRetained",
                "deletionPolicy Delete is not followed for the internal Topic: deleting it "
                f"keeps {GROUP_OFFSETS_TOPIC} on the brokers, with every group's offsets",
            )
        )
    return found


def pushed_config(spec: TopicSpec) -> dict[str, int]:
    """The settings pushed for a Topic: its spec's, except that the internal Topic's fixed ones
    keep their values. The drift check and the rebalance push the status of a Topic whose
    spec was refused; they must not push the settings refused with it."""
    if not spec.internal:
        return dict(spec.config)
    return {**spec.config, **FIXED_CONFIG}


def deletes_from_brokers(spec: TopicSpec) -> bool:
    """Whether deleting the Topic resource deletes its topic from the brokers."""
    return spec.deletion_policy == "Delete" and not spec.internal
