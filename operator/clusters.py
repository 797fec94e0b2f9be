"""Reconciling a Cluster: its Kubernetes objects, its status, and its brokers' metadata.

Called by the kopf handlers (:mod:`.handlers`): :func:`reconcile_cluster` when a Cluster is
created, changed or found at startup; :func:`check_cluster` by the Cluster's periodic drift
check and when its StatefulSet's counts change. Decisions are :mod:`.plan`'s and
:mod:`.resources`'; this module reads, asks, and writes.

Each reconcile and check also creates the Cluster's internal Topic (:mod:`.internal_topic`)
when the namespace has none, so the Topic handler places and pushes ``__group_offsets``.

The drift check proper (:meth:`.brokers.Brokers.sync`, here after each reconcile and each
check): every reachable broker gets the cluster's
metadata if it lacks it (a broker that started on an empty volume, or a new one), and every
topic it does not hold as its Topic's status says (deleted or changed behind the operator's
back). It is best effort: brokers that do not answer are retried at the next check.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from millstream.operator import cluster_plan, internal_topic, plan, rebalancer
from millstream.operator.brokers import Brokers, SyncReport
from millstream.operator.kube import CLUSTERS, TOPICS, KubeError
from millstream.operator.resources import cluster_resources, names
from millstream.operator.runtime import Runtime
from millstream.operator.specs import API_VERSION, INTERNAL_LABEL, ClusterSpec, parse_cluster
from millstream.operator.status import Problem


async def reconcile_cluster(rt: Runtime, body: Mapping[str, Any], logger: kopf.Logger) -> None:
    """Apply everything the Cluster becomes, push its metadata to the brokers, write status."""
    namespace, name = _identity(body)
    async with rt.lock(namespace, name):
        body = await _latest(rt, body)
        spec = parse_cluster(body)
        # A token that exists is kept: the brokers already read it from the mounted Secret.
        token = await rt.admin_token(namespace, name) or secrets.token_urlsafe(32)
        topics = await rt.kube.list_objects(API_VERSION, TOPICS, namespace)
        existing = await rt.kube.get_object("apps/v1", "statefulsets", namespace, name)
        replicas, scale_problem = rebalancer.replicas(
            spec, topics, body.get("status"), running=rebalancer.running_brokers(existing, spec)
        )
        manifests = cluster_resources(
            spec,
            default_image=rt.settings.broker_image,
            admin_token=token,
            pdb_api_version=await rt.pdb_api_version(),
            replicas=replicas,
        )
        unsupported: list[Problem] = []
        problem = scale_problem
        for manifest in manifests:
            if manifest["kind"] == "StatefulSet":
                manifest, storage = cluster_plan.keep_storage(manifest, existing)
                unsupported += [storage] if storage else []
            try:
                await rt.kube.apply(manifest)
            except KubeError as exc:
                problem = Problem("ApplyFailed", str(exc))
                break
        await _write_status(rt, spec, body.get("status"), problem, unsupported)
        if problem is not None and problem.reason == "ApplyFailed":
            raise kopf.TemporaryError(problem.message, delay=rt.settings.retry_delay)
        await _keep_internal_topic(rt, spec, body, topics, logger)
        await _sync(rt, spec, token, replicas, topics, logger)


async def check_cluster(rt: Runtime, body: Mapping[str, Any], logger: kopf.Logger) -> None:
    """Refresh the Cluster's status from its StatefulSet and bring its brokers back to what
    the Topics' status says."""
    namespace, name = _identity(body)
    async with rt.lock(namespace, name):
        body = await _latest(rt, body)
        spec = parse_cluster(body)
        topics = await rt.kube.list_objects(API_VERSION, TOPICS, namespace)
        statefulset = await rt.kube.get_object(
            "apps/v1", "statefulsets", namespace, names(name).statefulset
        )
        running = rebalancer.running_brokers(statefulset, spec)
        replicas, scale_problem = rebalancer.replicas(
            spec, topics, body.get("status"), running=running
        )
        previous = body.get("status") or {}
        kept = [c for c in previous.get("conditions") or () if c.get("type") == "NotSupported"]
        unsupported = [Problem(c.get("reason", ""), c.get("message", "")) for c in kept]
        await _write_status(rt, spec, previous, scale_problem, unsupported)
        await _keep_internal_topic(rt, spec, body, topics, logger)
        token = await rt.admin_token(namespace, name)
        if token is None:
            return  # the Cluster's own handler has not created the Secret yet
        await _sync(rt, spec, token, max(replicas, running), topics, logger)
        await rebalancer.drive(rt, spec, body, token, topics, logger)


def _identity(body: Mapping[str, Any]) -> tuple[str, str]:
    metadata = body.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


async def _latest(rt: Runtime, body: Mapping[str, Any]) -> Mapping[str, Any]:
    """The Cluster as the API server has it now (``body`` if it is gone). Read under the
    Cluster's lock: the body a handler was given may predate the last pass's status, and a
    status that still lists the moves off a drained broker would count it back in, grow the
    StatefulSet again and push the cluster with it to the brokers."""
    namespace, name = _identity(body)
    return await rt.kube.get_object(API_VERSION, CLUSTERS, namespace, name) or body


async def _keep_internal_topic(
    rt: Runtime,
    spec: ClusterSpec,
    body: Mapping[str, Any],
    topics: Sequence[Mapping[str, Any]],
    logger: kopf.Logger,
) -> None:
    """Create the Cluster's group-offsets Topic if the namespace has none: at the first
    reconcile, and after someone deleted it (it then adopts the topic the brokers kept). A
    failure is logged and the next drift check tries again."""
    if (body.get("metadata") or {}).get("deletionTimestamp"):
        return  # going: a Topic created now would only be collected with it
    manifest = internal_topic.internal_topic(spec)
    topic = manifest["metadata"]["name"]
    presence = internal_topic.presence(spec.meta.name, topics)
    if presence == "taken":
        logger.error(
            "Topic %r is not the internal Topic (no %s label): the cluster has no place for "
            "its groups' committed offsets until it is renamed or deleted",
            topic,
            INTERNAL_LABEL,
        )
    if presence != "missing":
        return
    try:
        created = await rt.kube.create(manifest)
    except KubeError as exc:
        logger.error("could not create the internal Topic %r: %s", topic, exc)
        return
    if created:
        logger.info("created the internal Topic %r for the groups' committed offsets", topic)


async def _write_status(
    rt: Runtime,
    spec: ClusterSpec,
    previous: Mapping[str, Any] | None,
    problem: Problem | None,
    unsupported: Sequence[Problem],
) -> None:
    namespace, name = spec.meta.namespace, spec.meta.name
    statefulset = await rt.kube.get_object(
        "apps/v1", "statefulsets", namespace, names(name).statefulset
    )
    status = cluster_plan.cluster_status_with(
        spec,
        cluster_plan.observe_statefulset(statefulset),
        previous,
        now=rt.now(),
        problem=problem,
        unsupported=unsupported,
    )
    # status.rebalance is the rebalancer's (a merge patch leaves it as it is).
    before = {k: v for k, v in (previous or {}).items() if k != "rebalance"}
    if status != before:
        await rt.kube.patch_status(CLUSTERS, namespace, name, status)


async def _sync(
    rt: Runtime,
    spec: ClusterSpec,
    token: str,
    replicas: int,
    topics: Sequence[Mapping[str, Any]],
    logger: kopf.Logger,
) -> SyncReport | None:
    namespace, name = spec.meta.namespace, spec.meta.name
    try:
        urls = rt.settings.urls(name, namespace, replicas)
    except ValueError as exc:
        logger.error("cannot reach the brokers: %s", exc)
        return None
    async with Brokers(urls, token, timeout_s=rt.settings.broker_timeout) as brokers:
        report = await brokers.sync(plan.drift_targets(name, topics))
    if report.cluster_pushed is not None:
        push = report.cluster_pushed
        logger.info(
            "cluster metadata (epoch %d) pushed to brokers %s", push.epoch, list(push.brokers)
        )
    for broker, topic in report.restored:
        logger.warning("broker %d did not hold topic %r as placed: pushed it again", broker, topic)
    for broker, why in sorted(report.failures.items()):
        logger.debug("broker %d: %s", broker, why)
    return report
