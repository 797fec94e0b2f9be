"""CRD schemas read the way a Kubernetes 1.20 API server reads them, for offline checks.

Used by the tests in this folder; no cluster is needed. Three things an API server does with a
CRD's ``openAPIV3Schema`` are reproduced here:

* :func:`structural_problems` lists where a schema breaks the rules for structural schemas (the
  server refuses such a CRD), limited to the OpenAPI keywords that 1.20 knows: no CEL rules.
* :func:`apply_defaults` fills in ``default`` values as the server does on create.
* :func:`to_json_schema` turns the schema into a JSON Schema for ``jsonschema``. The server
  *prunes* fields the schema does not name; the JSON Schema *refuses* them instead, so that a
  misspelt field in an example or a test fails loudly rather than vanishing.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "crds"

Schema = dict[str, Any]

TYPES = {"object", "array", "string", "integer", "number", "boolean"}
JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
# Every keyword of apiextensions.k8s.io/v1 JSONSchemaProps in Kubernetes 1.20, less those the
# server refuses in a CRD ($ref, definitions, patternProperties, dependencies, additionalItems,
# id, $schema). x-kubernetes-validations (CEL) only arrived in 1.23.
KEYWORDS_1_20 = {
    "description", "type", "format", "title", "default", "maximum", "exclusiveMaximum",
    "minimum", "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems",
    "uniqueItems", "multipleOf", "enum", "maxProperties", "minProperties", "required", "items",
    "allOf", "oneOf", "anyOf", "not", "properties", "additionalProperties", "externalDocs",
    "example", "nullable", "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource", "x-kubernetes-int-or-string",
    "x-kubernetes-list-map-keys", "x-kubernetes-list-type", "x-kubernetes-map-type",
}  # fmt: skip
# What a schema under a junctor may not say: it can only add value checks to the structure.
NOT_IN_JUNCTORS = {
    "type", "default", "title", "description", "nullable", "additionalProperties",
    "externalDocs", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource",
    "x-kubernetes-int-or-string", "x-kubernetes-list-map-keys", "x-kubernetes-list-type",
    "x-kubernetes-map-type",
}  # fmt: skip
INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]


def load_documents(path: Path) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a file."""
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def load_crds() -> dict[str, dict[str, Any]]:
    """The CRDs of crds/, by kind."""
    crds = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for doc in load_documents(path):
            crds[doc["spec"]["names"]["kind"]] = doc
    return crds


def openapi_schema(crd: dict[str, Any]) -> Schema:
    """The schema of the CRD's one version."""
    (version,) = crd["spec"]["versions"]
    schema: Schema = version["schema"]["openAPIV3Schema"]
    return schema


def branches(schema: Schema) -> Iterator[tuple[str, Schema]]:
    """The junctor branches of a node, named like ``anyOf1`` or ``not``."""
    for junctor in JUNCTORS:
        found = schema.get(junctor)
        if junctor == "not" and isinstance(found, dict):
            yield junctor, found
        elif junctor != "not":
            for i, branch in enumerate(found or []):
                yield f"{junctor}{i}", branch


def walk(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema node with its path, structural nodes and junctor branches alike."""
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}.*")
    for name, branch in branches(schema):
        yield from walk(branch, f"{path}<{name}>")


def structural_problems(schema: Schema) -> list[str]:
    """Why a Kubernetes 1.20 API server would refuse this schema; empty if it would not."""
    problems = [
        f"{path or '<root>'}: {key} is not a Kubernetes 1.20 CRD schema keyword"
        for path, node in walk(schema)
        for key in node
        if key not in KEYWORDS_1_20
    ]
    problems += [
        f"{path or '<root>'}: uniqueItems is refused (quadratic)"
        for path, node in walk(schema)
        if node.get("uniqueItems")
    ]
    if schema.get("type") != "object":
        problems.append("<root>: type must be object")
    if "additionalProperties" in schema:
        problems.append("<root>: additionalProperties is refused at the root")
    if "default" in schema:
        problems.append("<root>: default is refused at the root")
    problems += _metadata_problems(schema.get("properties", {}).get("metadata"))
    problems += _structural_node_problems(schema, "")
    return problems


def _metadata_problems(metadata: Schema | None) -> list[str]:
    # Only the name can be restricted: everything else in ObjectMeta belongs to the server.
    if metadata is None:
        return []
    problems = []
    if set(metadata) - {"type", "properties"} or metadata.get("type") != "object":
        problems.append(".metadata: only `type: object` and name restrictions are allowed")
    if set(metadata.get("properties", {})) - {"name", "generateName"}:
        problems.append(".metadata: only name and generateName may be restricted")
    for name, sub in metadata.get("properties", {}).items():
        if "default" in sub or sub.get("type") != "string":
            problems.append(f".metadata.{name}: must be a string without default")
    return problems


def _structural_node_problems(node: Schema, path: str) -> list[str]:
    where = path or "<root>"
    problems = []
    int_or_string = node.get("x-kubernetes-int-or-string", False)
    if "type" not in node and not (
        int_or_string or node.get("x-kubernetes-preserve-unknown-fields")
    ):
        problems.append(f"{where}: type is required")
    if "type" in node and node["type"] not in TYPES:
        problems.append(f"{where}: type {node['type']!r} is not one of {sorted(TYPES)}")
    if int_or_string and node.get("anyOf") not in (None, INT_OR_STRING):
        problems.append(f"{where}: x-kubernetes-int-or-string takes anyOf [integer, string]")
    if node.get("type") == "array" and "items" not in node:
        problems.append(f"{where}: an array needs items")
    if "properties" in node and node.get("type") != "object":
        problems.append(f"{where}: properties on a non-object")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{where}: properties and additionalProperties are mutually exclusive")
    if "additionalProperties" in node and not isinstance(node["additionalProperties"], dict):
        problems.append(f"{where}: additionalProperties must be a schema")
    problems += _list_type_problems(node, where)
    for name, branch in branches(node):
        if int_or_string and name.startswith("anyOf"):
            continue  # the one allowed use of type under a junctor
        problems += _junctor_problems(branch, node, f"{where}<{name}>")
    for name, sub in node.get("properties", {}).items():
        if path == "" and name == "metadata":
            continue  # checked by _metadata_problems
        problems += _structural_node_problems(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        problems += _structural_node_problems(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        problems += _structural_node_problems(node["additionalProperties"], f"{path}.*")
    return problems


def _list_type_problems(node: Schema, where: str) -> list[str]:
    list_type = node.get("x-kubernetes-list-type")
    if list_type is None:
        return []
    if list_type not in ("atomic", "set", "map") or node.get("type") != "array":
        return [f"{where}: x-kubernetes-list-type {list_type!r} on a {node.get('type')}"]
    if list_type != "map":
        return []
    items = node.get("items", {})
    problems = []
    for key in node.get("x-kubernetes-list-map-keys", []) or ["<none>"]:
        field = items.get("properties", {}).get(key)
        if field is None:
            problems.append(f"{where}: list map key {key!r} is not a property of the items")
        elif key not in items.get("required", []) and "default" not in field:
            problems.append(f"{where}: list map key {key!r} must be required or defaulted")
    return problems


def _junctor_problems(branch: Schema, outer: Schema, where: str) -> list[str]:
    """A junctor branch may only check values of fields the structure around it declares."""
    problems = [
        f"{where}: {key} is not allowed under a junctor" for key in NOT_IN_JUNCTORS & set(branch)
    ]
    for name, sub in branch.get("properties", {}).items():
        declared = outer.get("properties", {}).get(name)
        if declared is None:
            problems.append(f"{where}: property {name!r} is not declared outside the junctor")
        else:
            problems += _junctor_problems(sub, declared, f"{where}.{name}")
    if isinstance(branch.get("items"), dict):
        problems += _junctor_problems(branch["items"], outer.get("items", {}), f"{where}[]")
    for name, sub in branches(branch):
        problems += _junctor_problems(sub, outer, f"{where}<{name}>")
    return problems


def apply_defaults(obj: Any, schema: Schema) -> Any:
    """A copy of ``obj`` with the schema's defaults filled in, as the API server does.

    A default is placed where its field is missing, then defaulted itself: ``default: {}`` on
    an object brings in the defaults of its fields.
    """
    obj = copy.deepcopy(obj)
    _default_in_place(obj, schema)
    return obj


def _default_in_place(obj: Any, schema: Schema) -> None:
    if isinstance(obj, dict):
        for name, sub in schema.get("properties", {}).items():
            if name not in obj and "default" in sub:
                obj[name] = copy.deepcopy(sub["default"])
            if name in obj:
                _default_in_place(obj[name], sub)
        if isinstance(schema.get("additionalProperties"), dict):
            for value in obj.values():
                _default_in_place(value, schema["additionalProperties"])
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            _default_in_place(item, schema["items"])


def to_json_schema(schema: Schema) -> Schema:
    """A JSON Schema (draft 2020-12) that accepts what the API server keeps, refusing the rest."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **_closed(schema, "")}


def _closed(node: Schema, path: str) -> Schema:
    out = {k: v for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]
        del out["nullable"]
    if "properties" in node:
        out["properties"] = {
            name: _closed(sub, f"{path}.{name}") for name, sub in node["properties"].items()
        }
        # ObjectMeta's other fields are the server's, not the schema's.
        if path != ".metadata" and not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(node.get("items"), dict):
        out["items"] = _closed(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _closed(node["additionalProperties"], f"{path}.*")
    return out


def validator(crd: dict[str, Any]) -> jsonschema.protocols.Validator:
    """A jsonschema validator for the CRD's resources (after :func:`apply_defaults`)."""
    schema = to_json_schema(openapi_schema(crd))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def errors(crd: dict[str, Any], resource: dict[str, Any]) -> list[str]:
    """Why the API server would refuse ``resource`` (unknown fields included); empty if valid."""
    defaulted = apply_defaults(resource, openapi_schema(crd))
    found = validator(crd).iter_errors(defaulted)
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in found]
