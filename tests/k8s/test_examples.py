"""Custom resources checked offline against the CRDs' schemas: the examples/ resources are
accepted as written (defaults filled in), and bad resources are refused."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.k8s.crd_schema import (
    REPO,
    apply_defaults,
    errors,
    load_crds,
    load_documents,
    openapi_schema,
)

CRDS = load_crds()
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
API_VERSION = "millstream.io/v1alpha1"


def example_resources() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.name}:{doc['kind']}", doc) for path in EXAMPLES for doc in load_documents(path)
    ]


def resource(kind: str, spec: dict[str, Any] | None, name: str = "example") -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}}
    if spec is not None:
        body["spec"] = spec
    return body


def test_examples_cover_every_kind() -> None:
    kinds = {doc["kind"] for _, doc in example_resources()}
    assert kinds == set(CRDS), f"examples/ has {sorted(kinds)}"


@pytest.mark.parametrize(("where", "doc"), example_resources(), ids=lambda v: str(v)[:40])
def test_example_is_valid(where: str, doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == API_VERSION, where
    assert errors(CRDS[doc["kind"]], doc) == [], where


def test_defaults_complete_a_minimal_topic() -> None:
    topic = resource("Topic", {"cluster": "millstream"})
    spec = apply_defaults(topic, openapi_schema(CRDS["Topic"]))["spec"]
    assert spec == {
        "cluster": "millstream",
        "partitions": 1,
        "replicationFactor": 1,
        "deletionPolicy": "Delete",
    }


def test_defaults_complete_a_cluster_without_spec() -> None:
    cluster = resource("Cluster", None)
    spec = apply_defaults(cluster, openapi_schema(CRDS["Cluster"]))["spec"]
    assert spec == {"brokers": 3, "storage": {"size": "10Gi"}, "pvcPolicy": "Retain"}
    assert errors(CRDS["Cluster"], cluster) == []


TOPIC = {"cluster": "millstream", "partitions": 3}
GROUP = {"cluster": "millstream"}
BAD: dict[str, tuple[str, dict[str, Any]]] = {
    "negative partitions": ("Topic", {**TOPIC, "partitions": -1}),
    "no partitions": ("Topic", {**TOPIC, "partitions": 0}),
    "more partitions than a broker takes": ("Topic", {**TOPIC, "partitions": 10_001}),
    "unknown spec field": ("Topic", {**TOPIC, "retention": "7d"}),
    "unknown config key": ("Topic", {**TOPIC, "config": {"retention.hours": 1}}),
    "deletionPolicy outside the enum": ("Topic", {**TOPIC, "deletionPolicy": "Orphan"}),
    "retention.ms 0": ("Topic", {**TOPIC, "config": {"retention.ms": 0}}),
    "retention.ms below -1": ("Topic", {**TOPIC, "config": {"retention.ms": -2}}),
    "segment.bytes below 4 KiB": ("Topic", {**TOPIC, "config": {"segment.bytes": 4095}}),
    "flush.ms above a day": ("Topic", {**TOPIC, "config": {"flush.ms": 86_400_001}}),
    "config value as a string": ("Topic", {**TOPIC, "config": {"segment.ms": "1000"}}),
    "replicationFactor 0": ("Topic", {**TOPIC, "replicationFactor": 0}),
    "topic without cluster": ("Topic", {"partitions": 3}),
    "cluster name with capitals": ("Topic", {**TOPIC, "cluster": "Millstream"}),
    "topic name '..'": ("Topic", {**TOPIC, "topicName": ".."}),
    "topic name with a slash": ("Topic", {**TOPIC, "topicName": "a/b"}),
    "no brokers": ("Cluster", {"brokers": 0}),
    "storage size not a quantity": ("Cluster", {"storage": {"size": "ten gigs"}}),
    "pvcPolicy outside the enum": ("Cluster", {"pvcPolicy": "Keep"}),
    "unknown broker setting": ("Cluster", {"config": {"logLevel": "debug"}}),
    "cluster topic default out of bounds": (
        "Cluster",
        {"config": {"topicDefaults": {"max.message.bytes": 1}}},
    ),
    "resource request not a quantity": ("Cluster", {"resources": {"requests": {"cpu": "lots"}}}),
    "reset to an unknown place": ("ConsumerGroup", {**GROUP, "offsetReset": {"to": "start"}}),
    "timestamp reset without timestamp": (
        "ConsumerGroup",
        {**GROUP, "offsetReset": {"to": "timestamp"}},
    ),
    "offsets reset without offsets": ("ConsumerGroup", {**GROUP, "offsetReset": {"to": "offsets"}}),
    "earliest reset with a timestamp": (
        "ConsumerGroup",
        {**GROUP, "offsetReset": {"to": "earliest", "timestamp": 1}},
    ),
    "offsets reset with topics": (
        "ConsumerGroup",
        {
            **GROUP,
            "offsetReset": {
                "to": "offsets",
                "topics": ["orders"],
                "offsets": [{"topic": "orders", "partition": 0, "offset": 5}],
            },
        },
    ),
    "negative offset": (
        "ConsumerGroup",
        {
            **GROUP,
            "offsetReset": {
                "to": "offsets",
                "offsets": [{"topic": "orders", "partition": 0, "offset": -1}],
            },
        },
    ),
    "empty group id": ("ConsumerGroup", {**GROUP, "groupId": ""}),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_resource_is_refused(case: str) -> None:
    kind, spec = BAD[case]
    assert errors(CRDS[kind], resource(kind, copy.deepcopy(spec))), f"{case} was accepted"


def test_cluster_name_longer_than_40_characters_is_refused() -> None:
    too_long = resource("Cluster", {}, name="c" * 41)
    assert errors(CRDS["Cluster"], too_long)
    assert errors(CRDS["Cluster"], resource("Cluster", {}, name="c" * 40)) == []


GOOD_RESETS = {
    "earliest, all topics": {"to": "earliest"},
    "latest, some topics": {"to": "latest", "topics": ["orders", "payments"]},
    "timestamp": {"to": "timestamp", "timestamp": 1_767_225_600_000, "topics": ["orders"]},
    "offsets": {"to": "offsets", "offsets": [{"topic": "orders", "partition": 2, "offset": 0}]},
}


@pytest.mark.parametrize("case", sorted(GOOD_RESETS))
def test_offset_reset_is_accepted(case: str) -> None:
    group = resource("ConsumerGroup", {**GROUP, "offsetReset": GOOD_RESETS[case]})
    assert errors(CRDS["ConsumerGroup"], group) == []


def test_status_written_by_the_operator_is_valid() -> None:
    # The shape the operator will write: checked here so that pruning cannot eat it silently.
    topic = resource("Topic", TOPIC)
    topic["status"] = {
        "observedGeneration": 2,
        "topicId": "3f2a9c",
        "topicName": "example",
        "partitions": 3,
        "placement": [{"partition": p, "replicas": [p % 2]} for p in range(3)],
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Placed",
                "message": "3 partitions on 2 brokers",
                "observedGeneration": 2,
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }
    assert errors(CRDS["Topic"], topic) == []


def test_examples_are_commented() -> None:
    for path in EXAMPLES:
        assert path.read_text().startswith("#"), f"{path.name}: say what the example shows"
