"""Fixtures for tests against a real Kubernetes control plane (tests/support/kube.py).

One control plane per test session (``kube``), an admin API client for it (``kube_api``), a fresh
namespace per test (``namespace``) and Millstream's CRDs from crds/ installed once
(``millstream_crds``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.support.kube import KubeBinariesMissing, KubeControlPlane, find_binaries

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
