"""The Helm chart (charts/millstream), checked offline with the real helm: it lints, renders
manifests a Kubernetes API server accepts, runs the operator restricted and with least
privilege, ships exactly the CRDs of crds/, and checks its values against values.schema.json."""

from __future__ import annotations

import json
import tarfile
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.k8s.crd_schema import CRD_DIR, errors, load_crds, load_documents
from tests.k8s.tools import CHART, NAMESPACE, RELEASE, helm

# kubernetes-validate 1.28 builds on jsonschema's older reference API.
pytestmark = [
    pytest.mark.filterwarnings("ignore:jsonschema.RefResolver is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The metaschema specified by:DeprecationWarning"),
]

# Each set of values renders a different shape of the chart.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "with a cluster": {"cluster": {"create": True}},
    "own account and rights": {
        "serviceAccount": {"create": False, "name": "streaming-operator"},
        "rbac": {"create": False},
    },
    "cluster-wide, everything set": {
        "operator": {
            "watchAnyNamespace": True,
            "podAnnotations": {"example.com/team": "streaming"},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
            "priorityClassName": "system-cluster-critical",
        },
        "image": {"digest": "sha256:" + "ab" * 32},
        "imagePullSecrets": ["registry"],
        "serviceAccount": {"annotations": {"example.com/role": "operator"}},
        "cluster": {
            "create": True,
            "name": "main",
            "brokers": 5,
            "storage": {"size": "100Gi", "storageClassName": "fast"},
            "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
            "config": {"shutdownTimeoutSeconds": 20, "topicDefaults": {"retention.ms": 86400000}},
            "pvcPolicy": "Delete",
        },
    },
}
# The API server the chart is written for, and the newest that kubernetes-validate knows.
KUBE_VERSIONS = ["1.20", "1.28"]
CRDS = load_crds()


def rendered(case: str) -> list[dict[str, Any]]:
    return helm().template(VALUE_SETS[case])


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in docs if doc["kind"] == kind]
    return found


def values_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return schema


def with_defaults(overrides: dict[str, Any]) -> dict[str, Any]:
    """values.yaml with ``overrides`` merged in, as helm merges them before checking."""

    def merge(base: Any, top: Any) -> Any:
        if isinstance(base, dict) and isinstance(top, dict):
            return {**base, **{key: merge(base.get(key), top[key]) for key in top}}
        return top

    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    merged: dict[str, Any] = merge(defaults, overrides)
    return merged


@pytest.mark.parametrize("case", sorted(VALUE_SETS))
def test_helm_lint_passes(case: str, tmp_path: Any) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(VALUE_SETS[case]))
    done = helm().run("lint", "--strict", CHART, "--namespace", NAMESPACE, "--values", values)
    assert done.returncode == 0, done.stdout + done.stderr


def test_chart_renders_the_operator_and_its_rights() -> None:
    kinds = sorted(doc["kind"] for doc in rendered("defaults"))
    assert kinds == ["Deployment", "Role", "RoleBinding", "ServiceAccount"]


def test_cluster_create_adds_a_cluster() -> None:
    kinds = sorted(doc["kind"] for doc in rendered("with a cluster"))
    assert kinds == ["Cluster", "Deployment", "Role", "RoleBinding", "ServiceAccount"]
    cluster = only(rendered("with a cluster"), "Cluster")
    assert cluster["metadata"]["name"] == f"{RELEASE}-millstream"
    assert cluster["metadata"]["namespace"] == NAMESPACE


def test_existing_account_and_rights_can_be_used() -> None:
    (deployment,) = rendered("own account and rights")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "streaming-operator"


def test_watching_any_namespace_takes_a_cluster_role() -> None:
    kinds = sorted(doc["kind"] for doc in rendered("cluster-wide, everything set"))
    assert kinds == ["Cluster", "ClusterRole", "ClusterRoleBinding", "Deployment", "ServiceAccount"]


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("case", sorted(VALUE_SETS))
def test_rendered_manifests_validate_offline(case: str, version: str) -> None:
    # The CRDs are checked the same way in test_crds.py, and are the same for every case.
    for doc in rendered(case):
        if doc["apiVersion"].startswith("millstream.io/"):
            assert errors(CRDS[doc["kind"]], doc) == []  # kubernetes-validate cannot know it
        else:
            kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("case", sorted(VALUE_SETS))
def test_operator_pod_is_restricted(case: str) -> None:
    # The restricted Pod Security Standard, plus a read-only root filesystem.
    pod = only(rendered(case), "Deployment")["spec"]["template"]["spec"]
    pod_context = pod.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key), key
    for volume in pod.get("volumes", []):
        assert set(volume) - {"name"} <= {"emptyDir", "configMap", "secret", "projected"}, volume
    for container in pod["containers"] + pod.get("initContainers", []):
        context = {**pod_context, **container.get("securityContext", {})}
        assert context["runAsNonRoot"] is True
        assert context.get("runAsUser", 1) != 0
        assert context["allowPrivilegeEscalation"] is False
        assert not context.get("privileged", False)
        assert context["capabilities"]["drop"] == ["ALL"]
        assert not context["capabilities"].get("add")
        assert context["seccompProfile"]["type"] in ("RuntimeDefault", "Localhost")
        assert context["readOnlyRootFilesystem"] is True
        assert "ports" not in container or all("hostPort" not in p for p in container["ports"])


def test_operator_runs_the_chart_image_as_the_operator() -> None:
    docs = rendered("with a cluster")
    (container,) = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "ghcr.io/millstream/millstream:0.1.0"
    assert container["args"][:2] == ["operator", f"--namespace={NAMESPACE}"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    # Brokers default to the same image: one release, one image.
    assert env["MILLSTREAM_BROKER_IMAGE"] == container["image"]
    assert only(docs, "Cluster")["spec"]["image"] == container["image"]


def test_image_digest_wins_over_tag() -> None:
    docs = rendered("cluster-wide, everything set")
    (container,) = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "ghcr.io/millstream/millstream@sha256:" + "ab" * 32
    assert "--all-namespaces" in container["args"]


def test_one_operator_at_a_time() -> None:
    deployment = only(rendered("defaults"), "Deployment")["spec"]
    assert deployment["replicas"] == 1
    assert deployment["strategy"] == {"type": "Recreate"}


def _rules(case: str) -> dict[tuple[str, str], set[str]]:
    docs = rendered(case)
    role = next(doc for doc in docs if doc["kind"] in ("Role", "ClusterRole"))
    verbs: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                verbs.setdefault((group, resource), set()).update(rule["verbs"])
    return verbs


@pytest.mark.parametrize("case", ["defaults", "cluster-wide, everything set"])
def test_operator_rights_are_least_privilege(case: str) -> None:
    managed = {"get", "list", "watch", "create", "patch", "delete"}
    assert _rules(case) == {
        ("millstream.io", "clusters"): {"get", "list", "watch", "patch"},
        # It creates each Cluster's internal Topic (the groups' committed offsets).
        ("millstream.io", "topics"): {"get", "list", "watch", "create", "patch"},
        ("millstream.io", "consumergroups"): {"get", "list", "watch", "patch"},
        ("millstream.io", "clusters/status"): {"get", "patch"},
        ("millstream.io", "topics/status"): {"get", "patch"},
        ("millstream.io", "consumergroups/status"): {"get", "patch"},
        ("millstream.io", "clusters/finalizers"): {"update"},
        ("apps", "statefulsets"): managed,
        ("", "services"): managed,
        ("", "configmaps"): managed,
        ("policy", "poddisruptionbudgets"): managed,
        # Secrets by name only: never listed or watched.
        ("", "secrets"): {"get", "create", "patch", "delete"},
        ("", "persistentvolumeclaims"): {"get", "list", "delete"},
        ("", "events"): {"create", "patch"},
    }


def test_rights_are_bound_to_the_operators_service_account() -> None:
    docs = rendered("defaults")
    account = only(docs, "ServiceAccount")["metadata"]["name"]
    binding = only(docs, "RoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    ]
    assert binding["roleRef"]["name"] == only(docs, "Role")["metadata"]["name"]
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account


def test_chart_crds_are_the_crds_folder() -> None:
    shipped = [
        doc
        for doc in helm().template({}, "--include-crds")
        if doc["kind"] == "CustomResourceDefinition"
    ]
    expected = [doc for path in sorted(CRD_DIR.glob("*.yaml")) for doc in load_documents(path)]
    assert sorted(shipped, key=_name) == sorted(expected, key=_name)


def _name(doc: dict[str, Any]) -> str:
    return str(doc["metadata"]["name"])


def test_packaged_chart_carries_the_crds_byte_for_byte(tmp_path: Any) -> None:
    # charts/millstream/crds is a symlink to crds/: helm must package the files, not the link.
    done = helm().run("package", CHART, "--destination", tmp_path)
    assert done.returncode == 0, done.stderr
    (package,) = tmp_path.glob("millstream-*.tgz")
    with tarfile.open(package) as archive:
        packaged = {
            member.name.removeprefix("millstream/crds/"): archive.extractfile(member).read()  # type: ignore[union-attr]
            for member in archive.getmembers()
            if member.name.startswith("millstream/crds/")
        }
    expected = {path.name: path.read_bytes() for path in CRD_DIR.glob("*.yaml")}
    assert packaged == expected


@pytest.mark.parametrize("case", sorted(VALUE_SETS))
def test_values_match_their_schema(case: str) -> None:
    jsonschema.Draft7Validator.check_schema(values_schema())
    validator = jsonschema.Draft7Validator(values_schema())
    validator.validate(with_defaults(VALUE_SETS[case]))


BAD_VALUES: dict[str, dict[str, Any]] = {
    "no brokers": {"cluster": {"brokers": 0}},
    "pvcPolicy outside the enum": {"cluster": {"pvcPolicy": "Keep"}},
    "cluster name too long": {"cluster": {"name": "c" * 41}},
    "storage size not a quantity": {"cluster": {"storage": {"size": "big"}}},
    "unknown pull policy": {"image": {"pullPolicy": "Sometimes"}},
    "digest not sha256": {"image": {"digest": "latest"}},
    "misspelt key": {"operater": {"watchAnyNamespace": True}},
    "misplaced key": {"operator": {"brokers": 3}},
    "string for a boolean": {"rbac": {"create": "yes"}},
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_values_are_refused(case: str) -> None:
    validator = jsonschema.Draft7Validator(values_schema())
    found = list(validator.iter_errors(with_defaults(BAD_VALUES[case])))
    assert len(found) == 1, f"{case}: {[e.message for e in found]}"


def test_helm_refuses_bad_values_before_rendering() -> None:
    done = helm().run("template", *helm().chart_args(BAD_VALUES["no brokers"]))
    assert done.returncode != 0
    assert "brokers" in done.stderr


def test_default_cluster_name_over_40_characters_fails_with_advice() -> None:
    values = {"fullnameOverride": "a-release-name-that-is-far-too-long-for-a-cluster"}
    done = helm().run("template", *helm().chart_args({**values, "cluster": {"create": True}}))
    assert done.returncode != 0
    assert "set cluster.name" in done.stderr


def test_notes_say_how_to_reach_the_brokers() -> None:
    done = helm().run(
        "install", "--dry-run=client", *helm().chart_args({"cluster": {"create": True}})
    )
    assert done.returncode == 0, done.stderr
    notes = done.stdout.partition("NOTES:")[2]
    cluster = f"{RELEASE}-millstream"
    assert f"http://{cluster}.{NAMESPACE}.svc:9092" in notes
    assert f"kubectl port-forward --namespace {NAMESPACE} service/{cluster} 9092:9092" in notes
    assert "kubectl get millstream" in notes
