"""The CRDs of crds/, checked offline: what a Kubernetes 1.20 API server would accept, what
kubectl shows, and that their bounds are the broker's own (broker/storage/config.py)."""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from millstream.broker.storage.config import BOUNDS, EXCLUDED
from millstream.broker.storage.log_manager import MAX_PARTITIONS
from tests.k8s.crd_schema import (
    CRD_DIR,
    apply_defaults,
    errors,
    load_crds,
    openapi_schema,
    structural_problems,
    to_json_schema,
    walk,
)

# kubernetes-validate 1.28 builds on jsonschema's older reference API.
pytestmark = [
    pytest.mark.filterwarnings("ignore:jsonschema.RefResolver is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The metaschema specified by:DeprecationWarning"),
]

CRDS = load_crds()
KINDS = sorted(CRDS)
# The API server the CRDs are written for, and the newest that kubernetes-validate knows.
KUBE_VERSIONS = ["1.20", "1.28"]
PRINTER_COLUMNS = {
    "Cluster": ["Brokers", "Ready", "Age"],
    "Topic": ["Partitions", "Replicas", "Ready", "Age"],
    "ConsumerGroup": ["State", "Members", "Lag", "Age"],
}


def test_crds_folder_holds_the_three_kinds() -> None:
    assert KINDS == ["Cluster", "ConsumerGroup", "Topic"], f"CRDs in {CRD_DIR}: {KINDS}"


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_crd_is_a_valid_manifest_for_kubernetes(kind: str, version: str) -> None:
    # Strict: a field the API version does not know (a CEL rule before 1.23, say) is an error.
    kubernetes_validate.validate(CRDS[kind], version, strict=True)


@pytest.mark.parametrize("kind", KINDS)
def test_crd_names_group_and_version(kind: str) -> None:
    spec = CRDS[kind]["spec"]
    names = spec["names"]
    assert spec["group"] == "millstream.io"
    assert spec["scope"] == "Namespaced"
    assert CRDS[kind]["metadata"]["name"] == f"{names['plural']}.millstream.io"
    assert names["singular"] == kind.lower()
    assert names["plural"] == f"{kind.lower()}s"
    assert names["listKind"] == f"{kind}List"
    assert names["categories"] == ["millstream"]
    assert names["shortNames"], "a short name spares typing the full resource name"
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)


def test_short_names_are_distinct() -> None:
    short = [name for crd in CRDS.values() for name in crd["spec"]["names"]["shortNames"]]
    assert len(short) == len(set(short)), short


@pytest.mark.parametrize("kind", KINDS)
def test_status_is_a_subresource(kind: str) -> None:
    (version,) = CRDS[kind]["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    assert "status" in openapi_schema(CRDS[kind])["properties"]


@pytest.mark.parametrize("kind", KINDS)
def test_printer_columns(kind: str) -> None:
    (version,) = CRDS[kind]["spec"]["versions"]
    columns = version["additionalPrinterColumns"]
    default = [c["name"] for c in columns if c.get("priority", 0) == 0]
    assert default == PRINTER_COLUMNS[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_printer_columns_point_at_fields_of_their_type(kind: str) -> None:
    (version,) = CRDS[kind]["spec"]["versions"]
    schema = openapi_schema(CRDS[kind])
    for column in version["additionalPrinterColumns"]:
        path = column["jsonPath"]
        if path == ".metadata.creationTimestamp":
            assert column["type"] == "date"
            continue
        field = _field_at(schema, path)
        assert field is not None, f"{column['name']}: {path} is not in the schema"
        expected = {"date": "string", "integer": "integer", "string": "string"}[column["type"]]
        assert field["type"] == expected, f"{column['name']}: {path} is a {field['type']}"


def _field_at(schema: dict[str, Any], json_path: str) -> dict[str, Any] | None:
    """The schema of a printer column's field; a filter ([?(@.type=="Ready")]) steps into items."""
    node: dict[str, Any] | None = schema
    for step in re.findall(r"\.([A-Za-z0-9_]+)|\[\?\(.*?\)\]", json_path):
        if node is None:
            return None
        node = node.get("properties", {}).get(step) if step else node.get("items")
    return node


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_structural_for_kubernetes_1_20(kind: str) -> None:
    assert structural_problems(openapi_schema(CRDS[kind])) == []


@pytest.mark.parametrize("kind", KINDS)
def test_no_field_keeps_unknown_fields(kind: str) -> None:
    # Unknown fields are pruned by the API server, never stored: nothing here needs free-form data.
    keeping = [
        path
        for path, node in walk(openapi_schema(CRDS[kind]))
        if "x-kubernetes-preserve-unknown-fields" in node
    ]
    assert keeping == []


@pytest.mark.parametrize("kind", KINDS)
def test_defaults_are_valid_where_they_apply(kind: str) -> None:
    # The API server refuses a CRD whose defaults its own schema would refuse (after defaulting
    # inside them, as for `default: {}`).
    for path, node in walk(openapi_schema(CRDS[kind])):
        if "default" in node:
            value = apply_defaults(node["default"], node)
            schema = to_json_schema({k: v for k, v in node.items() if k != "default"})
            jsonschema.validate(value, schema)
            assert "<" not in path, f"{path}: a default under a junctor is ignored"


def _config_schemas() -> list[tuple[str, dict[str, Any]]]:
    topic = openapi_schema(CRDS["Topic"])["properties"]["spec"]["properties"]["config"]
    cluster_spec = openapi_schema(CRDS["Cluster"])["properties"]["spec"]["properties"]
    defaults = cluster_spec["config"]["properties"]["topicDefaults"]
    return [("Topic spec.config", topic), ("Cluster spec.config.topicDefaults", defaults)]


@pytest.mark.parametrize(("where", "schema"), _config_schemas(), ids=lambda v: str(v)[:40])
def test_topic_settings_have_the_brokers_names_and_bounds(where: str, schema: Any) -> None:
    fields = schema["properties"]
    assert sorted(fields) == sorted(BOUNDS), f"{where}: not the broker's settings"
    for name, (low, high) in BOUNDS.items():
        field = fields[name]
        assert field["type"] == "integer", f"{where}.{name}"
        assert (field["minimum"], field["maximum"]) == (low, high), f"{where}.{name}"
        refused = field.get("not", {}).get("enum", [])
        assert refused == ([EXCLUDED[name]] if name in EXCLUDED else []), f"{where}.{name}"


def test_partitions_have_the_brokers_bounds() -> None:
    spec = openapi_schema(CRDS["Topic"])["properties"]["spec"]["properties"]
    assert (spec["partitions"]["minimum"], spec["partitions"]["maximum"]) == (1, MAX_PARTITIONS)
    assert spec["replicationFactor"]["minimum"] == 1


def test_a_resource_without_required_fields_is_refused() -> None:
    # Checks the checker: errors() must see a missing required field, or every test of bad
    # resources would pass for the wrong reason.
    topic = {"apiVersion": "millstream.io/v1alpha1", "kind": "Topic", "metadata": {"name": "t"}}
    assert errors(CRDS["Topic"], topic) == ["<root>: 'spec' is a required property"]
