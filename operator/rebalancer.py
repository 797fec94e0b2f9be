"""Driving a Cluster's rebalance: one pass of the moves docs/cluster.md describes ("Driving a
rebalance"), run by the Cluster's drift check (:func:`.clusters.check_cluster`) under the
Cluster's lock. Each pass reads, acts a step, and records; nothing waits, so an operator that
restarts carries on from the status.

A pass: plan the moves if a rebalance is wanted and none is under way (:mod:`.rebalance`);
read each unfinished move from its receiver; start the moves not running there (again, for a
failed one: a retry) with the Cluster's throttle; for the partitions in sync, write the Topic's
status (placement on the receiver, topic epoch + 1) and then push the topic with that epoch to
every broker; cancel what the cancel annotation asks; check that leaving brokers are drained,
then push the cluster without them, shrink the StatefulSet and delete their claims when
``pvcPolicy`` is Delete; and write ``status.rebalance``.

The Topic's status is written before the push: if the operator stops in between, the drift
check pushes the status (with its epoch), which is the switch itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import kopf

from millstream import errors
from millstream.operator import cluster_plan, plan, rebalance
from millstream.operator.brokers import Brokers
from millstream.operator.kube import CLUSTERS, TOPICS, KubeError, object_path
from millstream.operator.plan import PLACED_ON_ANNOTATION, TopicTarget
from millstream.operator.rebalance import MoveProgress, PlannedMove, Progress
from millstream.operator.resources import cluster_resources, names
from millstream.operator.runtime import Runtime
from millstream.operator.specs import ClusterSpec, SpecError, parse_topic
from millstream.operator.status import Problem, topic_status


@dataclass
class _Topic:
    body: Mapping[str, Any]
    target: TopicTarget


def _placed_topics(cluster: str, topics: Sequence[Mapping[str, Any]]) -> dict[str, _Topic]:
    """The Topics placed on ``cluster`` whose status describes their spec, by topic name."""
    found = {}
    by_uid = {t["metadata"].get("uid"): t for t in topics}
    for target in plan.drift_targets(cluster, topics):
        for body in by_uid.values():
            status = body.get("status") or {}
            annotations = body["metadata"].get("annotations") or {}
            name = status.get("topicName")
            if annotations.get(PLACED_ON_ANNOTATION) == cluster and name == target.name:
                found[target.name] = _Topic(body, target)
    return found


def running_brokers(statefulset: Mapping[str, Any] | None, spec: ClusterSpec) -> int:
    """The brokers the StatefulSet asks for now (``spec.brokers`` before it exists)."""
    replicas = ((statefulset or {}).get("spec") or {}).get("replicas")
    return int(replicas) if isinstance(replicas, int) else spec.brokers


def replicas(
    spec: ClusterSpec,
    topics: Sequence[Mapping[str, Any]],
    status: Mapping[str, Any] | None,
    *,
    running: int,
) -> tuple[int, Problem | None]:
    """How many brokers the StatefulSet keeps (:func:`.rebalance.replicas_during`), and the
    problem that says why when more than ``spec.brokers``."""
    placements = plan.placements_on(spec.meta.name, topics)
    previous = (status or {}).get("rebalance") or {}
    progress = [
        rebalance.move_progress(m, None, row) for m, row in rebalance.rows_by_move(previous).items()
    ]
    drained = [int(b) for b in previous.get("drained") or () if isinstance(b, int)]
    keep = rebalance.replicas_during(
        spec.brokers, placements, progress, running=running, drained=drained
    )
    if keep <= spec.brokers:
        return keep, None
    return keep, Problem(
        "Draining",
        f"spec.brokers is {spec.brokers}: broker(s) {list(range(spec.brokers, keep))} keep "
        "running until their partitions have moved away",
    )


async def drive(
    rt: Runtime,
    spec: ClusterSpec,
    body: Mapping[str, Any],
    token: str,
    topics: Sequence[Mapping[str, Any]],
    logger: kopf.Logger,
) -> Progress | None:
    """One pass of the Cluster's rebalance (see the module); the progress it wrote. ``body``
    is the Cluster as read under its lock, after the last pass wrote its status."""
    namespace, name = spec.meta.namespace, spec.meta.name
    status = body.get("status") or {}
    previous = status.get("rebalance") or {}
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    placed = _placed_topics(name, topics)
    placements = {t: dict(p.target.placement) for t, p in placed.items()}
    statefulset = await rt.kube.get_object(
        "apps/v1", "statefulsets", namespace, names(name).statefulset
    )
    running = running_brokers(statefulset, spec)

    rows = rebalance.rows_by_move(previous)
    planned = list(rows)
    requested = annotations.get(rebalance.REBALANCE_ANNOTATION)
    handled = previous.get("request")
    balanced_for = previous.get("brokers")
    if not isinstance(balanced_for, int):
        balanced_for = None
    under_way = [
        m for m in planned if rebalance.move_progress(m, None, rows[m]).state != "completed"
    ]
    request = rebalance.Request(
        spec.brokers, balanced_for, str(requested) if requested else None, handled
    )
    if not under_way and rebalance.wanted(request, placements.values()):
        planned = rebalance.plan_moves(placements, spec.brokers)
        rows = {}
        handled = request.requested
        balanced_for = spec.brokers
        if planned:
            logger.info("rebalance planned over %d brokers: %d moves", spec.brokers, len(planned))
    elif balanced_for is None:
        balanced_for = spec.brokers
        handled = request.requested

    keep, _ = replicas(spec, topics, status, running=running)
    reach = max(keep, running, spec.brokers, *(max(m.source, m.target) + 1 for m in planned))
    try:
        urls = rt.settings.urls(name, namespace, reach)
    except ValueError as exc:
        logger.error("cannot reach the brokers: %s", exc)
        return None

    cancel = annotations.get(rebalance.CANCEL_ANNOTATION)
    cancelling = bool(cancel) and cancel != previous.get("cancelled")
    message = ""
    async with Brokers(urls, token, timeout_s=rt.settings.broker_timeout) as brokers:
        progress = [await _follow(brokers, m, rows.get(m), placements) for m in planned]
        if cancelling:
            progress, message = await _cancel(brokers, progress, logger)
        else:
            shares = rebalance.throttle_shares(progress, spec.throttle_bytes_per_s)
            progress = [
                await _start(brokers, p, placements, shares.get(p.move), logger) for p in progress
            ]
            await _switch(rt, brokers, progress, placed, placements, logger)
        drained = await _drained(brokers, spec.brokers, running)
        keep = rebalance.replicas_during(
            spec.brokers, placements.values(), progress, running=running, drained=drained
        )
        if keep < running:
            await _scale_in(rt, spec, brokers, keep, running, placed, logger)
            running = keep
    phase = rebalance.phase(
        progress,
        brokers=spec.brokers,
        running=running,
        drained=set(drained) >= set(range(spec.brokers, running)),
    )
    failed = [p for p in progress if p.state == "failed"]
    if failed and not message:
        message = "; ".join(f"{p.move.topic}/{p.move.partition}: {p.error}" for p in failed)
    result = Progress(phase, tuple(progress), balanced_for, handled, message)
    written = result.to_status()
    written["drained"] = sorted(drained)
    if cancel or previous.get("cancelled"):
        written["cancelled"] = str(cancel) if cancel else previous["cancelled"]
    if written != previous:
        # A merge patch: keys of the previous status that are gone now are sent as null.
        patch: dict[str, Any] = dict.fromkeys(previous)
        patch.update(written)
        await rt.kube.patch_status(CLUSTERS, namespace, name, {"rebalance": patch})
    return result


async def _follow(
    brokers: Brokers,
    move: PlannedMove,
    row: Mapping[str, Any] | None,
    placements: Mapping[str, Mapping[int, int]],
) -> MoveProgress:
    """The move as its receiver reports it now."""
    if row is not None and row.get("state") == "completed":
        return rebalance.move_progress(move, None, row)
    admin = brokers.admin(move.target)
    try:
        report = await admin.move(move.topic, move.partition)
    except errors.MillstreamError as exc:
        progress = rebalance.move_progress(move, None, row)
        return _unanswered(progress, f"{exc.code}: {exc.message}", progress.retries)
    progress = rebalance.move_progress(move, report, row)
    if report is None and placements.get(move.topic, {}).get(move.partition) == move.target:
        # Placed on the receiver, which has no move (forgotten once completed): done.
        return MoveProgress(move, "completed", progress.bytes_copied, retries=progress.retries)
    return progress


def _unanswered(progress: MoveProgress, error: str, retries: int) -> MoveProgress:
    """The move as it was, with why the receiver did not take the call."""
    return MoveProgress(progress.move, progress.state, progress.bytes_copied, None, error, retries)


async def _start(
    brokers: Brokers,
    progress: MoveProgress,
    placements: Mapping[str, Mapping[int, int]],
    throttle: int | None,
    logger: kopf.Logger,
) -> MoveProgress:
    """Start a move its receiver does not run, or again after it failed (a retry), or set
    the pace of one copying at another (the throttle changed, or its share of it did)."""
    move = progress.move
    if progress.state == "copying" and progress.throttle != throttle:
        return await _rethrottle(brokers, progress, throttle, logger)
    if progress.state not in ("pending", "failed"):
        return progress
    if placements.get(move.topic, {}).get(move.partition) != move.source:
        return progress  # the Topic's placement changed meanwhile: leave it
    retries = progress.retries + (progress.state == "failed")
    admin = brokers.admin(move.target)
    try:
        report = await admin.start_move(
            move.topic, move.partition, source=move.source, throttle_bytes_per_s=throttle
        )
    except errors.MoveConflict as exc:
        # A retired copy left by an earlier move away from this broker: release it, retry.
        if await _release(brokers, move.target, move.topic, move.partition):
            logger.info(
                "released broker %d's old copy of %s/%d", move.target, move.topic, move.partition
            )
        return _unanswered(progress, str(exc.message), retries)
    except errors.MillstreamError as exc:
        return _unanswered(progress, f"{exc.code}: {exc.message}", retries)
    logger.info(
        "moving %s/%d from broker %d to broker %d%s",
        move.topic,
        move.partition,
        move.source,
        move.target,
        " (retry)" if progress.state == "failed" else "",
    )
    started = rebalance.move_progress(move, report, progress.to_status())
    return MoveProgress(
        move, started.state, started.bytes_copied, started.lag, started.error, retries
    )


async def _rethrottle(
    brokers: Brokers, progress: MoveProgress, throttle: int | None, logger: kopf.Logger
) -> MoveProgress:
    move = progress.move
    try:
        # Starting a running move again only sets its throttle (docs/cluster.md).
        report = await brokers.admin(move.target).start_move(
            move.topic, move.partition, source=move.source, throttle_bytes_per_s=throttle
        )
    except errors.MillstreamError as exc:
        logger.warning("could not re-throttle %s/%d: %s", move.topic, move.partition, exc)
        return progress
    logger.info("move of %s/%d now copies at %s bytes/s", move.topic, move.partition, throttle)
    return rebalance.move_progress(move, report, progress.to_status())


async def _release(brokers: Brokers, broker: int, topic: str, partition: int) -> bool:
    try:
        return await brokers.admin(broker).release_partition(topic, partition)
    except errors.MillstreamError:
        return False


async def _switch(
    rt: Runtime,
    brokers: Brokers,
    progress: list[MoveProgress],
    placed: dict[str, _Topic],
    placements: dict[str, dict[int, int]],
    logger: kopf.Logger,
) -> None:
    """Switch the in-sync partitions: the Topic's status first, then the push to every
    broker (the receiver fences the source whichever order they get it in). ``placed`` and
    ``placements`` follow, so the rest of the pass pushes nothing older."""
    epochs = {t: p.target.epoch for t, p in placed.items()}
    for switch in rebalance.switches(progress, placements, epochs):
        topic = placed[switch.topic]
        body = topic.body
        try:
            spec = parse_topic(body)
        except SpecError:
            continue
        status = topic_status(
            spec,
            body.get("status"),
            now=rt.now(),
            placement=switch.placement,
            epoch=switch.epoch,
        )
        await rt.kube.patch_status(TOPICS, spec.meta.namespace, spec.meta.name, status)
        placements[switch.topic] = dict(switch.placement)
        target = TopicTarget(
            switch.topic,
            switch.placement,
            topic.target.config,
            topic.target.topic_id,
            switch.epoch,
        )
        placed[switch.topic] = _Topic({**body, "status": status}, target)
        failed = await brokers.push_topic(target)
        for index, p in enumerate(progress):
            if p.move in switch.moves:
                progress[index] = MoveProgress(
                    p.move, "switching", p.bytes_copied, p.lag, None, p.retries
                )
        logger.info(
            "switched %s partitions %s at epoch %d%s",
            switch.topic,
            [m.partition for m in switch.moves],
            switch.epoch,
            f" (not yet pushed to {sorted(failed)})" if failed else "",
        )


async def _cancel(
    brokers: Brokers, progress: list[MoveProgress], logger: kopf.Logger
) -> tuple[list[MoveProgress], str]:
    """Cancel every move not switched yet; the moves that stay (switched ones finish)."""
    kept, cancelled = [], []
    for p in progress:
        if p.state == "completed" or not rebalance.cancellable(p):
            kept.append(p)
            continue
        try:
            await brokers.admin(p.move.target).cancel_move(p.move.topic, p.move.partition)
        except errors.MillstreamError as exc:
            kept.append(MoveProgress(p.move, p.state, p.bytes_copied, p.lag, str(exc), p.retries))
            continue
        cancelled.append(f"{p.move.topic}/{p.move.partition}")
    if cancelled:
        logger.info("cancelled moves %s", cancelled)
    return kept, f"cancelled {len(cancelled)} move(s)" if cancelled else ""


async def _drained(brokers: Brokers, wanted: int, running: int) -> list[int]:
    """The leaving brokers (``wanted`` to ``running``-1) that serve and receive nothing."""
    drained = []
    for broker in range(wanted, running):
        if broker not in brokers.urls:
            continue
        try:
            answer = await brokers.admin(broker).partitions()
        except errors.MillstreamError:
            continue
        if rebalance.is_drained(answer):
            drained.append(broker)
    return drained


async def _scale_in(
    rt: Runtime,
    spec: ClusterSpec,
    brokers: Brokers,
    keep: int,
    running: int,
    placed: Mapping[str, _Topic],
    logger: kopf.Logger,
) -> None:
    """The leaving brokers are drained: push the cluster without them to those that stay,
    have them leave (they delete what was pushed to them, so a claim kept by ``pvcPolicy``
    Retain holds nothing stale should the StatefulSet grow onto it again), shrink the
    StatefulSet, and delete their claims if ``pvcPolicy`` is Delete."""
    namespace, name = spec.meta.namespace, spec.meta.name
    async with Brokers(
        [brokers.urls[b] for b in range(keep)], brokers.token, timeout_s=rt.settings.broker_timeout
    ) as staying:
        report = await staying.sync([t.target for t in placed.values()])
    if report.failures:
        raise kopf.TemporaryError(
            f"cluster metadata without brokers {list(range(keep, running))} not pushed yet: "
            + "; ".join(f"broker {b}: {m}" for b, m in sorted(report.failures.items())),
            delay=rt.settings.retry_delay,
        )
    for broker in range(keep, running):
        admin = brokers.admin(broker)
        try:
            # Every move from it completed (it would be kept otherwise): its retired copies
            # are needed no more.
            held = (await admin.partitions())["partitions"]
            for row in held:
                if row.get("role") == "retired":
                    await admin.release_partition(row["topic"], row["partition"])
            await admin.leave_cluster()
        except errors.MillstreamError as exc:
            raise kopf.TemporaryError(
                f"broker {broker} has not left the cluster yet: {exc}",
                delay=rt.settings.retry_delay,
            ) from None
    manifests = cluster_resources(
        spec,
        default_image=rt.settings.broker_image,
        admin_token=brokers.token,
        pdb_api_version=await rt.pdb_api_version(),
        replicas=keep,
    )
    existing = await rt.kube.get_object("apps/v1", "statefulsets", namespace, name)
    for manifest in manifests:
        if manifest["kind"] == "StatefulSet":
            manifest, _ = cluster_plan.keep_storage(manifest, existing)
            await rt.kube.apply(manifest)
    logger.info("brokers %s drained: StatefulSet scaled to %d", list(range(keep, running)), keep)
    if spec.pvc_policy != "Delete":
        return
    for broker in range(keep, running):
        claim = f"data-{names(name).statefulset}-{broker}"
        try:
            await rt.kube.request(
                "DELETE", object_path("v1", "persistentvolumeclaims", namespace, claim)
            )
        except KubeError as exc:
            if exc.status != 404:
                raise
        logger.info("deleted volume claim %s (pvcPolicy Delete)", claim)
