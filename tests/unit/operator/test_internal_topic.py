"""millstream.operator.internal_topic: the Topic each Cluster keeps for its groups' committed
offsets, the reserved names no other Topic may take, its fixed partition count and
offset-keeping settings, and that the placement, drift and rebalance decisions treat it as an
ordinary Topic."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from millstream.internal_topics import (
    GROUP_OFFSETS_CONFIG,
    GROUP_OFFSETS_PARTITIONS,
    GROUP_OFFSETS_TOPIC,
)
from millstream.operator import cluster_plan, internal_topic, plan, rebalance
from millstream.operator.placement import broker_loads
from millstream.operator.resources import CLUSTER_LABEL
from millstream.operator.specs import (
    INTERNAL_LABEL,
    SpecError,
    TopicSpec,
    parse_cluster,
    parse_topic,
)
from millstream.operator.status import condition
from tests.k8s.crd_schema import errors, load_crds
from tests.unit.operator.support import NAMESPACE, body

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CLUSTER = parse_cluster(body("Cluster", {}, name="events"))


def as_created(manifest: dict[str, Any], **status: Any) -> dict[str, Any]:
    """The manifest as the API server hands it back: uid, generation, creation time."""
    created = copy.deepcopy(manifest)
    created["metadata"].update(
        uid="uid-of-internal", generation=1, creationTimestamp="2026-01-02T00:00:00Z"
    )
    if status:
        created["status"] = status
    return created


def internal_body(**spec: Any) -> dict[str, Any]:
    created = as_created(internal_topic.internal_topic(CLUSTER))
    created["spec"].update(spec)
    return created


def user_topic(name: str, **spec: Any) -> dict[str, Any]:
    return body("Topic", {"cluster": "events", **spec}, name=name)


def placed(resource: dict[str, Any], placement: dict[int, int]) -> dict[str, Any]:
    """``resource`` as the Topic handler leaves it once placed."""
    spec = parse_topic(resource)
    resource["metadata"]["annotations"] = {plan.PLACED_ON_ANNOTATION: spec.cluster}
    resource["status"] = {
        "observedGeneration": spec.meta.generation,
        "topicName": spec.topic_name,
        "topicId": spec.meta.uid,
        "partitions": len(placement),
        "placement": [{"partition": p, "replicas": [b]} for p, b in sorted(placement.items())],
    }
    return resource


# --- the Topic the Cluster keeps ------------------------------------------------------------


def test_each_cluster_keeps_a_retained_internal_topic_owned_by_it() -> None:
    manifest = internal_topic.internal_topic(CLUSTER)
    metadata = manifest["metadata"]
    assert (metadata["name"], metadata["namespace"]) == ("events-group-offsets", NAMESPACE)
    assert metadata["labels"][INTERNAL_LABEL] == "true"
    assert metadata["labels"][CLUSTER_LABEL] == "events"
    assert metadata["labels"]["app.kubernetes.io/managed-by"] == "millstream-operator"
    assert metadata["labels"]["app.kubernetes.io/component"] == "group-offsets"
    assert metadata["ownerReferences"] == [
        {
            "apiVersion": "millstream.io/v1alpha1",
            "kind": "Cluster",
            "name": "events",
            "uid": "uid-of-cluster-events",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert manifest["spec"] == {
        "cluster": "events",
        "topicName": GROUP_OFFSETS_TOPIC,
        "partitions": GROUP_OFFSETS_PARTITIONS,
        "config": dict(GROUP_OFFSETS_CONFIG),
        "deletionPolicy": "Retain",
    }


def test_the_topic_crd_accepts_the_internal_topic() -> None:
    # Retention -1 (kept for good) included: the API server would refuse what the schema does.
    assert errors(load_crds()["Topic"], internal_topic.internal_topic(CLUSTER)) == []


def test_the_internal_topic_parses_as_the_internal_topic() -> None:
    spec = parse_topic(internal_body())
    assert spec.internal
    assert (spec.topic_name, spec.partitions) == (GROUP_OFFSETS_TOPIC, GROUP_OFFSETS_PARTITIONS)
    assert dict(spec.config) == dict(GROUP_OFFSETS_CONFIG)
    assert spec.deletion_policy == "Retain"
    internal_topic.check_reserved_name(spec)
    assert not internal_topic.deletes_from_brokers(spec)
    assert internal_topic.problems(spec) == []


def test_presence_of_the_internal_topic_among_the_namespaces_topics() -> None:
    mine = internal_body()
    assert internal_topic.presence("events", []) == "missing"
    assert internal_topic.presence("events", [user_topic("orders")]) == "missing"
    assert internal_topic.presence("events", [user_topic("orders"), mine]) == "present"
    # Another Cluster's internal Topic is not this one's.
    assert internal_topic.presence("other", [mine]) == "missing"
    squatter = user_topic("events-group-offsets")
    assert internal_topic.presence("events", [squatter]) == "taken"


# --- reserved names --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["__mine", GROUP_OFFSETS_TOPIC])
def test_a_user_topic_cannot_take_a_reserved_name(name: str) -> None:
    spec = parse_topic(user_topic("sneaky", topicName=name))
    assert not spec.internal
    with pytest.raises(SpecError) as refused:
        internal_topic.check_reserved_name(spec)
    assert refused.value.field == "spec.topicName"
    assert "reserved" in str(refused.value) and "'events-group-offsets'" in str(refused.value)


def test_a_name_with_one_underscore_is_no_reserved_name() -> None:
    internal_topic.check_reserved_name(parse_topic(user_topic("a", topicName="_private")))


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        ("events-group-offsets", {}),  # the name without the label
        ("events-group-offsets", {INTERNAL_LABEL: "yes"}),
        ("orders", {INTERNAL_LABEL: "true"}),  # the label without the name
        ("other-group-offsets", {INTERNAL_LABEL: "true"}),  # another Cluster's name
    ],
)
def test_only_the_name_and_the_label_together_make_the_internal_topic(
    name: str, labels: dict[str, str]
) -> None:
    resource = user_topic(name, topicName=GROUP_OFFSETS_TOPIC)
    resource["metadata"]["labels"] = labels
    spec = parse_topic(resource)
    assert not spec.internal
    with pytest.raises(SpecError):
        internal_topic.check_reserved_name(spec)


def test_a_refused_topic_says_why_and_records_no_reserved_name() -> None:
    spec = parse_topic(user_topic("sneaky", topicName="__mine"))
    with pytest.raises(SpecError) as refused:
        internal_topic.check_reserved_name(spec)
    status = internal_topic.refused_status(spec, None, refused.value, now=NOW)
    ready = condition(status, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == (
        "False",
        "ReservedTopicName",
    )
    assert "reserved" in ready["message"]
    # Renaming the Topic to an allowed name then fixes it (no TopicNameChange).
    assert "topicName" not in status
    renamed = parse_topic(user_topic("sneaky", topicName="mine"))
    decided = plan.plan_topic(renamed, status, placed_on=None, brokers=[0, 1], existing=None)
    assert decided.target is not None and decided.unsupported == ()
    # A Topic placed before keeps the name it placed its topic under.
    before = {"topicName": "mine", "placement": [{"partition": 0, "replicas": [1]}]}
    kept = internal_topic.refused_status(spec, before, refused.value, now=NOW)
    assert kept["topicName"] == "mine" and kept["placement"] == before["placement"]


def test_the_internal_topic_manages_its_topic_whoever_came_first() -> None:
    early = user_topic("early", topicName=GROUP_OFFSETS_TOPIC)
    early["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"  # before the internal one
    mine = internal_body()
    everyone = [early, mine]
    assert plan.topic_taken(mine, everyone) is None
    taken = plan.topic_taken(early, everyone)
    assert taken is not None and taken.reason == "TopicNameTaken"


# --- what cannot change ------------------------------------------------------------------------


def reasons(spec: TopicSpec) -> list[str]:
    return [p.reason for p in internal_topic.problems(spec)]


@pytest.mark.parametrize("partitions", [1, GROUP_OFFSETS_PARTITIONS - 1, 32])
def test_the_internal_topics_partition_count_cannot_change(partitions: int) -> None:
    status = placed(internal_body(), dict.fromkeys(range(GROUP_OFFSETS_PARTITIONS), 0))["status"]
    spec = parse_topic(internal_body(partitions=partitions))
    assert reasons(spec) == [internal_topic.PARTITIONS_FIXED]
    decided = plan.plan_topic(spec, status, placed_on="events", brokers=[0, 1], existing=None)
    assert decided.target is None  # nothing pushed: the brokers keep 16 partitions
    assert decided.unsupported[0].reason == internal_topic.PARTITIONS_FIXED
    assert "every group's committed offsets" in decided.unsupported[0].message


def test_the_internal_topics_name_cannot_change() -> None:
    spec = parse_topic(internal_body(topicName="offsets"))
    assert reasons(spec) == [internal_topic.NAME_FIXED]
    assert plan.plan_topic(spec, None, placed_on=None, brokers=[0], existing=None).target is None


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"retention.ms": 86_400_000}, "retention.ms=86400000"),  # kubectl edit
        ({"retention.bytes": 1 << 30}, "retention.bytes=1073741824"),
        ({"flush.ms": 1000}, "flush.ms=1000"),
        ({"retention.ms": None}, "retention.ms unset"),  # the broker's default would apply
        ({"flush.ms": None}, "flush.ms unset"),  # the Cluster's topicDefaults would apply
    ],
)
def test_the_internal_topics_offset_keeping_settings_cannot_change(
    change: dict[str, int | None], said: str
) -> None:
    config = {**GROUP_OFFSETS_CONFIG, **change}
    spec = parse_topic(internal_body(config={k: v for k, v in config.items() if v is not None}))
    assert reasons(spec) == [internal_topic.CONFIG_FIXED]
    status = placed(internal_body(), dict.fromkeys(range(GROUP_OFFSETS_PARTITIONS), 0))["status"]
    decided = plan.plan_topic(spec, status, placed_on="events", brokers=[0, 1], existing=None)
    assert decided.target is None  # nothing pushed, like a partition count
    [problem] = decided.unsupported
    assert problem.reason == internal_topic.CONFIG_FIXED
    assert said in problem.message and "committed offsets" in problem.message


def test_the_internal_topic_is_created_durable_and_kept_for_good() -> None:
    assert dict(internal_topic.FIXED_CONFIG) == {
        "retention.ms": -1,
        "retention.bytes": -1,
        "flush.ms": 0,
    }
    config = internal_topic.internal_topic(CLUSTER)["spec"]["config"]
    assert {k: config[k] for k in internal_topic.FIXED_CONFIG} == internal_topic.FIXED_CONFIG


def test_the_internal_topics_segment_size_may_be_tuned() -> None:
    config = {**GROUP_OFFSETS_CONFIG, "segment.bytes": 64 * 1024 * 1024, "segment.ms": 3_600_000}
    spec = parse_topic(internal_body(config=config))
    assert reasons(spec) == []
    decided = plan.plan_topic(spec, None, placed_on=None, brokers=[0, 1], existing=None)
    assert decided.target is not None and decided.target.config == config


def test_the_drift_check_never_pushes_a_refused_setting() -> None:
    # The refused spec's status still describes it (observedGeneration), so the drift check
    # and the rebalance push the Topic; they push the settings that keep the offsets.
    tuned = {"retention.ms": 3_600_000, "flush.ms": 5000, "segment.bytes": 4 * 1024 * 1024}
    refused = internal_body(config=tuned)
    [target] = plan.drift_targets("events", [placed(refused, {0: 0})])
    assert target.config == {**internal_topic.FIXED_CONFIG, "segment.bytes": 4 * 1024 * 1024}
    # A user's Topic pushes its settings as they are.
    mine = user_topic("orders", config={"retention.ms": 3_600_000, "flush.ms": 5000})
    [target] = plan.drift_targets("events", [placed(mine, {0: 0})])
    assert target.config == {"retention.ms": 3_600_000, "flush.ms": 5000}


def test_deleting_the_internal_topic_never_deletes_the_offsets() -> None:
    spec = parse_topic(internal_body(deletionPolicy="Delete"))
    assert reasons(spec) == ["InternalTopicRetained"]
    assert not internal_topic.deletes_from_brokers(spec)
    # Reported, but not blocking: the topic is still placed and pushed.
    decided = plan.plan_topic(spec, None, placed_on=None, brokers=[0, 1], existing=None)
    assert decided.target is not None
    assert internal_topic.deletes_from_brokers(parse_topic(user_topic("orders")))


def test_user_topics_have_no_internal_problems() -> None:
    assert internal_topic.problems(parse_topic(user_topic("orders", partitions=3))) == []


# --- an ordinary Topic to placement, drift and rebalance -----------------------------------


def test_the_internal_topic_is_spread_over_the_brokers() -> None:
    spec = parse_topic(internal_body())
    decided = plan.plan_topic(spec, None, placed_on=None, brokers=[0, 1, 2], existing=None)
    assert decided.target is not None and decided.target.name == GROUP_OFFSETS_TOPIC
    assert sorted(broker_loads(decided.target.placement, range(3)).values()) == [5, 5, 6]
    assert decided.target.config == dict(GROUP_OFFSETS_CONFIG)


def test_the_rebalance_moves_the_internal_topic_like_any_other() -> None:
    spec = parse_topic(internal_body())
    first = plan.plan_topic(spec, None, placed_on=None, brokers=[0, 1], existing=None)
    assert first.target is not None
    assert broker_loads(first.target.placement, range(2)) == {0: 8, 1: 8}
    topics = [placed(internal_body(), dict(first.target.placement))]
    # The drift check pushes it, and the rebalance reads placements from those targets.
    [target] = plan.drift_targets("events", topics)
    assert (target.name, target.partitions) == (GROUP_OFFSETS_TOPIC, GROUP_OFFSETS_PARTITIONS)
    placements = {target.name: dict(target.placement)}

    # Scale-out 2 -> 3: a balanced share moves onto the new broker, nothing else moves.
    moves = rebalance.plan_moves(placements, 3)
    assert {m.target for m in moves} == {2} and len(moves) == 5
    wider = rebalance.target_placements(placements, 3)[GROUP_OFFSETS_TOPIC]
    assert sorted(broker_loads(wider, range(3)).values()) == [5, 5, 6]

    # Scale-in 3 -> 2: the leaving broker is kept until its partitions have moved off.
    topics = [placed(internal_body(), wider)]
    assert cluster_plan.statefulset_replicas(2, plan.placements_on("events", topics))[0] == 3
    back = rebalance.plan_moves({GROUP_OFFSETS_TOPIC: wider}, 2)
    assert {m.source for m in back} == {2} and {m.target for m in back} <= {0, 1}
