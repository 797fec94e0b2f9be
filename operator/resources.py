"""The Kubernetes objects a Cluster becomes, as plain manifests (dicts ready to apply).

The Cluster handler calls :func:`cluster_resources` (or a single builder) and applies the
result; the Topic and ConsumerGroup handlers call :func:`broker_urls` to reach the brokers and
:func:`bootstrap_url` for status. Pure functions of the parsed spec: the admin token, the
default image and the PodDisruptionBudget API version are inputs, because finding them out
(a Secret that may exist, an environment variable, API discovery) is I/O for the caller.

What a Cluster named ``events`` becomes (``names(...)`` spells every name):

* StatefulSet ``events``: pods ``events-0``, ``events-1``..., the broker id being the ordinal;
  each with its own PersistentVolumeClaim ``data-events-N`` from the volume claim template.
  Pods start in parallel: brokers do not need each other to start.
* Service ``events-brokers``: headless, so each pod has a stable DNS name
  (``events-0.events-brokers.NS.svc``) through which the operator and clients reach one
  broker. It publishes pods before they are ready: the operator must reach a starting broker
  to push it the metadata it needs to become ready.
* Service ``events``: the client Service on port 9092, ``status.bootstrap`` of the Cluster.
* ConfigMap ``events-config``: the broker settings of ``spec.config`` as ``serve.args``, one
  command-line argument a line. A hash of it is a pod template annotation, so that a change
  of settings rolls the brokers.
* Secret ``events-admin-token``: the token of the brokers' admin API, mounted as a file.
* PodDisruptionBudget ``events``: at most one broker down by eviction at a time.
* Topic ``events-group-offsets``: the groups' committed offsets, built by :mod:`.internal_topic`
  and created once (not applied: from then on it is a Topic like the others).

Every object carries the Cluster's labels and an owner reference to it, so deleting the Cluster
deletes them (the StatefulSet's volume claims excepted, as Kubernetes keeps those).

The contract with the broker process, which knows nothing of Kubernetes: it runs as
``millstream serve --host 0.0.0.0 --port 9092 --data-dir /data --broker-id N
--admin-token-file /etc/millstream/admin/token`` plus the settings of ``serve.args`` (N being
its pod's ordinal, worked out by :data:`SERVE_SCRIPT`), and answers ``/healthz`` once listening
and ``/readyz`` once able to serve.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

from millstream.operator.specs import API_VERSION, BrokerConfig, ClusterSpec, Meta

Manifest = dict[str, Any]
PdbApiVersion = Literal["policy/v1", "policy/v1beta1"]

BROKER_PORT: Final = 9092
BROKER_USER: Final = 10001  # the image's user and group (Dockerfile)
DATA_DIR: Final = "/data"
CONFIG_DIR: Final = "/etc/millstream/config"
SERVE_ARGS: Final = "serve.args"
ADMIN_TOKEN_DIR: Final = "/etc/millstream/admin"
ADMIN_TOKEN_KEY: Final = "token"
CONFIG_HASH_ANNOTATION: Final = "millstream.io/config-hash"
CLUSTER_LABEL: Final = "millstream.io/cluster"
# Room for a broker to drain in-flight requests and fsync after its own shutdown timeout.
GRACE_MARGIN_SECONDS: Final = 20
BROKER_SHUTDOWN_DEFAULT_SECONDS: Final = 10  # the broker's own default (millstream serve)

# POSIX sh, as every image based on Debian has. The broker id is the pod's ordinal, the number
# the StatefulSet ends each pod's name with (the downward API only gives it from 1.28 on). The
# settings are read one argument a line, so that no value is ever split or globbed by the shell.
SERVE_SCRIPT: Final = f"""\
set -eu
set --
while IFS= read -r arg || [ -n "$arg" ]; do set -- "$@" "$arg"; done < {CONFIG_DIR}/{SERVE_ARGS}
exec millstream serve --host 0.0.0.0 --port {BROKER_PORT} --data-dir {DATA_DIR} \\
    --broker-id "${{MILLSTREAM_POD_NAME##*-}}" \\
    --admin-token-file {ADMIN_TOKEN_DIR}/{ADMIN_TOKEN_KEY} "$@"
"""


@dataclass(frozen=True, slots=True)
class ClusterNames:
    """The names of everything a Cluster becomes."""

    cluster: str
    statefulset: str
    headless_service: str
    client_service: str
    config_map: str
    admin_secret: str
    pod_disruption_budget: str

    def pod(self, broker_id: int) -> str:
        return f"{self.statefulset}-{broker_id}"

    def volume_claim(self, broker_id: int) -> str:
        return f"data-{self.pod(broker_id)}"


def names(cluster_name: str) -> ClusterNames:
    return ClusterNames(
        cluster=cluster_name,
        statefulset=cluster_name,
        headless_service=f"{cluster_name}-brokers",
        client_service=cluster_name,
        config_map=f"{cluster_name}-config",
        admin_secret=f"{cluster_name}-admin-token",
        pod_disruption_budget=cluster_name,
    )


def broker_urls(cluster_name: str, namespace: str, brokers: int) -> list[str]:
    """The URL of each broker, by id, through the headless Service's stable pod names."""
    n = names(cluster_name)
    return [
        f"http://{n.pod(i)}.{n.headless_service}.{namespace}.svc:{BROKER_PORT}"
        for i in range(brokers)
    ]


def bootstrap_url(cluster_name: str, namespace: str) -> str:
    """The client Service's URL, which clients in the Kubernetes cluster start from."""
    return f"http://{names(cluster_name).client_service}.{namespace}.svc:{BROKER_PORT}"


def selector_labels(cluster_name: str) -> dict[str, str]:
    """The labels that pick a Cluster's broker pods (and volume claims); never change them:
    a StatefulSet's selector is immutable."""
    return {
        "app.kubernetes.io/name": "millstream",
        "app.kubernetes.io/component": "broker",
        CLUSTER_LABEL: cluster_name,
    }


def labels(cluster_name: str) -> dict[str, str]:
    """The labels on everything a Cluster becomes."""
    return {
        **selector_labels(cluster_name),
        "app.kubernetes.io/instance": cluster_name,
        "app.kubernetes.io/part-of": "millstream",
        "app.kubernetes.io/managed-by": "millstream-operator",
    }


def owner_reference(meta: Meta) -> dict[str, Any]:
    """Makes the Cluster the controller of an object: deleted with it, and watched through it."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Cluster",
        "name": meta.name,
        "uid": meta.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pdb_api_version(served: Iterable[str]) -> PdbApiVersion:
    """policy/v1 where the API server serves it (1.21 on), else policy/v1beta1."""
    return "policy/v1" if "policy/v1" in set(served) else "policy/v1beta1"


def cluster_resources(
    spec: ClusterSpec,
    *,
    default_image: str,
    admin_token: str,
    pdb_api_version: PdbApiVersion,
    replicas: int | None = None,
) -> list[Manifest]:
    """Everything a Cluster becomes, in an order that can be applied from first to last."""
    return [
        admin_secret(spec, admin_token),
        config_map(spec),
        headless_service(spec),
        client_service(spec),
        statefulset(spec, default_image=default_image, replicas=replicas),
        pod_disruption_budget(spec, api_version=pdb_api_version),
    ]


def serve_args(config: BrokerConfig) -> list[str]:
    """The settings of ``spec.config`` as ``millstream serve`` flags; unset ones are left to
    the broker's defaults."""
    args = []
    if config.housekeeping_interval_seconds is not None:
        args.append(f"--housekeeping-interval={config.housekeeping_interval_seconds}")
    if config.shutdown_timeout_seconds is not None:
        args.append(f"--shutdown-timeout={config.shutdown_timeout_seconds}")
    args += [f"--topic-default={k}={v}" for k, v in sorted(config.topic_defaults.items())]
    return args


def config_map(spec: ClusterSpec) -> Manifest:
    args = serve_args(spec.config)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(spec, names(spec.meta.name).config_map),
        "data": {SERVE_ARGS: "".join(f"{arg}\n" for arg in args)},
    }


def admin_secret(spec: ClusterSpec, token: str) -> Manifest:
    """The Secret holding the admin API token (which the caller generates once and keeps)."""
    if not token or token != token.strip():
        raise ValueError("the admin token must be non-empty, without surrounding whitespace")
    encoded = base64.b64encode(token.encode("utf-8")).decode("ascii")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(spec, names(spec.meta.name).admin_secret),
        "type": "Opaque",
        "data": {ADMIN_TOKEN_KEY: encoded},
    }


def headless_service(spec: ClusterSpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, names(spec.meta.name).headless_service),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector_labels(spec.meta.name),
            "ports": [_service_port()],
        },
    }


def client_service(spec: ClusterSpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, names(spec.meta.name).client_service),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(spec.meta.name),
            "ports": [_service_port()],
        },
    }


def pod_disruption_budget(spec: ClusterSpec, *, api_version: PdbApiVersion) -> Manifest:
    # Partitions are not replicated yet, so every broker down is partitions unavailable: one at
    # a time keeps node drains moving (zero would block them for good) and bounds the outage.
    return {
        "apiVersion": api_version,
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(spec, names(spec.meta.name).pod_disruption_budget),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(spec.meta.name)},
        },
    }


def statefulset(spec: ClusterSpec, *, default_image: str, replicas: int | None = None) -> Manifest:
    """The brokers. ``replicas`` defaults to ``spec.brokers``; scale-in passes more while the
    brokers that go are still being drained."""
    n = names(spec.meta.name)
    selector = selector_labels(spec.meta.name)
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(spec, n.statefulset),
        "spec": {
            "serviceName": n.headless_service,
            "replicas": spec.brokers if replicas is None else replicas,
            # Immutable once created, like the selector and the claim templates.
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": labels(spec.meta.name),
                    "annotations": {CONFIG_HASH_ANNOTATION: _config_hash(spec)},
                },
                "spec": _pod_spec(spec, spec.image or default_image),
            },
            "volumeClaimTemplates": [_volume_claim_template(spec)],
        },
    }


def _pod_spec(spec: ClusterSpec, image: str) -> dict[str, Any]:
    n = names(spec.meta.name)
    shutdown = spec.config.shutdown_timeout_seconds or BROKER_SHUTDOWN_DEFAULT_SECONDS
    return {
        # Brokers know nothing of Kubernetes: no API token, no Service environment variables.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": max(30, shutdown + GRACE_MARGIN_SECONDS),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": BROKER_USER,
            "runAsGroup": BROKER_USER,
            # The volume is writable by the broker's group; checked only at the root when
            # mounting, so a large volume does not slow every start.
            "fsGroup": BROKER_USER,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # Brokers on different nodes where possible, so one node lost is one broker lost.
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": selector_labels(spec.meta.name)},
                        },
                    }
                ]
            }
        },
        "containers": [_broker_container(spec, image)],
        "volumes": [
            {"name": "config", "configMap": {"name": n.config_map, "defaultMode": 0o444}},
            {
                "name": "admin-token",
                # Readable by the broker's group (fsGroup) only.
                "secret": {"secretName": n.admin_secret, "defaultMode": 0o440},
            },
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
        ],
    }


def _broker_container(spec: ClusterSpec, image: str) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "broker",
        "image": image,
        "command": ["/bin/sh", "-c", SERVE_SCRIPT],
        "env": [
            {
                "name": "MILLSTREAM_POD_NAME",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
            },
        ],
        "ports": [{"name": "http", "containerPort": BROKER_PORT, "protocol": "TCP"}],
        # Recovery (checking logs, rebuilding indexes) runs before the broker listens and can
        # take minutes after a crash: the startup probe gives it ten before liveness applies.
        "startupProbe": _probe("/healthz", period=5, failures=120),
        "livenessProbe": _probe("/healthz", period=10, failures=3),
        "readinessProbe": _probe("/readyz", period=5, failures=2),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "privileged": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_DIR},
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "admin-token", "mountPath": ADMIN_TOKEN_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    requests, limits = spec.resources.requests, spec.resources.limits
    resources = {key: dict(v) for key, v in (("requests", requests), ("limits", limits)) if v}
    if resources:
        container["resources"] = resources
    return container


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def _volume_claim_template(spec: ClusterSpec) -> dict[str, Any]:
    claim: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": spec.storage.size}},
    }
    if spec.storage.storage_class_name is not None:
        claim["storageClassName"] = spec.storage.storage_class_name
    return {
        # Labelled so that the operator finds the claims of removed brokers (pvcPolicy).
        "metadata": {"name": "data", "labels": selector_labels(spec.meta.name)},
        "spec": claim,
    }


def _service_port() -> dict[str, Any]:
    return {"name": "http", "port": BROKER_PORT, "targetPort": "http", "protocol": "TCP"}


def _config_hash(spec: ClusterSpec) -> str:
    data = config_map(spec)["data"]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _metadata(spec: ClusterSpec, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": spec.meta.namespace,
        "labels": labels(spec.meta.name),
        "ownerReferences": [owner_reference(spec.meta)],
    }
