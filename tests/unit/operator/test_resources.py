"""The manifests a Cluster becomes: valid for the Kubernetes 1.20 API server the chart targets
(and a recent one), restricted, labelled and owned; the broker's command line, checked by
running the pod's shell script with a stand-in ``millstream`` and parsing what it passes with
the real CLI."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from millstream.cli.main import build_parser
from millstream.operator import resources
from millstream.operator.resources import (
    SERVE_SCRIPT,
    bootstrap_url,
    broker_urls,
    cluster_resources,
    names,
    pdb_api_version,
    selector_labels,
    serve_args,
    statefulset,
)
from millstream.operator.specs import ClusterSpec, parse_cluster
from tests.unit.operator.support import NAMESPACE, body

# kubernetes-validate 1.28 builds on jsonschema's older reference API.
pytestmark = [
    pytest.mark.filterwarnings("ignore:jsonschema.RefResolver is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The metaschema specified by:DeprecationWarning"),
]

IMAGE = "ghcr.io/millstream/millstream:0.1.0"
TOKEN = "s3cr3t-admin-token"
FULL = {
    "brokers": 5,
    "image": "registry.example.com/millstream:edge",
    "storage": {"size": "100Gi", "storageClassName": "fast"},
    "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
    "config": {
        "housekeepingIntervalSeconds": 60,
        "shutdownTimeoutSeconds": 25,
        "topicDefaults": {"retention.ms": 86_400_000, "segment.bytes": 67_108_864},
    },
    "pvcPolicy": "Delete",
}
CASES = {"defaults": {}, "everything set": FULL}


def cluster(spec: dict[str, Any], name: str = "events") -> ClusterSpec:
    return parse_cluster(body("Cluster", spec, name=name))


def manifests(case: str, pdb: resources.PdbApiVersion) -> list[dict[str, Any]]:
    return cluster_resources(
        cluster(CASES[case]), default_image=IMAGE, admin_token=TOKEN, pdb_api_version=pdb
    )


def only(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return found


def pod_of(spec: dict[str, Any]) -> dict[str, Any]:
    template: dict[str, Any] = statefulset(cluster(spec), default_image=IMAGE)["spec"]["template"]
    return template


@pytest.mark.parametrize(
    ("version", "pdb"), [("1.20", "policy/v1beta1"), ("1.21", "policy/v1"), ("1.28", "policy/v1")]
)
@pytest.mark.parametrize("case", sorted(CASES))
def test_manifests_validate(case: str, version: str, pdb: resources.PdbApiVersion) -> None:
    docs = manifests(case, pdb)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "ConfigMap", "PodDisruptionBudget", "Secret", "Service", "Service", "StatefulSet"
    ]  # fmt: skip
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_pdb_api_version_follows_discovery() -> None:
    assert pdb_api_version(["v1", "policy/v1beta1", "policy/v1"]) == "policy/v1"
    assert pdb_api_version(["v1", "policy/v1beta1"]) == "policy/v1beta1"
    # Kubernetes 1.20 knows no policy/v1 PodDisruptionBudget: hence the parameter.
    v1 = only(manifests("defaults", "policy/v1"), "PodDisruptionBudget")
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(v1, "1.20", strict=True)
    pdb = only(manifests("defaults", "policy/v1beta1"), "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1beta1"
    assert pdb["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": selector_labels("events")},
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_everything_is_owned_by_the_cluster_and_labelled(case: str) -> None:
    spec = cluster(CASES[case])
    for doc in manifests(case, "policy/v1"):
        metadata = doc["metadata"]
        assert metadata["namespace"] == NAMESPACE
        assert metadata["ownerReferences"] == [
            {
                "apiVersion": "millstream.io/v1alpha1",
                "kind": "Cluster",
                "name": "events",
                "uid": spec.meta.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert metadata["labels"]["millstream.io/cluster"] == "events"
        assert metadata["labels"]["app.kubernetes.io/managed-by"] == "millstream-operator"


def test_statefulset_shape() -> None:
    sts = statefulset(cluster(FULL), default_image=IMAGE)
    spec = sts["spec"]
    assert sts["metadata"]["name"] == "events"
    assert spec["serviceName"] == "events-brokers"
    assert spec["replicas"] == 5
    assert spec["podManagementPolicy"] == "Parallel"
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "100Gi"}},
        "storageClassName": "fast",
    }
    (container,) = spec["template"]["spec"]["containers"]
    assert container["image"] == "registry.example.com/millstream:edge"
    assert container["resources"] == FULL["resources"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["data"]["mountPath"] == "/data"


def test_statefulset_defaults() -> None:
    spec = statefulset(cluster({}), default_image=IMAGE)["spec"]
    (claim,) = spec["volumeClaimTemplates"]
    # No class named: the namespace's default StorageClass provisions the volume.
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "10Gi"}},
    }
    (container,) = spec["template"]["spec"]["containers"]
    assert container["image"] == IMAGE
    assert "resources" not in container
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] == 30


def test_replicas_can_differ_from_the_spec_while_draining() -> None:
    assert (
        statefulset(cluster({"brokers": 2}), default_image=IMAGE, replicas=3)["spec"]["replicas"]
        == 3
    )


def test_termination_grace_exceeds_the_broker_shutdown_timeout() -> None:
    grace = pod_of({"config": {"shutdownTimeoutSeconds": 300}})["spec"]
    assert grace["terminationGracePeriodSeconds"] == 320


def test_probes() -> None:
    (container,) = pod_of({})["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    startup = container["startupProbe"]
    # Recovery runs before the broker listens: liveness must not kill it meanwhile.
    assert startup["httpGet"]["path"] == "/healthz"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert container["ports"] == [{"name": "http", "containerPort": 9092, "protocol": "TCP"}]


@pytest.mark.parametrize("case", sorted(CASES))
def test_broker_pod_is_restricted(case: str) -> None:
    # The restricted Pod Security Standard, as the chart's test checks the operator's pod.
    pod = pod_of(CASES[case])["spec"]
    pod_context = pod["securityContext"]
    assert pod_context["fsGroup"] == 10001
    assert pod["automountServiceAccountToken"] is False
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key), key
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= {"emptyDir", "configMap", "secret"}, volume
    for container in pod["containers"]:
        context = {**pod_context, **container["securityContext"]}
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] == 10001
        assert context["allowPrivilegeEscalation"] is False
        assert context["privileged"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert context["readOnlyRootFilesystem"] is True


def test_admin_token_is_a_secret_mounted_as_a_file() -> None:
    docs = manifests("defaults", "policy/v1")
    secret = only(docs, "Secret")
    assert secret["metadata"]["name"] == "events-admin-token"
    assert base64.b64decode(secret["data"]["token"]).decode() == TOKEN
    pod = only(docs, "StatefulSet")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if "secret" in v)
    assert volume["secret"] == {"secretName": "events-admin-token", "defaultMode": 0o440}
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount == {"name": volume["name"], "mountPath": "/etc/millstream/admin", "readOnly": True}
    assert "--admin-token-file /etc/millstream/admin/token" in SERVE_SCRIPT
    # Never in the environment or the command line, where `kubectl describe` would show it.
    assert TOKEN not in str(pod)


@pytest.mark.parametrize("token", ["", " padded ", "line\n"])
def test_a_blank_or_padded_token_is_refused(token: str) -> None:
    with pytest.raises(ValueError, match="admin token"):
        resources.admin_secret(cluster({}), token)


def test_services() -> None:
    docs = manifests("defaults", "policy/v1")
    headless = only(docs, "Service", "events-brokers")["spec"]
    assert headless["clusterIP"] == "None"
    # The operator pushes metadata to brokers before they can be ready.
    assert headless["publishNotReadyAddresses"] is True
    client = only(docs, "Service", "events")["spec"]
    assert client["type"] == "ClusterIP"
    for spec in (headless, client):
        assert spec["selector"] == selector_labels("events")
        assert spec["ports"] == [
            {"name": "http", "port": 9092, "targetPort": "http", "protocol": "TCP"}
        ]


def test_broker_and_bootstrap_urls_use_the_services() -> None:
    assert broker_urls("events", "streaming", 3) == [
        "http://events-0.events-brokers.streaming.svc:9092",
        "http://events-1.events-brokers.streaming.svc:9092",
        "http://events-2.events-brokers.streaming.svc:9092",
    ]
    # As the chart's NOTES.txt tells users.
    assert bootstrap_url("events", "streaming") == "http://events.streaming.svc:9092"


def test_names_of_the_longest_cluster_fit_kubernetes_limits() -> None:
    n = names("c" * 40)
    for name in (n.headless_service, n.config_map, n.admin_secret, n.volume_claim(99_999)):
        assert len(name) <= 63, name
    # The StatefulSet labels each pod with <statefulset>-<10 character hash>.
    assert len(n.statefulset) + 11 <= 63


def test_config_map_holds_the_settings_and_its_hash_rolls_the_pods() -> None:
    config_map = only(manifests("everything set", "policy/v1"), "ConfigMap")
    assert config_map["metadata"]["name"] == "events-config"
    assert config_map["data"]["serve.args"] == (
        "--housekeeping-interval=60\n"
        "--shutdown-timeout=25\n"
        "--topic-default=retention.ms=86400000\n"
        "--topic-default=segment.bytes=67108864\n"
    )

    def config_hash(spec: dict[str, Any]) -> str:
        annotations = pod_of(spec)["metadata"]["annotations"]
        value: str = annotations["millstream.io/config-hash"]
        return value

    assert config_hash({}) == config_hash({"brokers": 7, "storage": {"size": "1Ti"}})
    assert config_hash({}) != config_hash({"config": {"housekeepingIntervalSeconds": 5}})


def test_the_real_cli_accepts_the_settings() -> None:
    args = build_parser().parse_args(["serve", *serve_args(cluster(FULL).config)])
    assert args.housekeeping_interval == 60
    assert args.shutdown_timeout == 25
    assert args.topic_default == [("retention.ms", 86_400_000), ("segment.bytes", 67_108_864)]


def run_serve_script(tmp_path: Path, spec: dict[str, Any], pod_name: str) -> list[str]:
    """Run the container's command with the ConfigMap's file in place and a ``millstream``
    that prints the arguments it was given, one a line."""
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    data = only(
        cluster_resources(
            cluster(spec), default_image=IMAGE, admin_token=TOKEN, pdb_api_version="policy/v1"
        ),
        "ConfigMap",
    )["data"]
    for key, value in data.items():
        (config_dir / key).write_text(value)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "millstream"
    fake.write_text('#!/bin/sh\nfor arg in "$@"; do printf "%s\\n" "$arg"; done\n')
    fake.chmod(0o755)
    pod = pod_of(spec)["spec"]
    (container,) = pod["containers"]
    command = [part.replace(resources.CONFIG_DIR, str(config_dir)) for part in container["command"]]
    env = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin", "MILLSTREAM_POD_NAME": pod_name}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_pod_runs_the_broker_with_its_ordinal_as_id(tmp_path: Path) -> None:
    argv = run_serve_script(tmp_path, FULL, pod_name="events-12")
    assert argv == [
        "serve", "--host", "0.0.0.0", "--port", "9092", "--data-dir", "/data",
        "--broker-id", "12", "--admin-token-file", "/etc/millstream/admin/token",
        "--housekeeping-interval=60", "--shutdown-timeout=25",
        "--topic-default=retention.ms=86400000", "--topic-default=segment.bytes=67108864",
    ]  # fmt: skip
    # What `millstream serve` makes of it: the contract with the broker's command line.
    args = build_parser().parse_args(argv)
    assert (args.command, args.host, args.port) == ("serve", "0.0.0.0", 9092)
    assert args.broker_id == 12
    assert args.admin_token_file == Path("/etc/millstream/admin/token")
    assert args.data_dir == Path("/data")


def test_a_cluster_without_settings_runs_the_broker_on_its_defaults(tmp_path: Path) -> None:
    argv = run_serve_script(tmp_path, {}, pod_name="my-cluster-0")
    assert argv[-4:] == ["--broker-id", "0", "--admin-token-file", "/etc/millstream/admin/token"]
