"""Refreshing a ConsumerGroup's status from its coordinator, and applying its offset reset.

Called by the ConsumerGroup's kopf timer (:mod:`.handlers`), which ticks every
``min_interval`` of the settings' :class:`~.status.RefreshSchedule`; the schedule decides
whether a tick asks the brokers (every ``interval``, sooner when something is pending), so
neither a busy group nor a burst of edits turns into a burst of broker calls and status writes.

A declared ``spec.offsetReset`` is applied once per generation of the spec and recorded in
status; the coordinator refuses it while the group has live members (``group_not_empty``),
which status reports, and it is tried again at the next regular refresh.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import kopf

from millstream import errors
from millstream.operator import brokers
from millstream.operator.kube import CLUSTERS, CONSUMER_GROUPS
from millstream.operator.runtime import Runtime
from millstream.operator.specs import API_VERSION, ConsumerGroupSpec, parse_group
from millstream.operator.status import (
    Problem,
    group_refresh_pending,
    group_status,
    group_status_unavailable,
    last_refresh,
    offset_reset_applied,
    offset_reset_due,
    offset_reset_refused,
)


def reason_of(error: errors.MillstreamError) -> str:
    """A condition reason from an error code: ``group_not_empty`` is ``GroupNotEmpty``."""
    return "".join(part.capitalize() for part in re.split(r"[^a-zA-Z0-9]+", error.code) if part)


async def refresh_group(rt: Runtime, body: Mapping[str, Any], logger: kopf.Logger) -> None:
    spec = parse_group(body)
    status: Mapping[str, Any] = body.get("status") or {}
    now = rt.now()
    pending = group_refresh_pending(spec, status)
    if not rt.settings.group_refresh.due(last_refresh(status), now, pending=pending):
        return
    namespace = spec.meta.namespace
    cluster = await rt.kube.get_object(API_VERSION, CLUSTERS, namespace, spec.cluster)
    if cluster is None:
        problem = Problem("ClusterNotFound", f"no Cluster {spec.cluster!r} in {namespace}")
        await _write(rt, spec, group_status_unavailable(spec, problem, status, now=now), status)
        return
    bootstrap = rt.settings.group_bootstrap(spec.cluster, namespace)
    timeout = rt.settings.broker_timeout
    try:
        described = await brokers.describe_group(bootstrap, spec.group_id, timeout_s=timeout)
        fresh = group_status(spec, described, status, now=now)
        if offset_reset_due(spec, fresh):
            fresh = await _reset(rt, spec, fresh, bootstrap, logger)
            if _applied_now(spec, fresh):
                described = await brokers.describe_group(
                    bootstrap, spec.group_id, timeout_s=timeout
                )
                fresh = group_status(spec, described, fresh, now=now)
    except errors.MillstreamError as exc:
        problem = Problem("BrokersUnavailable", f"{exc.code}: {exc.message}")
        await _write(rt, spec, group_status_unavailable(spec, problem, status, now=now), status)
        return
    await _write(rt, spec, fresh)


async def _reset(
    rt: Runtime,
    spec: ConsumerGroupSpec,
    status: Mapping[str, Any],
    bootstrap: str,
    logger: kopf.Logger,
) -> dict[str, Any]:
    assert spec.offset_reset is not None
    now = rt.now()
    try:
        offsets = await brokers.reset_offsets(
            bootstrap, spec.group_id, spec.offset_reset, timeout_s=rt.settings.broker_timeout
        )
    except (errors.GroupConflict, errors.InvalidRequest, errors.NotFound) as exc:
        logger.warning("offset reset of group %r refused: %s", spec.group_id, exc.message)
        return offset_reset_refused(spec, Problem(reason_of(exc), exc.message), status, now=now)
    logger.info("offsets of group %r reset to %s", spec.group_id, spec.offset_reset.to)
    return offset_reset_applied(spec, offsets, status, now=now)


def _applied_now(spec: ConsumerGroupSpec, status: Mapping[str, Any]) -> bool:
    return bool((status.get("offsetReset") or {}).get("generation") == spec.meta.generation)


async def _write(
    rt: Runtime,
    spec: ConsumerGroupSpec,
    status: Mapping[str, Any],
    previous: Mapping[str, Any] | None = None,
) -> None:
    if status != previous:
        await rt.kube.patch_status(CONSUMER_GROUPS, spec.meta.namespace, spec.meta.name, status)
