"""The operator, for real: ``millstream operator`` (kopf) against the test suite's kube-apiserver
and controller-manager, with real broker processes standing in for the pods.

The operator runs as the Helm chart's service account, bound to the chart's RBAC rules, so a
permission the chart forgot fails here. There is no kubelet: the tests play its part where the
operator depends on it (marking broker pods Ready, refreshing the mounted admin token), and
everything else is the real thing: CRD validation, status subresources, owner references and
garbage collection, the StatefulSet controller, finalizers, namespace deletion; the brokers'
admin API, their placement and routing, consumer groups.

Most tests share one namespace with one Cluster of two brokers (``stack``), each with topics of
its own; deleting a Cluster gets a namespace of its own.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from millstream.client import SyncConsumer, SyncProducer
from millstream.internal_topics import GROUP_OFFSETS_PARTITIONS, GROUP_OFFSETS_TOPIC
from millstream.operator.kube import object_path
from millstream.operator.plan import PLACED_ON_ANNOTATION
from millstream.operator.specs import SpecError
from millstream.operator.topics import reconcile_topic
from tests.k8s.tools import helm
from tests.support.operator import (
    KubeRest,
    OperatorProcess,
    StandInBrokers,
    condition,
    eventually,
)

pytestmark = pytest.mark.k8s

CLUSTER = "events"
BROKERS = 2
INTERNAL = f"{CLUSTER}-group-offsets"  # the Topic the operator keeps for the groups' offsets


# -- fixtures ------------------------------------------------------------------------------


@dataclass
class Stack:
    """A namespace, its Cluster of stand-in brokers, and the operator managing it."""

    rest: KubeRest
    namespace: str
    brokers: StandInBrokers
    operator: OperatorProcess

    def path(self, plural: str, name: str | None = None) -> str:
        return self.rest.custom(plural, self.namespace, name)

    def body(self, plural: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.rest.get(self.path(plural, name))
        return found

    def status(self, plural: str, name: str) -> dict[str, Any]:
        return self.rest.status(plural, self.namespace, name)

    def create_topic(self, name: str, **spec: Any) -> dict[str, Any]:
        return self.rest.apply_custom(
            "Topic", "topics", self.namespace, name, {"cluster": CLUSTER, **spec}
        )

    def patch_spec(self, plural: str, name: str, spec: dict[str, Any]) -> None:
        self.rest.merge(self.path(plural, name), {"spec": spec})

    def settled(self, plural: str, name: str, generation: int) -> dict[str, Any]:
        """The status once it describes ``generation`` of the spec."""

        def probe() -> dict[str, Any] | None:
            status = self.status(plural, name)
            return status if status.get("observedGeneration") == generation else None

        try:
            return eventually(probe, f"{plural}/{name} to reach generation {generation}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\noperator log:\n{self.operator.tail()}") from None

    def ready_topic(self, name: str, generation: int = 1) -> dict[str, Any]:
        status = self.settled("topics", name, generation)
        ready = condition(status, "Ready")
        assert ready is not None and ready["status"] == "True", status
        return status

    def placed_internal_topic(self, generation: int = 1) -> dict[str, Any]:
        """The internal Topic's status once Ready: created with the Cluster, it says its
        brokers are not ready (at generation 1 already) until they are."""

        def probe() -> dict[str, Any] | None:
            status = self.status("topics", INTERNAL)
            ready = condition(status, "Ready")
            settled = status.get("observedGeneration") == generation
            return status if settled and ready is not None and ready["status"] == "True" else None

        try:
            return eventually(probe, "the internal Topic to be placed")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\noperator log:\n{self.operator.tail()}") from None

    def gone(self, path: str, what: str, timeout: float = 30.0) -> None:
        eventually(lambda: self.rest.get(path) is None, what, timeout=timeout)


def start_stack(
    rest: KubeRest,
    kubeconfig: Path,
    root: Path,
    namespace: str,
    *,
    running: int = BROKERS,
    spec: dict[str, Any] | None = None,
) -> Stack:
    """A namespace, ``running`` broker processes, the operator, and a Cluster (``spec``,
    default: two brokers) whose brokers are Ready and hold the cluster's metadata."""
    spec = spec or {"brokers": BROKERS, "storage": {"size": "1Gi"}}
    rest.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
    brokers = StandInBrokers(root / "brokers", running).start()
    operator = OperatorProcess(kubeconfig, namespace, brokers.urls, root / "operator.log")
    stack = Stack(rest, namespace, brokers, operator)
    try:
        operator.start()
        rest.apply_custom("Cluster", "clusters", namespace, CLUSTER, spec)
        # The kubelet's parts: mount the Secret the operator made, mark the pods Ready.
        secret_path = object_path("v1", "secrets", namespace, f"{CLUSTER}-admin-token")
        secret = eventually(lambda: rest.get(secret_path), "the admin token Secret")
        brokers.set_token(base64.b64decode(secret["data"]["token"]).decode())
        for broker in range(spec["brokers"]):
            mark_ready(stack, broker)
        eventually(
            lambda: all(brokers.cluster(b)["mode"] == "cluster" for b in range(spec["brokers"])),
            "the brokers to hold the cluster's metadata",
        )
    except BaseException:
        stop_stack(stack, wait=False)
        raise
    return stack


@contextlib.contextmanager
def stack_of(
    rest: KubeRest, kubeconfig: Path, root: Path, prefix: str, running: int, spec: dict[str, Any]
) -> Iterator[Stack]:
    """:func:`start_stack` in a fresh namespace named from ``prefix``, stopped afterwards."""
    namespace = f"{prefix}-{uuid.uuid4().hex[:8]}"
    built = start_stack(rest, kubeconfig, root, namespace, running=running, spec=spec)
    try:
        yield built
    finally:
        stop_stack(built)


def mark_ready(stack: Stack, broker: int) -> None:
    """The kubelet's part: the pod exists (the StatefulSet controller made it) and is Ready."""
    pod = object_path("v1", "pods", stack.namespace, f"{CLUSTER}-{broker}")
    eventually(lambda: stack.rest.get(pod), f"pod {CLUSTER}-{broker}")
    ready = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    stack.rest.merge(pod + "/status", {"status": ready})


def stop_stack(stack: Stack, *, wait: bool = True) -> None:
    """Delete the namespace while the operator still runs, so that finalizers are released;
    with ``wait``, the namespace must be gone within a minute."""
    try:
        stack.rest.delete(f"/api/v1/namespaces/{stack.namespace}")
        if wait:
            stack.gone(
                f"/api/v1/namespaces/{stack.namespace}", "the namespace to be deleted", timeout=180
            )
    finally:
        stack.operator.stop()
        stack.brokers.stop()


@pytest.fixture(scope="module")
def stack(
    millstream_crds: list[dict[str, Any]],
    rest: KubeRest,
    chart_account: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    namespace = f"operator-{uuid.uuid4().hex[:8]}"
    built = start_stack(rest, chart_account, tmp_path_factory.mktemp("stack"), namespace)
    yield built
    stop_stack(built)


def served_partitions(stack: Stack, broker: int, topic: str) -> list[int]:
    """The partitions of ``topic`` whose log this broker has (offsets given only for those)."""
    described = stack.brokers.get(broker, f"/v1/topics/{topic}")
    return [p["partition"] for p in described["partitions"] if p["latest_offset"] is not None]


def placement(status: dict[str, Any]) -> dict[int, int]:
    return {p["partition"]: p["replicas"][0] for p in status["placement"]}


def brokers_placement(stack: Stack, broker: int, topic: str) -> dict[int, int] | None:
    for t in stack.brokers.cluster(broker)["topics"]:
        if t["name"] == topic:
            return {int(p): b for p, b in t["placement"].items()}
    return None


# -- Cluster -------------------------------------------------------------------------------


def test_a_cluster_becomes_its_objects_owned_by_it(stack: Stack) -> None:
    ns, rest = stack.namespace, stack.rest
    cluster = stack.body("clusters", CLUSTER)
    owner = {
        "apiVersion": "millstream.io/v1alpha1",
        "kind": "Cluster",
        "name": CLUSTER,
        "uid": cluster["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    owned = {
        "secret": object_path("v1", "secrets", ns, f"{CLUSTER}-admin-token"),
        "config": object_path("v1", "configmaps", ns, f"{CLUSTER}-config"),
        "headless": object_path("v1", "services", ns, f"{CLUSTER}-brokers"),
        "client": object_path("v1", "services", ns, CLUSTER),
        "brokers": object_path("apps/v1", "statefulsets", ns, CLUSTER),
        # 1.20 serves policy/v1beta1 only: found by discovery.
        "budget": object_path("policy/v1beta1", "poddisruptionbudgets", ns, CLUSTER),
    }
    objects = {key: rest.get(path) for key, path in owned.items()}
    for key, found in objects.items():
        assert found is not None, f"no {key}: {owned[key]}"
        assert found["metadata"]["ownerReferences"] == [owner], key

    token = base64.b64decode(objects["secret"]["data"]["token"]).decode()
    assert len(token) >= 32 and token == stack.brokers.token
    assert objects["headless"]["spec"]["clusterIP"] == "None"
    statefulset = objects["brokers"]["spec"]
    assert statefulset["replicas"] == BROKERS
    assert statefulset["serviceName"] == f"{CLUSTER}-brokers"
    [claims] = statefulset["volumeClaimTemplates"]
    assert claims["metadata"]["name"] == "data"
    assert claims["spec"]["resources"]["requests"]["storage"] == "1Gi"
    # The StatefulSet controller made a claim and a pod per broker from it.
    for broker in range(BROKERS):
        assert rest.get(object_path("v1", "persistentvolumeclaims", ns, f"data-{CLUSTER}-{broker}"))

    status = stack.settled("clusters", CLUSTER, 1)
    assert status["bootstrap"] == f"http://{CLUSTER}.{ns}.svc:9092"
    ready = eventually(
        lambda: (s := stack.status("clusters", CLUSTER)).get("readyBrokers") == BROKERS and s,
        "the Cluster to count its ready brokers",
    )
    assert condition(ready, "Ready")["status"] == "True"
    for broker in range(BROKERS):
        metadata = stack.brokers.cluster(broker)
        assert metadata["broker_id"] == broker
        assert [b["url"] for b in metadata["brokers"]] == stack.brokers.urls


# -- the internal Topic --------------------------------------------------------------------


def test_a_cluster_keeps_its_group_offsets_topic_placed_pushed_and_fixed(stack: Stack) -> None:
    cluster = stack.body("clusters", CLUSTER)
    topic = eventually(lambda: stack.rest.get(stack.path("topics", INTERNAL)), "the internal Topic")
    assert topic["metadata"]["labels"]["millstream.io/internal"] == "true"
    assert topic["metadata"]["ownerReferences"][0]["uid"] == cluster["metadata"]["uid"]
    assert topic["spec"]["topicName"] == GROUP_OFFSETS_TOPIC
    assert topic["spec"]["deletionPolicy"] == "Retain"
    assert topic["spec"]["config"]["retention.ms"] == -1  # the CRD took it as written

    status = stack.placed_internal_topic()
    placed = placement(status)
    assert sorted(placed) == list(range(GROUP_OFFSETS_PARTITIONS))
    assert sorted(placed.values()).count(0) == GROUP_OFFSETS_PARTITIONS // BROKERS  # spread
    for broker in range(BROKERS):
        listed = {t["name"]: t for t in stack.brokers.cluster(broker)["topics"]}
        assert listed[GROUP_OFFSETS_TOPIC]["partitions"] == GROUP_OFFSETS_PARTITIONS
        assert brokers_placement(stack, broker, GROUP_OFFSETS_TOPIC) == placed

    # Its partition count is fixed: a change is refused, and the brokers keep 16 partitions.
    stack.patch_spec("topics", INTERNAL, {"partitions": 32})
    refused = stack.settled("topics", INTERNAL, 2)
    unsupported = condition(refused, "NotSupported")
    assert unsupported is not None and unsupported["reason"] == "InternalPartitionsFixed", refused
    assert placement(refused) == placed
    assert brokers_placement(stack, 0, GROUP_OFFSETS_TOPIC) == placed
    stack.patch_spec("topics", INTERNAL, {"partitions": GROUP_OFFSETS_PARTITIONS})
    stack.placed_internal_topic(generation=3)
    # Nor can its retention: the brokers keep the fixed settings.
    stack.patch_spec("topics", INTERNAL, {"config": {"retention.ms": 60_000}})
    refused = stack.settled("topics", INTERNAL, 4)
    unsupported = condition(refused, "NotSupported")
    assert unsupported is not None and unsupported["reason"] == "InternalConfigFixed", refused
    held_config = stack.brokers.get(0, f"/v1/topics/{GROUP_OFFSETS_TOPIC}")["config"]
    assert held_config["retention.ms"] == -1 and held_config["flush.ms"] == 0
    stack.patch_spec("topics", INTERNAL, {"config": {"retention.ms": -1}})
    stack.placed_internal_topic(generation=5)

    # Deleted, it comes back (the Cluster's drift check), adopting the topic the brokers kept,
    # with its epoch: as a move leaves one (here a push that moves nothing sets it), so that
    # the next switch pushes one above it instead of a stale 1.
    held = {
        "partitions": GROUP_OFFSETS_PARTITIONS,
        "placement": {str(p): b for p, b in placed.items()},
        "config": topic["spec"]["config"],
        "topic_id": status["topicId"],
        "epoch": 3,
    }
    for broker in range(BROKERS):
        path = f"/v1/admin/topics/{GROUP_OFFSETS_TOPIC}"
        assert stack.brokers.admin(broker, "PUT", path, held) == 200
    stack.rest.delete(stack.path("topics", INTERNAL))

    def recreated() -> dict[str, Any] | None:
        found = stack.rest.get(stack.path("topics", INTERNAL))
        return found if found and found["metadata"]["uid"] != topic["metadata"]["uid"] else None

    eventually(recreated, "the internal Topic to be created again")
    again = stack.placed_internal_topic()
    assert (again["topicId"], placement(again)) == (status["topicId"], placed)
    assert again["epoch"] == 3
    for broker in range(BROKERS):
        assert brokers_placement(stack, broker, GROUP_OFFSETS_TOPIC) == placed


def test_a_user_topic_cannot_take_a_reserved_name(stack: Stack) -> None:
    stack.create_topic("sneaky", topicName="__mine", partitions=2)
    status = stack.settled("topics", "sneaky", 1)
    ready = condition(status, "Ready")
    assert ready is not None and ready["reason"] == "ReservedTopicName", status
    assert "reserved" in ready["message"]
    assert "placement" not in status
    for broker in range(BROKERS):
        assert brokers_placement(stack, broker, "__mine") is None


def test_a_topic_refused_from_an_old_event_keeps_the_placement_as_it_is_now(stack: Stack) -> None:
    # The handler's event was read before a rebalance switched the partitions: what it writes
    # comes from the Topic as read under the Cluster's lock, not from the event.
    stack.create_topic("switched", partitions=2)
    now = placement(stack.ready_topic("switched"))
    stale = stack.body("topics", "switched")
    stale["status"]["placement"] = [
        {"partition": p, "replicas": [(b + 1) % BROKERS]} for p, b in now.items()
    ]
    stale["spec"]["topicName"] = "__switched"  # refused, before anything else is read
    with stack.operator.paused():
        with pytest.raises(SpecError, match="reserved"):
            stack.operator.run_handler(reconcile_topic, stale)
        refused = stack.status("topics", "switched")
        ready = condition(refused, "Ready")
        assert ready is not None and ready["reason"] == "ReservedTopicName", refused
        assert placement(refused) == now
        stack.operator.run_handler(reconcile_topic, stack.body("topics", "switched"))
    assert placement(stack.ready_topic("switched")) == now
    for broker in range(BROKERS):
        assert brokers_placement(stack, broker, "switched") == now


# -- Topic ---------------------------------------------------------------------------------


def test_a_topic_is_placed_and_each_broker_serves_its_partitions(stack: Stack) -> None:
    created = stack.create_topic("orders", partitions=4, config={"retention.ms": 86_400_000})
    status = stack.ready_topic("orders")
    assert status["topicName"] == "orders"
    assert status["topicId"] == created["metadata"]["uid"]
    assert status["partitions"] == 4
    placed = placement(status)
    assert sorted(placed) == [0, 1, 2, 3]
    assert sorted(placed.values()) == [0, 0, 1, 1]  # balanced
    assert (
        stack.body("topics", "orders")["metadata"]["annotations"][PLACED_ON_ANNOTATION] == CLUSTER
    )

    for broker in range(BROKERS):
        assert brokers_placement(stack, broker, "orders") == placed
        mine = sorted(p for p, b in placed.items() if b == broker)
        assert served_partitions(stack, broker, "orders") == mine
        described = stack.brokers.get(broker, "/v1/topics/orders")
        assert described["config"]["retention.ms"] == 86_400_000
        assert described["topic_id"] == status["topicId"]

    # A broker asked for a partition it does not serve names the one that does.
    elsewhere = next(p for p, b in placed.items() if b == 1)
    with pytest.raises(urllib.error.HTTPError) as redirected:
        stack.brokers.get(0, f"/v1/topics/orders/partitions/{elsewhere}/records?offset=0")
    assert redirected.value.code == 421
    assert json.loads(redirected.value.read())["error"]["broker"]["id"] == 1

    # Through the Python client, which routes by the metadata the operator pushed.
    keys = [f"customer-{i}".encode() for i in range(40)]
    with SyncProducer(stack.brokers.urls[0]) as producer:
        sent = [producer.send("orders", b"value-" + key, key=key) for key in keys]
        written = {
            (m.partition, m.offset): key
            for key, m in zip(keys, (f.get() for f in sent), strict=True)
        }
    assert {p for p, _ in written} == {0, 1, 2, 3}
    with SyncConsumer(stack.brokers.urls[1], auto_offset_reset="earliest") as consumer:
        consumer.assign([("orders", p) for p in range(4)])
        read: dict[tuple[int, int], bytes] = {}
        deadline = time.monotonic() + 20
        while len(read) < len(keys) and time.monotonic() < deadline:
            for record in consumer.poll(timeout_ms=500):
                read[(record.partition, record.offset)] = record.key
    assert read == written


def test_growing_a_topic_places_only_the_new_partitions(stack: Stack) -> None:
    stack.create_topic("growing", partitions=3)
    before = placement(stack.ready_topic("growing"))

    stack.patch_spec("topics", "growing", {"partitions": 7})
    after = placement(stack.ready_topic("growing", generation=2))
    assert {p: after[p] for p in before} == before  # nothing placed moved
    assert sorted(after) == list(range(7))
    assert sorted(list(after.values()).count(b) for b in range(BROKERS)) == [3, 4]
    for broker in range(BROKERS):
        assert brokers_placement(stack, broker, "growing") == after

    # Partitions cannot shrink: reported, and nothing changes on the brokers.
    stack.patch_spec("topics", "growing", {"partitions": 5})
    status = stack.settled("topics", "growing", 3)
    unsupported = condition(status, "NotSupported")
    assert unsupported is not None and unsupported["reason"] == "PartitionDecrease", status
    assert condition(status, "Ready")["status"] == "False"
    assert placement(status) == after
    assert brokers_placement(stack, 0, "growing") == after


def test_replication_factor_above_one_is_not_supported(stack: Stack) -> None:
    stack.create_topic("replicated", partitions=2, replicationFactor=2)
    status = stack.settled("topics", "replicated", 1)
    unsupported = condition(status, "NotSupported")
    assert unsupported is not None and unsupported["status"] == "True", status
    assert unsupported["reason"] == "ReplicationNotSupported"
    assert condition(status, "Ready")["status"] == "False"
    # Served with one copy of each partition meanwhile.
    assert brokers_placement(stack, 0, "replicated") == placement(status)


def produce(stack: Stack, topic: str, count: int) -> None:
    with SyncProducer(stack.brokers.urls[0]) as producer:
        for future in [producer.send(topic, f"{i}".encode()) for i in range(count)]:
            future.get()


def records_held(stack: Stack, topic: str) -> int | None:
    """Records of ``topic`` over all brokers, None if no broker has it."""
    total, found = 0, False
    for broker in range(BROKERS):
        described = stack.brokers.get(broker, f"/v1/topics/{topic}")
        if described is None:
            continue
        found = True
        total += sum(p["latest_offset"] or 0 for p in described["partitions"])
    return total if found else None


def test_deleting_a_topic_with_policy_delete_deletes_its_data(stack: Stack) -> None:
    stack.create_topic("doomed", partitions=2, deletionPolicy="Delete")
    stack.ready_topic("doomed")
    assert stack.body("topics", "doomed")["metadata"]["finalizers"] == ["millstream.io/finalizer"]
    produce(stack, "doomed", 6)
    assert records_held(stack, "doomed") == 6

    stack.rest.delete(stack.path("topics", "doomed"))
    stack.gone(stack.path("topics", "doomed"), "the Topic to go")
    assert records_held(stack, "doomed") is None
    for broker in range(BROKERS):
        assert brokers_placement(stack, broker, "doomed") is None


def test_retained_topic_keeps_its_data_and_a_new_topic_adopts_it(stack: Stack) -> None:
    first = stack.create_topic("kept", partitions=3, deletionPolicy="Retain")
    status = stack.ready_topic("kept")
    produce(stack, "kept", 5)

    stack.rest.delete(stack.path("topics", "kept"))
    stack.gone(stack.path("topics", "kept"), "the Topic to go")
    assert records_held(stack, "kept") == 5
    assert brokers_placement(stack, 0, "kept") == placement(status)

    # A new Topic of the same name takes the topic over as the brokers hold it.
    second = stack.create_topic("kept", partitions=3)
    adopted = stack.ready_topic("kept")
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    assert adopted["topicId"] == status["topicId"]
    assert placement(adopted) == placement(status)
    assert records_held(stack, "kept") == 5


def test_a_topic_deleted_or_moved_behind_the_operators_back_is_restored(stack: Stack) -> None:
    stack.create_topic("drifting", partitions=2)
    status = stack.ready_topic("drifting")
    placed = placement(status)

    for broker in range(BROKERS):
        assert stack.brokers.admin(broker, "DELETE", "/v1/admin/topics/drifting") == 204
    for broker in range(BROKERS):
        eventually(
            lambda broker=broker: brokers_placement(stack, broker, "drifting") == placed,
            f"broker {broker} to hold the topic again",
        )

    swapped = {str(p): 1 - b for p, b in placed.items()}
    body = {"partitions": 2, "placement": swapped, "config": {}, "topic_id": status["topicId"]}
    for broker in range(BROKERS):
        assert stack.brokers.admin(broker, "PUT", "/v1/admin/topics/drifting", body) == 200
    for broker in range(BROKERS):
        eventually(
            lambda broker=broker: brokers_placement(stack, broker, "drifting") == placed,
            f"broker {broker} to serve the placed partitions again",
        )
        assert served_partitions(stack, broker, "drifting") == sorted(
            p for p, b in placed.items() if b == broker
        )


def test_a_broker_back_on_an_empty_volume_gets_its_metadata_again(stack: Stack) -> None:
    stack.create_topic("rebuilt", partitions=4)
    placed = placement(stack.ready_topic("rebuilt"))
    broker = stack.brokers.brokers[1]
    broker.kill()
    shutil.rmtree(broker.data_dir)  # a new, empty volume under the same pod name
    broker.start()  # standalone until the next drift check finds it
    eventually(
        lambda: brokers_placement(stack, 1, "rebuilt") == placed,
        "the drift check to push the cluster and its topics to the new broker",
    )
    assert stack.brokers.cluster(1)["brokers"] == stack.brokers.cluster(0)["brokers"]
    assert served_partitions(stack, 1, "rebuilt") == sorted(p for p, b in placed.items() if b == 1)


# -- ConsumerGroup -------------------------------------------------------------------------


def test_a_consumer_group_shows_members_and_lag_and_resets_once_members_leave(
    stack: Stack,
) -> None:
    stack.create_topic("payments", partitions=2)
    stack.ready_topic("payments")
    produce(stack, "payments", 10)
    stack.rest.apply_custom(
        "ConsumerGroup", "consumergroups", stack.namespace, "billing", {"cluster": CLUSTER}
    )
    empty = stack.settled("consumergroups", "billing", 1)
    assert (empty["state"], empty["members"], empty["lag"]) == ("Empty", 0, 0)

    # A member that stays in the group while the test stops polling to leave a lag.
    consumer = SyncConsumer(
        stack.brokers.urls[1],
        group_id="billing",
        auto_offset_reset="earliest",
        rebalance_timeout_ms=120_000,
    )
    try:
        consumer.subscribe(["payments"])
        seen = 0
        deadline = time.monotonic() + 20
        while seen < 10 and time.monotonic() < deadline:
            seen += len(consumer.poll(timeout_ms=500))
        assert seen == 10
        consumer.commit()  # the position after the 10 records
        produce(stack, "payments", 4)  # not consumed: the group's lag

        seen_status: list[dict[str, Any]] = [{}]

        def lagging() -> dict[str, Any] | None:
            seen_status[0] = s = stack.status("consumergroups", "billing")
            return s if (s.get("members"), s.get("lag")) == (1, 4) else None

        try:
            status = eventually(lagging, "the group's status to show its member and lag")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {seen_status[0]}") from None
        assert status["state"] == "Stable"
        assert status["topics"] == [{"topic": "payments", "lag": 4}]

        # A declared reset waits while a member is live.
        stack.patch_spec("consumergroups", "billing", {"offsetReset": {"to": "earliest"}})
        refused = stack.settled("consumergroups", "billing", 2)
        refusal = condition(refused, "OffsetResetApplied")
        assert refusal is not None and refusal["status"] == "False", refused
        assert refusal["reason"] == "GroupNotEmpty"
        assert "offsetReset" not in refused
    finally:
        consumer.close()  # leaves the group

    def reset() -> dict[str, Any] | None:
        s = stack.status("consumergroups", "billing")
        return s if (s.get("offsetReset") or {}).get("generation") == 2 else None

    applied = eventually(reset, "the reset to be applied once the member left")
    assert sorted((o["partition"], o["offset"]) for o in applied["offsetReset"]["offsets"]) == [
        (0, 0),
        (1, 0),
    ]
    assert condition(applied, "OffsetResetApplied")["status"] == "True"
    assert (applied["members"], applied["lag"]) == (0, 14)


# -- deleting a Cluster --------------------------------------------------------------------


def test_deleting_a_cluster_leaves_no_topic_holding_its_namespace(
    millstream_crds: list[dict[str, Any]],
    rest: KubeRest,
    chart_account: Path,
    tmp_path: Path,
) -> None:
    namespace = f"doomed-{uuid.uuid4().hex[:8]}"
    stack = start_stack(rest, chart_account, tmp_path, namespace)
    try:
        stack.create_topic("deleted-with-it", partitions=2, deletionPolicy="Delete")
        stack.create_topic("retained", partitions=2, deletionPolicy="Retain")
        stack.ready_topic("deleted-with-it")
        stack.ready_topic("retained")
        stack.placed_internal_topic()

        rest.delete(stack.path("clusters", CLUSTER))
        stack.gone(stack.path("clusters", CLUSTER), "the Cluster to go")
        # The garbage collector follows the owner references.
        statefulset = object_path("apps/v1", "statefulsets", namespace, CLUSTER)
        stack.gone(statefulset, "the StatefulSet to be collected")
        # The internal Topic too, whose deletion leaves the groups' offsets on the brokers.
        stack.gone(stack.path("topics", INTERNAL), "the internal Topic to be collected")
        assert brokers_placement(stack, 0, GROUP_OFFSETS_TOPIC) is not None
        secret = object_path("v1", "secrets", namespace, f"{CLUSTER}-admin-token")
        stack.gone(secret, "the admin Secret to be collected")
        # The Topics stay, and say their Cluster is gone once they are looked at again.
        stack.patch_spec("topics", "retained", {"partitions": 3})
        orphan = stack.settled("topics", "retained", 2)
        assert condition(orphan, "Ready")["reason"] == "ClusterNotFound"
        assert stack.body("topics", "deleted-with-it")["metadata"]["finalizers"]
    finally:
        # Their finalizers do not wait for a Cluster that is gone: the namespace empties.
        stop_stack(stack)


# -- the chart's command line --------------------------------------------------------------


@pytest.mark.parametrize("everywhere", [False, True])
def test_the_chart_runs_a_command_line_the_operator_takes(everywhere: bool) -> None:
    from millstream.cli.main import build_parser
    from millstream.operator.main import namespaces_of

    docs = helm().template({"operator": {"watchAnyNamespace": everywhere}})
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    args = build_parser().parse_args(container["args"])
    assert args.command == "operator"
    assert args.liveness == "http://0.0.0.0:8080/healthz"
    watch = namespaces_of(args.namespace, args.all_namespaces, None)
    assert watch.clusterwide is everywhere
    env = {e["name"] for e in container["env"]}
    assert {"MILLSTREAM_BROKER_IMAGE", "MILLSTREAM_OPERATOR_NAMESPACE"} <= env
