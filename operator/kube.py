"""The operator's calls to the Kubernetes API, as plain JSON: read, list, apply, patch status.

Used by the handlers (:mod:`.clusters`, :mod:`.topics`, :mod:`.groups`) next to kopf, which
watches the resources and stores its own progress; everything the operator writes itself goes
through :class:`Kube`. It rides on the asyncio client of the ``kubernetes`` package for
configuration and authentication (in a pod, the service account; elsewhere ``$KUBECONFIG`` or
``~/.kube/config``, as kopf logs in) but sends requests by path and reads answers as JSON
dictionaries, so that manifests built by :mod:`.resources` go out as they are.

Objects are applied with server-side apply (field manager ``millstream-operator``, conflicts
forced): one request creates or updates, and fields that other controllers or people own are
left alone. The internal Topic is only created (:meth:`Kube.create`), never applied. Status is
written with a JSON merge patch on the status subresource.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from kubernetes.aio import client, config

from millstream.operator.specs import API_VERSION

FIELD_MANAGER: Final = "millstream-operator"
CLUSTERS: Final = "clusters"
TOPICS: Final = "topics"
CONSUMER_GROUPS: Final = "consumergroups"

# The kinds the operator applies, by kind: their plural (the path segment).
_PLURALS: Final = {
    "Secret": "secrets",
    "ConfigMap": "configmaps",
    "Service": "services",
    "StatefulSet": "statefulsets",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "Topic": TOPICS,
}


class KubeError(Exception):
    """The API server refused a request; ``status`` is the HTTP status."""

    def __init__(self, status: int, method: str, path: str, body: bytes) -> None:
        try:
            message = str(json.loads(body).get("message") or "")
        except (ValueError, AttributeError):
            message = body[:300].decode("utf-8", "replace")
        super().__init__(f"{method} {path}: HTTP {status}: {message}")
        self.status = status


def object_path(api_version: str, plural: str, namespace: str, name: str | None = None) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{plural}"
    return path if name is None else f"{path}/{name}"


class Kube:
    """One connection to the API server. ``await Kube.connect()``, then ``await close()``."""

    def __init__(self, api: client.ApiClient) -> None:
        self._api = api

    @classmethod
    async def connect(cls, kubeconfig: str | None = None) -> Kube:
        """In a pod, its service account; elsewhere the kubeconfig (``kubeconfig``, by default
        ``$KUBECONFIG``)."""
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            await config.load_kube_config(
                config_file=kubeconfig, client_configuration=configuration
            )  # type: ignore[no-untyped-call]
        return cls(client.ApiClient(configuration))

    async def close(self) -> None:
        await self._api.close()  # type: ignore[no-untyped-call]

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """One API call; the answer's JSON, or KubeError."""
        method, url, headers, data, _ = await self._api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()),
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = await self._api.call_api(method, url, headers, data)
        raw: bytes = await response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status < 300:
            raise KubeError(response.status, method, path, raw)
        return json.loads(raw) if raw else None

    async def get(self, path: str) -> Any | None:
        """The object at ``path``; None if there is none."""
        try:
            return await self.request("GET", path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def get_object(
        self, api_version: str, plural: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self.get(
            object_path(api_version, plural, namespace, name)
        )
        return found

    async def list_objects(
        self, api_version: str, plural: str, namespace: str
    ) -> list[dict[str, Any]]:
        listed = await self.request("GET", object_path(api_version, plural, namespace))
        return list(listed.get("items") or [])

    async def apply(self, manifest: Mapping[str, Any]) -> Any:
        """Create or update ``manifest`` (server-side apply, the operator's fields only)."""
        meta = manifest["metadata"]
        path = object_path(
            manifest["apiVersion"], _PLURALS[manifest["kind"]], meta["namespace"], meta["name"]
        )
        return await self.request(
            "PATCH",
            path,
            body=manifest,
            query={"fieldManager": FIELD_MANAGER, "force": "true"},
            content_type="application/apply-patch+yaml",
        )

    async def create(self, manifest: Mapping[str, Any]) -> bool:
        """Create ``manifest`` unless an object of its name exists; whether it was created.
        For objects the operator makes once and then leaves to their own handlers and to
        people (the internal Topic), which an apply would keep forcing back."""
        meta = manifest["metadata"]
        path = object_path(manifest["apiVersion"], _PLURALS[manifest["kind"]], meta["namespace"])
        try:
            await self.request("POST", path, body=manifest, query={"fieldManager": FIELD_MANAGER})
        except KubeError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def served_versions(self, group: str) -> list[str]:
        """The ``group/version`` strings the API server serves for an API group."""
        found = await self.get(f"/apis/{group}")
        return [str(v["groupVersion"]) for v in (found or {}).get("versions") or ()]

    async def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.get_object("v1", "secrets", namespace, name)

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        """Write a custom resource's status; a resource deleted meanwhile is no error."""
        path = object_path(API_VERSION, plural, namespace, name) + "/status"
        try:
            await self.request(
                "PATCH",
                path,
                body={"status": status},
                content_type="application/merge-patch+json",
            )
        except KubeError as exc:
            if exc.status != 404:
                raise

    async def annotate(
        self, plural: str, namespace: str, name: str, annotations: Mapping[str, str]
    ) -> None:
        path = object_path(API_VERSION, plural, namespace, name)
        await self.request(
            "PATCH",
            path,
            body={"metadata": {"annotations": dict(annotations)}},
            content_type="application/merge-patch+json",
        )
