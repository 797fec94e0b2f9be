"""The test suite's Kubernetes control plane is the real thing: storage, watches, RBAC, CRD
schemas and the controllers that the operator will lean on (StatefulSet, garbage collection).

Runs against the session's control plane from tests/k8s/conftest.py. The CRD tests use
crds/*.yaml and the custom resources among examples/**/*.yaml, and skip until those exist.
"""

from __future__ import annotations

import base64
import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.support.kube import KUBE_VERSION, KubeControlPlane

pytestmark = pytest.mark.k8s

EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "examples"

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 60.0) -> T:
    """Poll ``probe`` until it returns something other than None, for at most ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result is not None:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def read_or_none(read: Callable[[], T]) -> T | None:
    try:
        return read()
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


# -- core API ------------------------------------------------------------------------------


def test_kubeconfig_reaches_the_server(kube: KubeControlPlane) -> None:
    # The file is what kopf, kubectl and helm get: it must verify the server and authenticate.
    with config.new_client_from_config(config_file=str(kube.kubeconfig)) as api:
        version = client.VersionApi(api).get_code()
        assert version.git_version == f"v{KUBE_VERSION}"
        assert client.CoreV1Api(api).read_namespace("kube-system").status.phase == "Active"


def test_configmap_round_trip(kube_api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    body = {"metadata": {"name": "settings"}, "data": {"retention.ms": "604800000"}}
    created = core.create_namespaced_config_map(namespace, body)
    assert created.metadata.uid and created.metadata.resource_version

    patched = core.patch_namespaced_config_map(
        "settings", namespace, {"data": {"segment.bytes": "1048576"}}
    )
    assert patched.data == {"retention.ms": "604800000", "segment.bytes": "1048576"}
    assert patched.metadata.resource_version != created.metadata.resource_version
    with pytest.raises(ApiException) as conflict:
        core.create_namespaced_config_map(namespace, body)
    assert conflict.value.status == 409


def test_watch_delivers_events(kube_api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    listed = core.list_namespaced_config_map(namespace)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "watched"}})
    watcher = watch.Watch()
    events = []
    for event in watcher.stream(
        core.list_namespaced_config_map,
        namespace,
        resource_version=listed.metadata.resource_version,
        timeout_seconds=10,
    ):
        events.append((event["type"], event["object"].metadata.name))
        if events[-1] == ("ADDED", "watched"):
            watcher.stop()
    assert ("ADDED", "watched") in events


def test_rbac_governs_service_account_tokens(
    kube: KubeControlPlane, kube_api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    rbac = client.RbacAuthorizationV1Api(kube_api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})

    # In 1.20 the controller-manager's token controller mints a token Secret per account.
    def token() -> str | None:
        account = core.read_namespaced_service_account("reader", namespace)
        for ref in account.secrets or []:
            secret = core.read_namespaced_secret(ref.name, namespace)
            if secret.data and "token" in secret.data:
                return base64.b64decode(secret.data["token"]).decode()
        return None

    configuration = client.Configuration()
    configuration.host = kube.url
    configuration.ssl_ca_cert = str(kube.ca_file)
    configuration.api_key = {"authorization": eventually(token, "a service-account token")}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    with client.ApiClient(configuration) as reader_api:
        reader = client.CoreV1Api(reader_api)
        with pytest.raises(ApiException) as refused:
            reader.list_namespaced_config_map(namespace)
        assert refused.value.status == 403

        rbac.create_namespaced_role(
            namespace,
            {
                "metadata": {"name": "read-configmaps"},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
            },
        )
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": "reader-reads-configmaps"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "read-configmaps",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
            },
        )

        # The authorizer reads roles from its informer cache: allowed shortly, not instantly.
        def allowed() -> bool | None:
            try:
                reader.list_namespaced_config_map(namespace)
            except ApiException as exc:
                if exc.status == 403:
                    return None
                raise
            return True

        eventually(allowed, "the RoleBinding to take effect", timeout=15)


# -- controllers ---------------------------------------------------------------------------


def test_statefulset_gets_its_pvc_and_pod(kube_api: client.ApiClient, namespace: str) -> None:
    apps = client.AppsV1Api(kube_api)
    core = client.CoreV1Api(kube_api)
    labels = {"app": "broker"}
    apps.create_namespaced_stateful_set(
        namespace,
        {
            "metadata": {"name": "broker"},
            "spec": {
                "replicas": 1,
                "serviceName": "broker",
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "broker",
                                "image": "millstream:test",
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                            }
                        ]
                    },
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "1Gi"}},
                        },
                    }
                ],
            },
        },
    )

    pvc = eventually(
        lambda: read_or_none(
            lambda: core.read_namespaced_persistent_volume_claim("data-broker-0", namespace)
        ),
        "the StatefulSet controller to create PVC data-broker-0",
    )
    pod = eventually(
        lambda: read_or_none(lambda: core.read_namespaced_pod("broker-0", namespace)),
        "the StatefulSet controller to create pod broker-0",
    )
    # No provisioner and no kubelet: both wait forever, which is all a test can ask of them.
    assert pvc.status.phase == "Pending"
    assert pod.status.phase == "Pending"
    claims = [
        v.persistent_volume_claim.claim_name for v in pod.spec.volumes if v.persistent_volume_claim
    ]
    assert claims == ["data-broker-0"]
    assert [(o.kind, o.name) for o in pod.metadata.owner_references] == [("StatefulSet", "broker")]

    # The garbage collector removes the pod with its owner; the claim outlives both (1.20 has
    # no persistentVolumeClaimRetentionPolicy), which is what keeps a broker's data.
    apps.delete_namespaced_stateful_set("broker", namespace, propagation_policy="Background")
    eventually(
        lambda: (
            True
            if read_or_none(lambda: core.read_namespaced_pod("broker-0", namespace)) is None
            else None
        ),
        "the garbage collector to delete pod broker-0",
    )
    assert core.read_namespaced_persistent_volume_claim("data-broker-0", namespace)


# -- Millstream's CRDs ---------------------------------------------------------------------


def _example_resources(crds: list[dict[str, Any]]) -> list[tuple[Path, dict[str, Any]]]:
    kinds = {(crd["spec"]["group"], crd["spec"]["names"]["kind"]) for crd in crds}
    found = []
    for path in sorted(EXAMPLE_DIR.glob("**/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and (_group(doc), doc.get("kind")) in kinds:
                found.append((path, doc))
    return found


def _group(resource: dict[str, Any]) -> str:
    return str(resource.get("apiVersion", "")).rpartition("/")[0]


def _crd_for(crds: list[dict[str, Any]], resource: dict[str, Any]) -> dict[str, Any]:
    return next(
        crd
        for crd in crds
        if crd["spec"]["group"] == _group(resource)
        and crd["spec"]["names"]["kind"] == resource["kind"]
    )


def _create(
    custom: client.CustomObjectsApi,
    crd: dict[str, Any],
    resource: dict[str, Any],
    namespace: str,
    **kwargs: Any,
) -> dict[str, Any]:
    group, _, version = resource["apiVersion"].partition("/")
    plural = crd["spec"]["names"]["plural"]
    body = copy.deepcopy(resource)
    if crd["spec"]["scope"] == "Namespaced":
        body["metadata"]["namespace"] = namespace
        created: dict[str, Any] = custom.create_namespaced_custom_object(
            group, version, namespace, plural, body, **kwargs
        )
    else:
        created = custom.create_cluster_custom_object(group, version, plural, body, **kwargs)
    return created


def _assert_kept(expected: Any, actual: Any, where: str) -> None:
    """Every field of ``expected`` is in ``actual`` with the same value (defaults may be added)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r} is not an object"
        for key, value in expected.items():
            assert key in actual, f"{where}.{key} was pruned: the CRD schema does not declare it"
            _assert_kept(value, actual[key], f"{where}.{key}")
    else:
        assert actual == expected, f"{where}: sent {expected!r}, stored {actual!r}"


def test_examples_are_accepted_whole(
    kube_api: client.ApiClient, millstream_crds: list[dict[str, Any]], namespace: str
) -> None:
    examples = _example_resources(millstream_crds)
    if not examples:
        pytest.skip(f"no custom resources of these CRDs in {EXAMPLE_DIR}")
    custom = client.CustomObjectsApi(kube_api)
    for path, resource in examples:
        crd = _crd_for(millstream_crds, resource)
        name = resource["metadata"]["name"]
        try:
            created = _create(custom, crd, resource, namespace)
        except ApiException as exc:
            pytest.fail(f"{path.name}: {resource['kind']} {name} refused: {exc.body}")
        _assert_kept(resource.get("spec", {}), created.get("spec", {}), f"{path.name}: spec")


@pytest.fixture
def topic_example(millstream_crds: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A valid Topic from the examples, with its CRD."""
    for _, resource in _example_resources(millstream_crds):
        if resource["kind"] == "Topic":
            return _crd_for(millstream_crds, resource), copy.deepcopy(resource)
    pytest.skip("no Topic among the examples")


def test_negative_partitions_are_refused(
    kube_api: client.ApiClient,
    topic_example: tuple[dict[str, Any], dict[str, Any]],
    namespace: str,
) -> None:
    crd, topic = topic_example
    topic["metadata"] = {"name": "negative"}
    topic["spec"]["partitions"] = -1
    with pytest.raises(ApiException) as refused:
        _create(client.CustomObjectsApi(kube_api), crd, topic, namespace)
    assert refused.value.status == 422
    assert "partitions" in refused.value.body


def _preserves_unknown(schema: dict[str, Any]) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields"))


def test_unknown_field_is_refused_or_pruned(
    kube_api: client.ApiClient,
    topic_example: tuple[dict[str, Any], dict[str, Any]],
    namespace: str,
) -> None:
    crd, topic = topic_example
    topic["metadata"] = {"name": "unknown-field"}
    topic["spec"]["noSuchField"] = "surprise"
    version = topic["apiVersion"].partition("/")[2]
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]
    spec_schema = schema["openAPIV3Schema"]["properties"]["spec"]
    try:
        # Strict field validation arrived in 1.25; 1.20 ignores the parameter and prunes.
        created = _create(
            client.CustomObjectsApi(kube_api), crd, topic, namespace, field_validation="Strict"
        )
    except ApiException as exc:
        assert exc.status in (400, 422), exc.body  # BadRequest from a strict server
        assert "noSuchField" in exc.body
        return
    if _preserves_unknown(spec_schema):
        assert created["spec"]["noSuchField"] == "surprise"
    else:
        assert "noSuchField" not in created["spec"]
