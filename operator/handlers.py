"""The kopf handlers: which events of which resources call which reconcile.

Built by :func:`build_registry`, which :mod:`.main` hands to kopf; handlers are registered on
a registry of their own rather than kopf's global one, with the intervals of the settings.
Each handler is one call into :mod:`.clusters`, :mod:`.topics` or :mod:`.groups`; a body that
cannot be parsed (:class:`~.specs.SpecError`: a CRD and operator of different releases) is a
permanent failure, reported on the resource as a Kubernetes event.

=========================  ===================================================  ============
resource, event            does                                                 finalizer
=========================  ===================================================  ============
Cluster create/update/     apply its objects, create its internal Topic if      kopf's, for
resume                     missing, write status, push metadata to its brokers  the timer
Cluster timer              drift check: status, the internal Topic, cluster
(``drift_interval``)       metadata and every placed topic on every broker
StatefulSet event          the same check, when its pod counts change
Topic create/update/       place, push to every broker, write status            yes: the
resume                                                                          deletion
Topic delete               deletionPolicy Delete: delete from the brokers;      policy
                           Retain, internal Topic, or Cluster gone: nothing
ConsumerGroup timer        status from the coordinator (bounded rate), offset   kopf's, for
(``min_interval``)         reset                                                the timer
=========================  ===================================================  ============

Updates trigger on ``spec`` changes only: labels, annotations and status do not re-place a topic.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import kopf

from millstream.operator import clusters, groups, topics
from millstream.operator.kube import CLUSTERS, CONSUMER_GROUPS, TOPICS
from millstream.operator.resources import CLUSTER_LABEL
from millstream.operator.runtime import Runtime
from millstream.operator.settings import OperatorSettings
from millstream.operator.specs import API_GROUP, API_VERSION, SpecError

VERSION = "v1alpha1"
# The label every object a Cluster becomes carries (resources.labels).
_MANAGED: Final = {"app.kubernetes.io/managed-by": "millstream-operator"}

Reconcile = Callable[[Runtime, Mapping[str, Any], kopf.Logger], Awaitable[None]]


def _permanent_on_bad_spec(reconcile: Reconcile) -> Reconcile:
    @functools.wraps(reconcile)
    async def wrapped(rt: Runtime, body: Mapping[str, Any], logger: kopf.Logger) -> None:
        try:
            await reconcile(rt, body, logger)
        except SpecError as exc:
            raise kopf.PermanentError(str(exc)) from None

    return wrapped


def build_registry(
    settings: OperatorSettings, runtime: Runtime | None = None
) -> kopf.OperatorRegistry:
    """A registry with every handler of the operator, sharing one :class:`Runtime`."""
    registry = kopf.OperatorRegistry()
    rt = runtime or Runtime(settings)
    # Failures other than kopf's own errors are retried after this many seconds.
    backoff = settings.retry_delay
    reconcile_cluster = _permanent_on_bad_spec(clusters.reconcile_cluster)
    check_cluster = _permanent_on_bad_spec(clusters.check_cluster)
    reconcile_topic = _permanent_on_bad_spec(topics.reconcile_topic)
    refresh_group = _permanent_on_bad_spec(groups.refresh_group)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # As kopf's default registry does: the pod's service account, else the kubeconfig.
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    async def open_runtime(**_: Any) -> None:
        await rt.open()

    @kopf.on.cleanup(registry=registry)
    async def close_runtime(**_: Any) -> None:
        await rt.close()

    # Clusters

    @kopf.on.resume(API_GROUP, VERSION, CLUSTERS, id="cluster", registry=registry, backoff=backoff)
    @kopf.on.create(API_GROUP, VERSION, CLUSTERS, id="cluster", registry=registry, backoff=backoff)
    @kopf.on.update(
        API_GROUP, VERSION, CLUSTERS, id="cluster", registry=registry, backoff=backoff, field="spec"
    )
    async def cluster_changed(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        await reconcile_cluster(rt, body, logger)

    @kopf.timer(
        API_GROUP,
        VERSION,
        CLUSTERS,
        id="drift-check",
        registry=registry,
        interval=settings.drift_interval,
        initial_delay=settings.drift_interval,
    )
    async def cluster_drift(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        await check_cluster(rt, body, logger)

    @kopf.on.event("apps", "v1", "statefulsets", id="brokers", registry=registry, labels=_MANAGED)
    async def statefulset_changed(
        body: kopf.Body, type: str | None, logger: kopf.Logger, **_: Any
    ) -> None:
        # Pods came, went, or changed readiness: refresh the Cluster's status at once, and
        # push metadata to brokers that just became reachable.
        cluster_name = (body.metadata.labels or {}).get(CLUSTER_LABEL)
        namespace = body.metadata.namespace
        if type in (None, "DELETED") or not cluster_name or namespace is None:
            return
        cluster = await rt.kube.get_object(API_VERSION, CLUSTERS, namespace, cluster_name)
        if cluster is None or cluster["metadata"].get("deletionTimestamp"):
            return
        counts = body.get("status") or {}
        seen = cluster.get("status") or {}
        now = (counts.get("replicas") or 0, counts.get("readyReplicas") or 0)
        if now != (seen.get("brokers"), seen.get("readyBrokers")):
            await check_cluster(rt, cluster, logger)

    # Topics

    @kopf.on.resume(API_GROUP, VERSION, TOPICS, id="topic", registry=registry, backoff=backoff)
    @kopf.on.create(API_GROUP, VERSION, TOPICS, id="topic", registry=registry, backoff=backoff)
    @kopf.on.update(
        API_GROUP, VERSION, TOPICS, id="topic", registry=registry, backoff=backoff, field="spec"
    )
    async def topic_changed(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        await reconcile_topic(rt, body, logger)

    @kopf.on.delete(API_GROUP, VERSION, TOPICS, id="deletion", registry=registry, backoff=backoff)
    async def topic_deleted(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        await topics.delete_topic(rt, body, logger)

    # Consumer groups

    @kopf.timer(
        API_GROUP,
        VERSION,
        CONSUMER_GROUPS,
        id="refresh",
        registry=registry,
        interval=settings.group_refresh.min_interval.total_seconds(),
    )
    async def group_refresh(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        await refresh_group(rt, body, logger)

    return registry
