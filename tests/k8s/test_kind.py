"""The kind tooling (scripts/kind.sh, deploy/kind/cluster.yaml, .github/workflows/kind.yml),
checked statically: this machine has no Docker, so the script itself runs only in the workflow
on hosted runners (docs/kind.md).

What is checked is what would break the script on a real cluster without anyone here noticing:
shellcheck; the kind config against a schema of kind's config; the workflow against the GitHub
workflow schema; the chart values the script sets (rendered by the real helm, which enforces
values.schema.json); and every resource, field, name and CLI flag the script hands to kubectl
and to the image, against the CRDs, the operator's naming and the CLI's own parser.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from millstream.cli.main import build_parser
from millstream.operator import resources, status
from tests.k8s.crd_schema import REPO, errors, load_crds, load_documents, openapi_schema
from tests.k8s.tools import CHART, KUBE_VERSION, helm

SCRIPT = REPO / "scripts" / "kind.sh"
KIND_CONFIG = REPO / "deploy" / "kind" / "cluster.yaml"
WORKFLOW = REPO / ".github" / "workflows" / "kind.yml"
TEXT = SCRIPT.read_text()
CRDS = load_crds()
GROUP = "millstream.io"

# kind publishes no JSON schema for its config, so this one is written from kind's documented
# fields: https://kind.sigs.k8s.io/docs/user/configuration/ and the Go types they come from,
# sigs.k8s.io/kind/pkg/apis/config/v1alpha4 (types.go). kind itself refuses unknown fields
# (strict YAML decoding), which additionalProperties: false reproduces.
_PATCH_6902 = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind", "patch"],
    "properties": {n: {"type": "string"} for n in ("group", "version", "kind", "patch")},
}
_STRINGS = {"type": "array", "items": {"type": "string"}}
KIND_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "kind Cluster, kind.x-k8s.io/v1alpha4",
    "type": "object",
    "additionalProperties": False,
    "required": ["kind", "apiVersion"],
    "properties": {
        "kind": {"const": "Cluster"},
        "apiVersion": {"const": "kind.x-k8s.io/v1alpha4"},
        "name": {"type": "string"},
        "nodes": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "role": {"enum": ["control-plane", "worker"]},
                    "image": {"type": "string"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "extraMounts": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "containerPath": {"type": "string"},
                                "hostPath": {"type": "string"},
                                "readOnly": {"type": "boolean"},
                                "selinuxRelabel": {"type": "boolean"},
                                "propagation": {
                                    "enum": ["None", "HostToContainer", "Bidirectional"]
                                },
                            },
                        },
                    },
                    "extraPortMappings": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "containerPort": {"type": "integer"},
                                "hostPort": {"type": "integer"},
                                "listenAddress": {"type": "string"},
                                "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
                            },
                        },
                    },
                    "gpus": {"type": "string"},
                    "kubeadmConfigPatches": _STRINGS,
                    "kubeadmConfigPatchesJSON6902": {"type": "array", "items": _PATCH_6902},
                },
            },
        },
        "networking": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "ipFamily": {"enum": ["ipv4", "ipv6", "dual"]},
                "apiServerPort": {"type": "integer"},
                "apiServerAddress": {"type": "string"},
                "podSubnet": {"type": "string"},
                "serviceSubnet": {"type": "string"},
                "disableDefaultCNI": {"type": "boolean"},
                "kubeProxyMode": {"enum": ["iptables", "ipvs", "nftables", "none"]},
                "dnsSearch": _STRINGS,
            },
        },
        "featureGates": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "runtimeConfig": {"type": "object", "additionalProperties": {"type": "string"}},
        "kubeadmConfigPatches": _STRINGS,
        "kubeadmConfigPatchesJSON6902": {"type": "array", "items": _PATCH_6902},
        "containerdConfigPatches": _STRINGS,
        "containerdConfigPatchesJSON6902": _STRINGS,
    },
}


def assignment(name: str) -> str:
    """The value of a `readonly name=value` line of the script."""
    found = re.search(rf"^readonly {name}=(\S+)$", TEXT, re.MULTILINE)
    assert found, f"scripts/kind.sh no longer sets {name}"
    return found.group(1)


RELEASE = assignment("release")
IMAGE = assignment("image")
# `--set key=value` pairs of the script's helm_values.
HELM_SETS = re.findall(r"--set ([\w.]+)=(\S*)", TEXT)


# --- the script ------------------------------------------------------------------------------


def test_shellcheck_is_clean() -> None:
    binary = shutil.which("shellcheck")
    if binary is None:
        pytest.fail("shellcheck not found: apt-get install shellcheck (scripts/test.sh does)")
    done = subprocess.run(
        [binary, "--shell=bash", SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_strict_mode_and_usage() -> None:
    assert "\nset -euo pipefail\n" in TEXT
    assert re.search(r"^up\) up ;;$", TEXT, re.MULTILINE)
    assert re.search(r"^down\) down ;;$", TEXT, re.MULTILINE)
    for prerequisite in ("docker", "kind", "helm", "kubectl"):
        assert re.search(rf"need {prerequisite} \"", TEXT), f"{prerequisite} is not checked"


def test_files_it_reads_exist() -> None:
    for path in re.findall(r"(?:deploy|examples|charts)/[\w./-]+", TEXT):
        assert (REPO / path.rstrip(".")).exists(), path
    assert (REPO / "Dockerfile").is_file()


# --- the kind config -------------------------------------------------------------------------


def kind_errors(config: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(KIND_SCHEMA)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(config)]


def test_kind_schema_is_a_valid_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(KIND_SCHEMA)


def test_kind_config_is_valid() -> None:
    (config,) = load_documents(KIND_CONFIG)
    assert kind_errors(config) == []
    roles = [node["role"] for node in config["nodes"]]
    assert roles == ["control-plane", "worker", "worker"]


@pytest.mark.parametrize(
    "change",
    [
        {"apiVersion": "kind.x-k8s.io/v1alpha3"},
        {"kind": "Config"},
        {"nodes": [{"role": "master"}]},
        {"nodes": [{"role": "worker", "replicas": 2}]},
        {"networking": {"kubeProxyMode": "userspace"}},
        {"workers": 2},
    ],
    ids=repr,
)
def test_kind_schema_refuses_what_kind_refuses(change: dict[str, Any]) -> None:
    (config,) = load_documents(KIND_CONFIG)
    assert kind_errors({**config, **change}) != []


# --- the workflow ----------------------------------------------------------------------------


def check_workflow(path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema against its vendored copy of schemastore's github-workflow schema:
    offline, and pinned with the package (pyproject's test extras)."""
    command = [sys.executable, "-m", "check_jsonschema"]
    command += ["--builtin-schema", "vendor.github-workflows", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_workflow_matches_the_github_workflow_schema() -> None:
    done = check_workflow(WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_check_has_teeth(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps: [{}]\n")
    assert check_workflow(broken).returncode != 0


def test_workflow_runs_the_script_up_then_always_down() -> None:
    (workflow,) = load_documents(WORKFLOW)
    triggers = workflow.get("on", workflow.get(True))  # PyYAML reads a bare `on` as true
    assert "workflow_dispatch" in triggers
    assert triggers["push"]["branches"] == ["main"]
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    steps = job["steps"]
    runs = [step.get("run") for step in steps]
    up = runs.index("bash scripts/kind.sh up")
    down = runs.index("bash scripts/kind.sh down")
    assert up < down and steps[down]["if"] == "always()"
    (kind,) = [step for step in steps if step.get("uses", "").startswith("helm/kind-action@")]
    assert re.fullmatch(r"v\d+\.\d+\.\d+", kind["with"]["version"]), "kind's version is pinned"
    assert kind["with"]["install_only"] is True, "the script creates the cluster"
    for step in steps:
        if "uses" in step:
            assert re.search(r"@[0-9a-f]{40}$", step["uses"]), f"{step['uses']}: pin by commit"


# --- what the script gives helm --------------------------------------------------------------


def schema_has(schema: dict[str, Any], dotted: str) -> bool:
    node = schema
    for part in dotted.split("."):
        node = node.get("properties", {}).get(part)
        if node is None:
            return False
    return True


def rendered() -> list[dict[str, Any]]:
    """The chart as `helm install` would apply it with the script's values."""
    sets = [arg for key, value in HELM_SETS for arg in ("--set", f"{key}={value}")]
    args = ["template", RELEASE, CHART, "--namespace", "streaming", *sets]
    done = helm().run(*args, "--kube-version", KUBE_VERSION)
    assert done.returncode == 0, f"helm refuses the script's values:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def test_helm_values_exist_in_the_values_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert {key for key, _ in HELM_SETS} >= {"cluster.create", "image.repository"}
    for key, _ in HELM_SETS:
        assert schema_has(schema, key), f"{key} is not in charts/millstream/values.schema.json"


def test_the_chart_runs_the_loaded_image_under_the_names_the_script_waits_on() -> None:
    docs = rendered()
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    assert '"deployment/$release-operator"' in TEXT
    assert deployment["metadata"]["name"] == f"{RELEASE}-operator"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == IMAGE
    assert container["imagePullPolicy"] == "Never"
    (cluster,) = [d for d in docs if d["kind"] == "Cluster"]
    assert cluster["metadata"]["name"] == RELEASE
    assert cluster["spec"]["image"] == IMAGE
    assert errors(CRDS["Cluster"], cluster) == []


# --- what the script gives kubectl -----------------------------------------------------------


def crd_by_plural(plural: str) -> dict[str, Any]:
    (crd,) = [c for c in CRDS.values() if c["spec"]["names"]["plural"] == plural]
    return crd


def test_resources_are_the_crds() -> None:
    plurals = set(re.findall(rf"\b([a-z]+)\.{re.escape(GROUP)}\b", TEXT))
    assert plurals == {"clusters", "topics", "consumergroups"}
    for plural in plurals:
        assert crd_by_plural(plural)["spec"]["group"] == GROUP
    # `kubectl get millstream` lists every kind through their shared category.
    assert re.search(r"\bk get millstream\b", TEXT)
    for crd in CRDS.values():
        assert "millstream" in crd["spec"]["names"]["categories"]


def test_jsonpaths_and_conditions_exist_in_the_crds() -> None:
    checked = 0
    for line in TEXT.splitlines():
        resource = re.search(rf"\b([a-z]+)\.{re.escape(GROUP)}\b", line)
        if resource is None:
            continue
        schema = openapi_schema(crd_by_plural(resource.group(1)))
        for path in re.findall(r"jsonpath='\{\.([\w.]+)\}", line):
            assert schema_has(schema, path), f"{path} is not a field of {resource.group(1)}"
            checked += 1
        for condition in re.findall(r"--for=condition=(\w+)", line):
            assert schema_has(schema, "status.conditions")
            assert condition == status.READY
            checked += 1
    assert checked >= 5


def test_scaling_patch_is_valid_for_the_cluster_crd() -> None:
    (patch,) = re.findall(r'--type=merge -p "(.*)"', TEXT)
    scales = [int(n) for n in re.findall(r"^    scale_to (\d+)$", TEXT, re.MULTILINE)]
    (cluster,) = [d for d in rendered() if d["kind"] == "Cluster"]
    initial = cluster["spec"]["brokers"]
    assert scales[0] > initial and scales[-1] < scales[0], "scales up, then down"
    for brokers in scales:
        body = json.loads(patch.replace('\\"', '"').replace("$1", str(brokers)))
        patched = {**cluster, "spec": {**cluster["spec"], **body["spec"]}}
        assert errors(CRDS["Cluster"], patched) == []


def test_names_follow_the_operator_and_the_examples() -> None:
    names = resources.names(RELEASE)
    assert '"statefulset/$release"' in TEXT and names.statefulset == RELEASE
    assert assignment("url") == f"http://{names.client_service}:{resources.BROKER_PORT}"
    (topic,) = load_documents(REPO / "examples" / "topic.yaml")
    (group,) = load_documents(REPO / "examples" / "consumergroup.yaml")
    assert topic["spec"]["cluster"] == group["spec"]["cluster"] == RELEASE
    assert f"topics.{GROUP}/{topic['metadata']['name']}" in TEXT
    assert f"consumergroups.{GROUP} {group['metadata']['name']}" in TEXT
    assert f"--group {group['spec']['groupId']}" in TEXT
    assert topic["spec"]["partitions"] >= 2, "records spread over both first brokers"


def test_cli_invocations_parse() -> None:
    """The commands run in pods, through the image's own CLI parser."""
    produce = re.search(r"millstream (produce [^']*)'", TEXT)
    assert produce
    consume = re.search(r'-- (consume .*?) "\$\{@:3\}"', TEXT)
    assert consume
    extras = re.findall(r"consume_all [\w-]+ (\d+)(.*)$", TEXT, re.MULTILINE)
    assert len(extras) == 3
    commands = [shlex.split(produce.group(1))]
    commands += [
        shlex.split(consume.group(1).replace('"$2"', count) + extra) for count, extra in extras
    ]
    for argv in commands:
        args = build_parser().parse_args(argv)
        assert args.topic == "orders"
