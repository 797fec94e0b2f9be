"""Resource bodies for the operator's unit tests, shaped as the API server hands them to kopf."""

from __future__ import annotations

import copy
from typing import Any

from millstream.operator.specs import API_VERSION

NAMESPACE = "streaming"


def body(
    kind: str,
    spec: dict[str, Any] | None,
    *,
    name: str = "example",
    generation: int = 1,
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A resource body with the metadata the API server adds (namespace, uid, generation)."""
    resource: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": f"uid-of-{kind.lower()}-{name}",
            "generation": generation,
            "resourceVersion": "42",
            "labels": {"team": "streaming"},
        },
    }
    if spec is not None:
        resource["spec"] = copy.deepcopy(spec)
    if status is not None:
        resource["status"] = copy.deepcopy(status)
    return resource
