"""Specs parsed from resource bodies: the examples, the CRDs' defaults, and bad bodies refused
with a message that names the field, including every body the API server itself refuses."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from millstream.broker.storage import config as broker_config
from millstream.operator.specs import (
    TOPIC_CONFIG_BOUNDS,
    TOPIC_CONFIG_REFUSED,
    BrokerConfig,
    ClusterSpec,
    ConsumerGroupSpec,
    Meta,
    OffsetReset,
    PartitionOffset,
    Resources,
    SpecError,
    Storage,
    TopicSpec,
    parse_cluster,
    parse_group,
    parse_topic,
)
from tests.k8s.crd_schema import REPO, apply_defaults, load_crds, load_documents, openapi_schema
from tests.k8s.test_examples import BAD as REFUSED_BY_THE_API_SERVER
from tests.unit.operator.support import NAMESPACE, body

CRDS = load_crds()
PARSERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "Cluster": parse_cluster,
    "Topic": parse_topic,
    "ConsumerGroup": parse_group,
}


def example(name: str) -> dict[str, Any]:
    (doc,) = load_documents(REPO / "examples" / name)
    doc["metadata"].update(namespace=NAMESPACE, uid="uid-1", generation=3)
    return doc


def meta(name: str, generation: int = 3) -> Meta:
    return Meta(name=name, namespace=NAMESPACE, uid="uid-1", generation=generation)


def test_the_example_cluster() -> None:
    assert parse_cluster(example("cluster.yaml")) == ClusterSpec(
        meta=meta("millstream"),
        brokers=3,
        image=None,
        storage=Storage(size="10Gi", storage_class_name=None),
        resources=Resources(requests={"cpu": "250m", "memory": "512Mi"}, limits={"memory": "1Gi"}),
        config=BrokerConfig(topic_defaults={"retention.ms": 259_200_000}),
        pvc_policy="Delete",
    )


def test_the_example_topic() -> None:
    assert parse_topic(example("topic.yaml")) == TopicSpec(
        meta=meta("orders"),
        cluster="millstream",
        topic_name="orders",
        partitions=6,
        replication_factor=1,
        config={"retention.ms": 604_800_000, "segment.bytes": 268_435_456},
        deletion_policy="Retain",
    )


def test_the_example_groups() -> None:
    assert parse_group(example("consumergroup.yaml")) == ConsumerGroupSpec(
        meta=meta("billing"), cluster="millstream", group_id="billing"
    )
    replay = parse_group(example("consumergroup-replay.yaml"))
    assert replay.offset_reset == OffsetReset(
        to="timestamp", topics=("orders",), timestamp=1_767_225_600_000
    )


@pytest.mark.parametrize(
    ("kind", "spec"),
    [
        ("Cluster", None),
        ("Cluster", {}),
        ("Topic", {"cluster": "c"}),
        ("ConsumerGroup", {"cluster": "c"}),
    ],
)
def test_defaults_are_the_crds(kind: str, spec: dict[str, Any] | None) -> None:
    # A body without defaults means what the API server makes of it once it filled them in.
    bare = body(kind, spec)
    defaulted = apply_defaults(bare, openapi_schema(CRDS[kind]))
    assert PARSERS[kind](bare) == PARSERS[kind](defaulted)


def test_names_default_to_metadata_name() -> None:
    topic = parse_topic(body("Topic", {"cluster": "c"}, name="orders"))
    assert topic.topic_name == "orders"
    named = parse_topic(body("Topic", {"cluster": "c", "topicName": "Orders_EU"}, name="orders"))
    assert named.topic_name == "Orders_EU"
    group = parse_group(body("ConsumerGroup", {"cluster": "c", "groupId": "Billing_1"}))
    assert group.group_id == "Billing_1"


def test_quantities_may_be_numbers() -> None:
    spec = {"resources": {"requests": {"cpu": 2}, "limits": {"memory": "1Gi"}}}
    assert parse_cluster(body("Cluster", spec)).resources.requests == {"cpu": "2"}


def test_offsets_reset() -> None:
    reset = {"to": "offsets", "offsets": [{"topic": "orders", "partition": 2, "offset": 7}]}
    parsed = parse_group(body("ConsumerGroup", {"cluster": "c", "offsetReset": reset}))
    assert parsed.offset_reset == OffsetReset(
        to="offsets", offsets=(PartitionOffset("orders", 2, 7),)
    )


def test_specs_are_frozen() -> None:
    topic = parse_topic(body("Topic", {"cluster": "c", "config": {"flush.ms": 5}}))
    with pytest.raises(AttributeError):
        topic.partitions = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        topic.config["flush.ms"] = 6  # type: ignore[index]


# What each refusal says: (kind, spec, field named, words in the message).
REFUSED: dict[str, tuple[str, Any, str, str]] = {
    "partitions not a number": (
        "Topic", {"cluster": "c", "partitions": "6"}, "spec.partitions", "integer from 1 to 10000"
    ),
    "partitions a boolean": (
        "Topic", {"cluster": "c", "partitions": True}, "spec.partitions", "True"
    ),
    "negative partitions": ("Topic", {"cluster": "c", "partitions": -3}, "spec.partitions", "-3"),
    "no cluster": ("Topic", {"partitions": 3}, "spec.cluster", "name the Cluster"),
    "no spec": ("Topic", None, "spec", "missing"),
    "spec not an object": ("Topic", ["c"], "spec", "must be an object, got list"),
    "unknown field": ("Topic", {"cluster": "c", "retention": "7d"}, "spec.retention", "unknown"),
    "unknown setting": (
        "Topic", {"cluster": "c", "config": {"retention.hours": 1}}, "spec.config.retention.hours",
        "known: flush.ms",
    ),
    "retention.ms 0": (
        "Topic", {"cluster": "c", "config": {"retention.ms": 0}}, "spec.config.retention.ms",
        "refused",
    ),
    "topic name '.'": ("Topic", {"cluster": "c", "topicName": "."}, "spec.topicName", "'.'"),
    "deletion policy": (
        "Topic", {"cluster": "c", "deletionPolicy": "Orphan"}, "spec.deletionPolicy",
        "one of Delete, Retain",
    ),
    "brokers 0": ("Cluster", {"brokers": 0}, "spec.brokers", "from 1"),
    "storage not an object": ("Cluster", {"storage": "10Gi"}, "spec.storage", "object"),
    "storage size": ("Cluster", {"storage": {"size": "10 GB"}}, "spec.storage.size", "'10 GB'"),
    "request not a quantity": (
        "Cluster", {"resources": {"requests": {"cpu": "lots"}}}, "spec.resources.requests.cpu",
        "not a quantity",
    ),
    "unknown storage field": (
        "Cluster", {"storage": {"class": "ssd"}}, "spec.storage.class", "unknown"
    ),
    "topic default out of bounds": (
        "Cluster", {"config": {"topicDefaults": {"segment.bytes": 1}}},
        "spec.config.topicDefaults.segment.bytes", "from 4096",
    ),
    "reset without to": (
        "ConsumerGroup", {"cluster": "c", "offsetReset": {"topics": ["a"]}}, "spec.offsetReset.to",
        "missing",
    ),
    "reset mixing kinds": (
        "ConsumerGroup", {"cluster": "c", "offsetReset": {"to": "latest", "timestamp": 5}},
        "spec.offsetReset.timestamp", "not allowed with to: latest",
    ),
    "offset without partition": (
        "ConsumerGroup",
        {
            "cluster": "c",
            "offsetReset": {"to": "offsets", "offsets": [{"topic": "a", "offset": 1}]},
        },
        "spec.offsetReset.offsets[0].partition", "missing",
    ),
    "bad topic in reset": (
        "ConsumerGroup", {"cluster": "c", "offsetReset": {"to": "earliest", "topics": ["a/b"]}},
        "spec.offsetReset.topics[0]", "'a/b'",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_bad_bodies_are_refused_naming_the_field(case: str) -> None:
    kind, spec, field, words = REFUSED[case]
    with pytest.raises(SpecError) as refused:
        PARSERS[kind](body(kind, spec))
    assert refused.value.field == field
    assert str(refused.value).startswith(f"{field}: ")
    assert words in str(refused.value)


@pytest.mark.parametrize("case", sorted(REFUSED_BY_THE_API_SERVER))
def test_what_the_api_server_refuses_is_refused(case: str) -> None:
    # The same table tests/k8s checks against the CRDs: the parser is never laxer.
    kind, spec = REFUSED_BY_THE_API_SERVER[case]
    with pytest.raises(SpecError):
        PARSERS[kind](body(kind, copy.deepcopy(spec)))


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({"name": "c", "namespace": "n"}, "metadata.uid"),
        ({"name": "c", "uid": "u"}, "metadata.namespace"),
        ({"namespace": "n", "uid": "u"}, "metadata.name"),
        ({"name": "c", "namespace": "n", "uid": "u", "generation": 0}, "metadata.generation"),
    ],
)
def test_metadata_is_checked(metadata: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as refused:
        parse_cluster({"metadata": metadata, "spec": {}})
    assert refused.value.field == field


def test_cluster_names_must_fit_the_names_they_become() -> None:
    with pytest.raises(SpecError, match=r"metadata\.name: 'c{41}' is not a cluster name"):
        parse_cluster(body("Cluster", {}, name="c" * 41))
    assert parse_cluster(body("Cluster", {}, name="c" * 40)).meta.name == "c" * 40


def test_topic_settings_match_the_broker_and_the_crds() -> None:
    assert dict(TOPIC_CONFIG_BOUNDS) == broker_config.BOUNDS
    assert dict(TOPIC_CONFIG_REFUSED) == broker_config.EXCLUDED
    for kind, path in (("Topic", ["config"]), ("Cluster", ["config", "topicDefaults"])):
        node = openapi_schema(CRDS[kind])["properties"]["spec"]
        for step in path:
            node = node["properties"][step]
        crd = {
            name: (field["minimum"], field["maximum"]) for name, field in node["properties"].items()
        }
        assert crd == dict(TOPIC_CONFIG_BOUNDS), kind
