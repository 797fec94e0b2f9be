"""Scaling a Cluster with the real operator against the real API server, real broker processes
standing in for its pods: scale-out moves partitions onto the new broker under a running
producer, scale-in drains the leaving broker before the StatefulSet shrinks.

Three brokers run from the start (the operator reaches them through its URL override); the
Cluster asks for two, so the third is outside the cluster until the scale-out."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from millstream.client import SyncConsumer, SyncProducer
from millstream.operator.kube import object_path
from tests.k8s.test_operator import (
    CLUSTER,
    Stack,
    mark_ready,
    placement,
    start_stack,
    stop_stack,
)
from tests.support.operator import KubeRest, eventually

pytestmark = pytest.mark.k8s

RUNNING = 3  # broker processes
TOPIC = "orders"


@pytest.fixture
def stack(
    millstream_crds: list[dict[str, Any]],
    rest: KubeRest,
    chart_account: Path,
    tmp_path: Path,
) -> Iterator[Stack]:
    namespace = f"rebalance-{uuid.uuid4().hex[:8]}"
    spec = {"brokers": 2, "storage": {"size": "1Gi"}, "pvcPolicy": "Delete"}
    built = start_stack(rest, chart_account, tmp_path, namespace, running=RUNNING, spec=spec)
    try:
        yield built
    finally:
        stop_stack(built)


class Producing:
    """A producer sending keyless records in a thread; ``acked`` is every acknowledged one."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.acked: dict[tuple[int, int], bytes] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Producing:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        n = 0
        with SyncProducer(self.url, linger_ms=2) as producer:
            while not self._stop.is_set():
                values = [b"v%d" % (n + i) for i in range(20)]
                futures = [producer.send(TOPIC, v) for v in values]
                for value, future in zip(values, futures, strict=True):
                    try:
                        metadata = future.get()
                    except Exception as exc:  # not acknowledged: not counted
                        self.errors.append(repr(exc))
                        continue
                    self.acked[metadata.partition, metadata.offset] = value
                n += 20
                time.sleep(0.02)


def read_all(stack: Stack, partitions: int, wanted: dict[tuple[int, int], bytes]) -> dict[Any, Any]:
    read: dict[tuple[int, int], bytes] = {}
    with SyncConsumer(stack.brokers.urls[0], auto_offset_reset="earliest") as consumer:
        consumer.assign([(TOPIC, p) for p in range(partitions)])
        deadline = time.monotonic() + 60
        while not wanted.keys() <= read.keys() and time.monotonic() < deadline:
            for record in consumer.poll(timeout_ms=500):
                read[(record.partition, record.offset)] = record.value or b""
    return read


def rebalance_status(stack: Stack) -> dict[str, Any]:
    return stack.status("clusters", CLUSTER).get("rebalance") or {}


def statefulset_replicas(stack: Stack) -> int:
    found = stack.rest.get(object_path("apps/v1", "statefulsets", stack.namespace, CLUSTER))
    return int(found["spec"]["replicas"])


def admin_partitions(stack: Stack, broker: int) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        stack.brokers.urls[broker] + "/v1/admin/partitions",
        headers={"Authorization": f"Bearer {stack.brokers.token}"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return list(json.loads(response.read())["partitions"])


def test_scale_out_then_in_moves_partitions_and_loses_nothing(stack: Stack) -> None:
    stack.create_topic(TOPIC, partitions=6)
    before = placement(stack.ready_topic(TOPIC))
    assert set(before.values()) == {0, 1}

    phases: list[str] = []
    with Producing(stack.brokers.urls[0]) as producing:
        eventually(lambda: len(producing.acked) >= 300, "records to be acknowledged")
        # Scale out: 2 -> 3.
        stack.patch_spec(
            "clusters", CLUSTER, {"brokers": 3, "rebalance": {"throttleBytesPerSecond": 1_000_000}}
        )
        mark_ready(stack, 2)

        def balanced() -> dict[str, Any] | None:
            status = rebalance_status(stack)
            phases.append(str(status.get("phase")))
            done = status.get("movesTotal") and status.get("movesCompleted") == status.get(
                "movesTotal"
            )
            return status if done and status.get("phase") == "Idle" else None

        try:
            status = eventually(balanced, "the scale-out's moves to complete", timeout=90)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{stack.operator.tail()}") from None
        time.sleep(1.0)  # keep producing onto the new placement a while
    # The phases are sampled, so a short one may slip between two looks: only a failure
    # must never show.
    assert "Failed" not in phases, phases
    assert status["movesTotal"] == 2 and status["bytesCopied"] > 0
    after = placement(stack.status("topics", TOPIC))
    assert sorted(after.values()).count(2) == 2
    assert all(after[p] == before[p] for p in after if after[p] != 2)
    assert stack.status("topics", TOPIC)["epoch"] >= 1
    moved = [p for p in after if after[p] == 2]
    assert {p for p, _ in producing.acked} >= set(range(6))
    assert any(p in moved for p, _ in producing.acked)
    # Every acknowledged record is readable, at the offset it was acknowledged with.
    read = read_all(stack, 6, producing.acked)
    missing = sorted(producing.acked.keys() - read.keys())
    assert not missing, missing[:10]
    assert all(read[key] == value for key, value in producing.acked.items())

    # Scale in: 3 -> 2. Broker 2 is drained before the StatefulSet shrinks.
    stack.patch_spec("clusters", CLUSTER, {"brokers": 2})
    seen: list[tuple[int, list[str]]] = []
    phases.clear()

    def shrunk() -> bool:
        replicas = statefulset_replicas(stack)
        roles = [p["role"] for p in admin_partitions(stack, 2) if p["topic"] == TOPIC]
        seen.append((replicas, roles))
        status = rebalance_status(stack)
        phases.append(str(status.get("phase")))
        return replicas == 2 and status.get("phase") == "Idle"

    try:
        eventually(shrunk, "the StatefulSet to shrink once broker 2 is drained", timeout=90)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{seen[-5:]}\n{stack.operator.tail()}") from None
    # While broker 2 served or received a partition, the StatefulSet kept it.
    for replicas, roles in seen:
        if any(r in ("serving", "receiving") for r in roles):
            assert replicas == 3, seen
    assert any(replicas == 3 for replicas, _ in seen)
    assert "Failed" not in phases, phases
    final = placement(stack.status("topics", TOPIC))
    assert set(final.values()) == {0, 1}
    read = read_all(stack, 6, producing.acked)
    assert all(read.get(key) == value for key, value in producing.acked.items())
    cluster = stack.brokers.cluster(0)
    assert [b["id"] for b in cluster["brokers"]] == [0, 1]
    # pvcPolicy Delete: the claim of the removed broker goes (the StatefulSet controller made it).
    claim = object_path("v1", "persistentvolumeclaims", stack.namespace, f"data-{CLUSTER}-2")

    def claim_deleted() -> bool:
        found = stack.rest.get(claim)
        return found is None or bool(found["metadata"].get("deletionTimestamp"))

    eventually(claim_deleted, "broker 2's volume claim to be deleted")
    kept = object_path("v1", "persistentvolumeclaims", stack.namespace, f"data-{CLUSTER}-1")
    assert stack.rest.get(kept) is not None
