"""Fixtures for tests against a real Kubernetes control plane (tests/support/kube.py).

One control plane per test session (``kube``), an admin API client for it (``kube_api``), a fresh
namespace per test (``namespace``) and Millstream's CRDs from crds/ installed once
(``millstream_crds``).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from millstream.operator.kube import object_path
from tests.k8s.tools import NAMESPACE as OPERATOR_NAMESPACE
from tests.k8s.tools import helm
from tests.support.kube import KubeBinariesMissing, KubeControlPlane, find_binaries
from tests.support.operator import KubeRest, eventually

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"


@pytest.fixture(scope="session")
def kube() -> Iterator[KubeControlPlane]:
    try:
        binaries = find_binaries()
    except KubeBinariesMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    with KubeControlPlane(binaries=binaries) as plane:
        yield plane


@pytest.fixture(scope="session")
def kube_api(kube: KubeControlPlane) -> Iterator[client.ApiClient]:
    configuration = client.Configuration()
    configuration.host = kube.url
    configuration.ssl_ca_cert = str(kube.ca_file)
    configuration.api_key = {"authorization": kube.token}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    with client.ApiClient(configuration) as api:
        yield api


@pytest.fixture
def namespace(kube_api: client.ApiClient) -> Iterator[str]:
    """A namespace of its own for one test, deleted (with its contents) afterwards."""
    core = client.CoreV1Api(kube_api)
    name = f"test-{uuid.uuid4().hex[:10]}"
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        core.delete_namespace(name)


def _established(ext: client.ApiextensionsV1Api, name: str) -> bool:
    crd = ext.read_custom_resource_definition(name)
    conditions = crd.status.conditions or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


@pytest.fixture(scope="session")
def millstream_crds(kube_api: client.ApiClient) -> list[dict[str, Any]]:
    """The CRDs of crds/, created on the control plane and established."""
    paths = sorted(CRD_DIR.glob("*.yaml"))
    if not paths:
        pytest.skip(f"no CRDs in {CRD_DIR} yet")
    crds = [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]
    ext = client.ApiextensionsV1Api(kube_api)
    for crd in crds:
        try:
            ext.create_custom_resource_definition(crd)
        except ApiException as exc:
            pytest.fail(f"CRD {crd['metadata']['name']} refused: {exc.body}", pytrace=False)
    deadline = time.monotonic() + 30
    for crd in crds:
        while not _established(ext, crd["metadata"]["name"]):
            if time.monotonic() > deadline:
                pytest.fail(f"CRD {crd['metadata']['name']} not established within 30s")
            time.sleep(0.1)
    return crds


# -- the operator's account (tests/k8s/test_operator.py, test_rebalance.py) ---------------


@pytest.fixture(scope="session")
def rest(kube: KubeControlPlane) -> KubeRest:
    return KubeRest.of(kube)


@pytest.fixture(scope="session")
def chart_account(
    kube: KubeControlPlane, rest: KubeRest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A kubeconfig for the chart's operator service account, with the chart's rules.

    The cluster-wide variant of the chart (operator.watchAnyNamespace), whose account lives in
    a namespace of its own: the tests delete the namespaces the operator manages, and an
    account inside one would lose its token with it.
    """
    docs = helm().template({"operator": {"watchAnyNamespace": True}})
    wanted = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    objects = {doc["kind"]: doc for doc in docs if doc["kind"] in wanted}
    assert set(objects) == wanted, f"the chart renders {sorted(objects)}"
    if rest.get(f"/api/v1/namespaces/{OPERATOR_NAMESPACE}") is None:
        rest.create("/api/v1/namespaces", {"metadata": {"name": OPERATOR_NAMESPACE}})
    account = objects["ServiceAccount"]
    rest.create(object_path("v1", "serviceaccounts", OPERATOR_NAMESPACE), account)
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    rest.create(f"{rbac}/clusterroles", objects["ClusterRole"])
    rest.create(f"{rbac}/clusterrolebindings", objects["ClusterRoleBinding"])

    account_path = object_path(
        "v1", "serviceaccounts", OPERATOR_NAMESPACE, account["metadata"]["name"]
    )

    def token() -> str | None:  # minted by the controller-manager's token controller (1.20)
        for ref in rest.get(account_path).get("secrets") or ():
            secret = rest.get(object_path("v1", "secrets", OPERATOR_NAMESPACE, ref["name"]))
            if secret and "token" in (secret.get("data") or {}):
                return base64.b64decode(secret["data"]["token"]).decode()
        return None

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "test",
                "cluster": {"server": kube.url, "certificate-authority": str(kube.ca_file)},
            }
        ],
        "users": [{"name": "operator", "user": {"token": eventually(token, "a token")}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "operator"}}],
        "current-context": "test",
    }
    path = tmp_path_factory.mktemp("operator-account") / "kubeconfig"
    path.write_text(json.dumps(config))
    return path
