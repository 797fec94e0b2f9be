"""Scaling a Cluster with the real operator against the real API server, real broker processes
standing in for its pods: scale-out moves partitions onto the new broker under a running
producer, scale-in drains the leaving broker before the StatefulSet shrinks.

Three brokers run from the start (the operator reaches them through its URL override); the
Cluster asks for two, so the third is outside the cluster until the scale-out. The Cluster's
internal Topic (``__group_offsets``, the groups' committed offsets) moves with the others."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from millstream.client import SyncConsumer, SyncProducer
from millstream.internal_topics import GROUP_OFFSETS_PARTITIONS, GROUP_OFFSETS_TOPIC
from millstream.operator import rebalance
from millstream.operator.clusters import check_cluster, reconcile_cluster
from millstream.operator.kube import object_path
from tests.k8s.test_operator import (
    CLUSTER,
    INTERNAL,
    Stack,
    brokers_placement,
    mark_ready,
    placement,
    stack_of,
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
    spec = {"brokers": 2, "storage": {"size": "1Gi"}, "pvcPolicy": "Delete"}
    with stack_of(rest, chart_account, tmp_path, "rebalance", RUNNING, spec) as built:
        yield built


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
    return list(stack.brokers.get(broker, "/v1/admin/partitions", admin=True)["partitions"])


def test_scale_out_then_in_moves_partitions_and_loses_nothing(stack: Stack) -> None:
    stack.create_topic(TOPIC, partitions=6)
    before = placement(stack.ready_topic(TOPIC))
    assert set(before.values()) == {0, 1}
    internal_before = placement(stack.placed_internal_topic())
    assert set(internal_before.values()) == {0, 1}

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
    # 2 of the 6 partitions of orders, 5 of the 16 of the internal topic: a balanced share.
    moved_topics = [m["topic"] for m in status["moves"]]
    assert sorted(moved_topics) == [GROUP_OFFSETS_TOPIC] * 5 + [TOPIC] * 2, status["moves"]
    assert status["movesTotal"] == 7 and status["bytesCopied"] > 0
    internal_after = placement(stack.status("topics", INTERNAL))
    assert sorted(list(internal_after.values()).count(b) for b in range(3)) == [5, 5, 6]
    assert all(
        internal_after[p] == internal_before[p] for p in internal_after if internal_after[p] != 2
    )
    assert len(internal_after) == GROUP_OFFSETS_PARTITIONS
    for broker in range(3):
        assert brokers_placement(stack, broker, GROUP_OFFSETS_TOPIC) == internal_after
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
        roles = [p["role"] for p in admin_partitions(stack, 2)]
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
    internal_final = placement(stack.status("topics", INTERNAL))
    assert sorted(internal_final.values()).count(0) == GROUP_OFFSETS_PARTITIONS // 2
    assert brokers_placement(stack, 0, GROUP_OFFSETS_TOPIC) == internal_final
    read = read_all(stack, 6, producing.acked)
    assert all(read.get(key) == value for key, value in producing.acked.items())
    cluster = stack.brokers.cluster(0)
    assert [b["id"] for b in cluster["brokers"]] == [0, 1]
    # Broker 2 left before it was removed: whatever volume it had holds nothing stale.
    assert stack.brokers.cluster(2)["mode"] == "standalone"
    assert not list((stack.brokers.root / "broker-2" / "topics").iterdir())
    # pvcPolicy Delete: the claim of the removed broker goes (the StatefulSet controller made it).
    claim = object_path("v1", "persistentvolumeclaims", stack.namespace, f"data-{CLUSTER}-2")

    def claim_deleted() -> bool:
        found = stack.rest.get(claim)
        return found is None or bool(found["metadata"].get("deletionTimestamp"))

    eventually(claim_deleted, "broker 2's volume claim to be deleted")
    kept = object_path("v1", "persistentvolumeclaims", stack.namespace, f"data-{CLUSTER}-1")
    assert stack.rest.get(kept) is not None

    # A handler given the Cluster as it was before the scale-in's last status (a StatefulSet
    # event read it, then waited for the lock) must not count broker 2 back in.
    stale = stack.body("clusters", CLUSTER)
    for row in stale["status"]["rebalance"]["moves"]:
        row["state"] = "copying"
    with stack.operator.paused():
        for handler in (check_cluster, reconcile_cluster):
            stack.operator.run_handler(handler, stale)
            assert [b["id"] for b in stack.brokers.cluster(0)["brokers"]] == [0, 1], handler
            assert stack.brokers.cluster(2)["mode"] == "standalone", handler
            assert statefulset_replicas(stack) == 2, handler


def admin_moves(stack: Stack, broker: int) -> list[dict[str, Any]]:
    return list(stack.brokers.get(broker, "/v1/admin/moves", admin=True)["moves"])


def copying_onto(stack: Stack, broker: int) -> list[dict[str, Any]]:
    moves = admin_moves(stack, broker)
    return [m for m in moves if m["topic"] == TOPIC and m["state"] == "copying"]


def annotate(stack: Stack, name: str, value: str) -> None:
    stack.rest.merge(stack.path("clusters", CLUSTER), {"metadata": {"annotations": {name: value}}})


def test_a_rebalance_is_throttled_per_broker_cancelled_and_requested_again(stack: Stack) -> None:
    stack.create_topic(TOPIC, partitions=4)
    before = placement(stack.ready_topic(TOPIC))
    stack.placed_internal_topic()
    values: dict[tuple[int, int], bytes] = {}
    # One record a batch: a throttled copy paces itself between batches.
    with SyncProducer(stack.brokers.urls[0], linger_ms=0) as producer:
        for n in range(600):
            value = b"%06d" % n + b"x" * 2042
            metadata = producer.send(TOPIC, value).get()
            values[metadata.partition, metadata.offset] = value

    # Scale out so slowly that the copies of orders are still running when we look.
    stack.patch_spec(
        "clusters", CLUSTER, {"brokers": 3, "rebalance": {"throttleBytesPerSecond": 4000}}
    )
    mark_ready(stack, 2)
    running = eventually(lambda: copying_onto(stack, 2) or None, "copies onto broker 2")
    # The throttle is broker 2's in all, shared by the copies onto it.
    assert sum(m["throttle_bytes_per_s"] for m in running) <= 4000, running

    # A new throttle reaches the copies already running.
    stack.patch_spec("clusters", CLUSTER, {"rebalance": {"throttleBytesPerSecond": 8000}})

    def rethrottled() -> list[dict[str, Any]] | None:
        moves = copying_onto(stack, 2)
        total = sum(m["throttle_bytes_per_s"] for m in moves)
        return moves if moves and 4000 < total <= 8000 else None

    try:
        eventually(rethrottled, "the running copies to take the new throttle", timeout=60)
    except AssertionError as exc:
        detail = f"{admin_moves(stack, 2)}\n{rebalance_status(stack)}\n{stack.operator.tail()}"
        raise AssertionError(f"{exc}\n{detail}") from None

    # Cancelled: the copies go, the partitions stay where they were and keep serving.
    annotate(stack, rebalance.CANCEL_ANNOTATION, "first")

    def cancelled() -> dict[str, Any] | None:
        status = rebalance_status(stack)
        moves = [m for m in status.get("moves") or () if m["topic"] == TOPIC]
        stopped = all(m["state"] == "completed" for m in moves)  # the cancelled ones went
        return status if status.get("cancelled") == "first" and stopped else None

    eventually(cancelled, "the rebalance to be cancelled", timeout=60)
    assert not copying_onto(stack, 2)
    assert placement(stack.status("topics", TOPIC)) == before
    assert read_all(stack, 4, values) == values

    # Asked for again, at full speed, it completes.
    stack.patch_spec("clusters", CLUSTER, {"rebalance": None})
    annotate(stack, rebalance.REBALANCE_ANNOTATION, "again")

    def balanced() -> dict[str, Any] | None:
        status = rebalance_status(stack)
        done = status.get("phase") == "Idle" and status.get("request") == "again"
        return status if done and status.get("movesCompleted") == status.get("movesTotal") else None

    eventually(balanced, "the requested rebalance to complete", timeout=90)
    assert 2 in placement(stack.status("topics", TOPIC)).values()
    assert read_all(stack, 4, values) == values
