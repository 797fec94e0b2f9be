"""What a Cluster's reconcile does, decided from what it read: how many brokers to run, the
storage it keeps, its status, and which brokers need the cluster's metadata.

The pure half of :mod:`.clusters` (and of the drift check in :mod:`.brokers`). No I/O, no
clock. The rules:

- **No scale-in without a drain.** Brokers that still serve partitions keep running
  (:func:`statefulset_replicas`, and :func:`.rebalance.replicas_during` while a rebalance
  moves partitions off them): removing them would lose their partitions.
- **Storage is fixed at creation**, as a StatefulSet's volume claims are: a change is kept
  back and reported (:func:`keep_storage`).
- **Epochs only grow.** A cluster push carries an epoch above every epoch a broker reported,
  so that no broker refuses it as stale (:func:`cluster_push`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from millstream.client.broker_metadata import BrokerMetadata
from millstream.operator.resources import Manifest
from millstream.operator.specs import ClusterSpec
from millstream.operator.status import (
    NOT_SUPPORTED,
    ClusterObservation,
    Condition,
    Problem,
    Status,
    cluster_status,
    merge_conditions,
)


def statefulset_replicas(
    brokers: int, placements: Iterable[Mapping[int, int]]
) -> tuple[int, Problem | None]:
    """How many brokers to run: ``spec.brokers``, or more while brokers past it still serve
    partitions, with the problem that says so."""
    serving = sorted({b for placement in placements for b in placement.values() if b >= brokers})
    if not serving:
        return brokers, None
    return serving[-1] + 1, Problem(
        "ScaleInBlocked",
        f"spec.brokers is {brokers}, but broker(s) {serving} still serve partitions and keep "
        "running until a rebalance has moved them off",
    )


def keep_storage(
    desired: Manifest, existing: Mapping[str, Any] | None
) -> tuple[Manifest, Problem | None]:
    """The StatefulSet to apply, with the volume claim template of the ``existing`` one: a
    StatefulSet's claims cannot change once created, so a change is reported, not applied."""
    if existing is None:
        return desired, None
    try:
        old = existing["spec"]["volumeClaimTemplates"][0]["spec"]
    except (KeyError, IndexError, TypeError):
        return desired, None
    manifest = copy.deepcopy(desired)
    new = manifest["spec"]["volumeClaimTemplates"][0]["spec"]
    before = (
        old.get("resources", {}).get("requests", {}).get("storage"),
        old.get("storageClassName"),
    )
    after = (new["resources"]["requests"]["storage"], new.get("storageClassName"))
    if before == after:
        return desired, None
    new["resources"]["requests"]["storage"] = before[0]
    new.pop("storageClassName", None)
    if before[1] is not None:
        new["storageClassName"] = before[1]
    return manifest, Problem(
        "StorageChangeNotApplied",
        f"broker volumes stay {before[0]} (class {before[1] or 'default'}): a StatefulSet's "
        f"volume claims cannot change, so {after[0]} (class {after[1] or 'default'}) is not "
        "applied",
    )


def observe_statefulset(statefulset: Mapping[str, Any] | None) -> ClusterObservation:
    """Brokers that exist and are ready, as the StatefulSet controller counts them."""
    status = (statefulset or {}).get("status") or {}
    return ClusterObservation(
        brokers=int(status.get("replicas") or 0),
        ready_brokers=int(status.get("readyReplicas") or 0),
    )


def cluster_status_with(
    spec: ClusterSpec,
    observed: ClusterObservation,
    previous: Mapping[str, Any] | None,
    *,
    now: datetime,
    problem: Problem | None = None,
    unsupported: Sequence[Problem] = (),
) -> Status:
    """:func:`~.status.cluster_status`, plus a NotSupported condition for what the spec asks
    that is not applied (a storage change), dropped once nothing is."""
    status = cluster_status(spec, observed, previous, now=now, problem=problem)
    conditions = status["conditions"]
    if unsupported:
        message = "; ".join(p.message for p in unsupported)
        update = Condition(NOT_SUPPORTED, "True", unsupported[0].reason, message)
        conditions = merge_conditions(
            conditions, [update], generation=spec.meta.generation, now=now
        )
    else:
        conditions = [c for c in conditions if c.get("type") != NOT_SUPPORTED]
    status["conditions"] = conditions
    return status


@dataclass(frozen=True, slots=True)
class ClusterPush:
    epoch: int
    brokers: tuple[int, ...]  # the brokers to push to


def cluster_push(
    views: Mapping[int, BrokerMetadata | None], wanted: Mapping[int, str]
) -> ClusterPush | None:
    """Which reachable brokers (``views``: None for those that did not answer) do not hold
    ``wanted`` (id -> URL) as their cluster, and the epoch to push them: one above every epoch
    seen, so that no broker refuses it as stale. None: nothing to push."""
    stale = tuple(
        sorted(
            b
            for b, view in views.items()
            if view is not None and (not view.managed or dict(view.brokers) != dict(wanted))
        )
    )
    if not stale:
        return None
    epochs = [v.epoch for v in views.values() if v is not None and v.epoch is not None]
    return ClusterPush(max(epochs, default=0) + 1, stale)


def brokers_not_ready(
    views: Mapping[int, BrokerMetadata | None],
    wanted: Mapping[int, str],
    failures: Mapping[int, str] | None = None,
) -> Problem | None:
    """Why a topic cannot be pushed yet: brokers that did not answer, or that do not hold the
    cluster's metadata yet (the Cluster's handlers push it)."""
    failures = failures or {}
    down = sorted(b for b, v in views.items() if v is None)
    behind = sorted(
        b
        for b, v in views.items()
        if v is not None and (not v.managed or dict(v.brokers) != dict(wanted))
    )
    if not down and not behind:
        return None
    parts = [f"broker {b} did not answer: {failures.get(b, 'no answer')}" for b in down]
    if behind:
        parts.append(f"broker(s) {behind} do not have the cluster's metadata yet")
    return Problem("BrokersNotReady", "; ".join(parts))
