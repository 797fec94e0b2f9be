"""Reconciling a Topic: place its partitions, push them to every broker, write its status;
and on deletion, follow its deletionPolicy.

Called by the kopf handlers (:mod:`.handlers`) when a Topic is created, changed, found at
startup, or deleted. The placement and every other decision come from :mod:`.plan` and
:mod:`.status`; this module reads the Cluster and the brokers, then pushes and writes.

A Topic that cannot be placed yet (no such Cluster, brokers not up or without the cluster's
metadata, another Topic managing the same topic) gets a status that says why, and the handler
is retried after ``retry_delay`` (a kopf TemporaryError). One that names a reserved topic
without being its Cluster's internal Topic (:mod:`.internal_topic`) is refused for good, in its
status too. Deleting a Topic never waits for a Cluster that is gone or going: the finalizer is
released, so a namespace never hangs on it; deleting the internal Topic never deletes the topic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import kopf

from millstream.operator import cluster_plan, internal_topic, plan
from millstream.operator.brokers import Brokers
from millstream.operator.kube import CLUSTERS, TOPICS
from millstream.operator.plan import PLACED_ON_ANNOTATION
from millstream.operator.runtime import Runtime
from millstream.operator.specs import API_VERSION, SpecError, TopicSpec, parse_cluster, parse_topic
from millstream.operator.status import Problem, topic_status


def placed_on(body: Mapping[str, Any]) -> str | None:
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(PLACED_ON_ANNOTATION)
    return str(value) if value else None


async def reconcile_topic(rt: Runtime, body: Mapping[str, Any], logger: kopf.Logger) -> None:
    spec = parse_topic(body)
    namespace = spec.meta.namespace
    home = placed_on(body)
    cluster_name = home or spec.cluster
    status: Mapping[str, Any] = body.get("status") or {}

    async def refuse(problem: Problem, *, waits_for_people: bool = False) -> NoReturn:
        await _write(rt, spec, topic_status(spec, status, now=rt.now(), problem=problem))
        # A missing Cluster or a name conflict lasts until someone acts: look again less often.
        settings = rt.settings
        delay = max(settings.retry_delay, settings.drift_interval) if waits_for_people else None
        raise kopf.TemporaryError(problem.message, delay=delay or settings.retry_delay)

    # All of it under the Cluster's lock, from what is read there: since the event that called
    # this was read, a rebalance may have switched partitions (placement and epoch, which a
    # status written from the event would set back) and the Cluster may have changed.
    async with rt.lock(namespace, cluster_name):
        topics = await rt.kube.list_objects(API_VERSION, TOPICS, namespace)
        status = next(
            (t.get("status") or {} for t in topics if t["metadata"].get("uid") == spec.meta.uid),
            status,
        )
        try:
            internal_topic.check_reserved_name(spec)
        except SpecError as exc:
            # Said in status too, not only in the event the handler's permanent failure posts.
            await _write(rt, spec, internal_topic.refused_status(spec, status, exc, now=rt.now()))
            raise
        cluster = await rt.kube.get_object(API_VERSION, CLUSTERS, namespace, cluster_name)
        if cluster is None or cluster["metadata"].get("deletionTimestamp"):
            problem = Problem("ClusterNotFound", f"no Cluster {cluster_name!r} in {namespace}")
            await refuse(problem, waits_for_people=True)
        cluster_spec = parse_cluster(cluster)
        taken = plan.topic_taken(body, topics)
        if taken is not None:
            await refuse(taken, waits_for_people=True)
        token = await rt.admin_token(namespace, cluster_name)
        if token is None:
            await refuse(
                Problem("AdminTokenMissing", f"Cluster {cluster_name!r} has no admin token yet")
            )
        replicas, _ = cluster_plan.statefulset_replicas(
            cluster_spec.brokers, plan.placements_on(cluster_name, topics)
        )
        try:
            urls = rt.settings.urls(cluster_name, namespace, replicas)
        except ValueError as exc:
            await refuse(Problem("BrokersUnknown", str(exc)))
        async with Brokers(urls, token, timeout_s=rt.settings.broker_timeout) as brokers:
            views, failures = await brokers.views()
            not_ready = cluster_plan.brokers_not_ready(views, brokers.urls, failures)
            if not_ready is not None:
                await refuse(not_ready)
            name = str(status.get("topicName") or spec.topic_name)
            existing = plan.existing_topic(name, views.values())
            if existing is None and not status.get("placement"):
                existing = plan.standalone_topic(name, await brokers.describe_topic(name))
            try:
                decided = plan.plan_topic(
                    spec,
                    status,
                    placed_on=home,
                    brokers=range(cluster_spec.brokers),
                    existing=existing,
                )
            except ValueError as exc:
                raise kopf.PermanentError(f"status.placement: {exc}") from None
            if decided.target is not None:
                if home is None:
                    await rt.kube.annotate(
                        TOPICS, namespace, spec.meta.name, {PLACED_ON_ANNOTATION: cluster_name}
                    )
                failed = await brokers.push_topic(decided.target)
                if failed:
                    why = "; ".join(f"broker {b}: {m}" for b, m in sorted(failed.items()))
                    await refuse(Problem("BrokersUnavailable", why))
        if decided.adopted:
            logger.info("adopted topic %r as the brokers held it", name)
        target = decided.target
        await _write(
            rt,
            spec,
            topic_status(
                spec,
                status,
                now=rt.now(),
                placement=None if target is None else target.placement,
                topic_id=None if target is None else target.topic_id,
                unsupported=decided.unsupported,
                epoch=None if target is None else target.epoch,
            ),
        )


async def delete_topic(rt: Runtime, body: Mapping[str, Any], logger: kopf.Logger) -> None:
    """Follow the deletion policy; return (releasing the finalizer) once done or moot."""
    try:
        spec = parse_topic(body)
    except SpecError as exc:
        logger.warning("deleted without touching the brokers: %s", exc)
        return
    status = body.get("status") or {}
    home = placed_on(body)
    if home is None:
        return  # never placed: nothing on the brokers is this Topic's
    name = str(status.get("topicName") or spec.topic_name)
    if not internal_topic.deletes_from_brokers(spec):
        why = "the internal Topic" if spec.internal else "deletionPolicy Retain"
        logger.info("topic %r stays on the brokers (%s)", name, why)
        return
    namespace = spec.meta.namespace
    async with rt.lock(namespace, home):
        cluster = await rt.kube.get_object(API_VERSION, CLUSTERS, namespace, home)
        if cluster is None or cluster["metadata"].get("deletionTimestamp"):
            logger.info("Cluster %r is gone: nothing to delete topic %r from", home, name)
            return
        cluster_spec = parse_cluster(cluster)
        topics = await rt.kube.list_objects(API_VERSION, TOPICS, namespace)
        if plan.topic_taken(body, topics) is not None:
            return  # another Topic manages that topic: it is not this one's to delete
        token = await rt.admin_token(namespace, home)
        if token is None:
            raise kopf.TemporaryError(
                "no admin token to delete with", delay=rt.settings.retry_delay
            )
        others = [t for t in topics if t["metadata"].get("uid") != spec.meta.uid]
        replicas, _ = cluster_plan.statefulset_replicas(
            cluster_spec.brokers, plan.placements_on(home, [*others, body])
        )
        urls = rt.settings.urls(home, namespace, replicas)
        async with Brokers(urls, token, timeout_s=rt.settings.broker_timeout) as brokers:
            failed = await brokers.delete_topic(name)
    if failed:
        why = "; ".join(f"broker {b}: {m}" for b, m in sorted(failed.items()))
        raise kopf.TemporaryError(
            f"topic {name!r} not deleted yet: {why}", delay=rt.settings.retry_delay
        )
    logger.info("topic %r deleted from the brokers, with its data", name)


async def _write(rt: Runtime, spec: TopicSpec, status: Mapping[str, Any]) -> None:
    await rt.kube.patch_status(TOPICS, spec.meta.namespace, spec.meta.name, status)
